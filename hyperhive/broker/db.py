"""`hive.db`: sqlite in WAL mode with versioned migrations (`PRAGMA user_version`).

Rows are read by column name (sqlite3.Row), never by position, so a column added by a
later migration never breaks reading rows written before it.
"""

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hyperhive.home import Home

# Migration N (1-based) takes the schema from user_version N-1 to N. Append only.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            sender TEXT NOT NULL,
            recipient TEXT NOT NULL,
            body TEXT NOT NULL,
            created_at REAL NOT NULL,
            delivered_at REAL
        )""",
        "CREATE INDEX messages_inbox ON messages (recipient, delivered_at, id)",
    ],
    [
        """CREATE TABLE questions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            asker TEXT NOT NULL,
            question TEXT NOT NULL,
            options TEXT,
            asked_at REAL NOT NULL,
            answer TEXT,
            answered_at REAL,
            answered_by TEXT
        )""",
        "CREATE INDEX questions_pending ON questions (answered_at, id)",
    ],
    [
        # Telemetry (broker/stats.py); agent '' holds the hive-wide series.
        """CREATE TABLE stats (
            agent TEXT NOT NULL,
            ts REAL NOT NULL,
            key TEXT NOT NULL,
            value REAL NOT NULL
        )""",
        "CREATE INDEX stats_series ON stats (agent, key, ts)",
        "CREATE INDEX stats_agent_time ON stats (agent, ts)",
    ],
    [
        # Telemetry roll-up (broker/stats.py): a row is a bucket of `span` seconds (0 = one
        # raw sample) holding n samples, their sum in `value`, their min/max (NULL = value).
        "ALTER TABLE stats ADD COLUMN span INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE stats ADD COLUMN n INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE stats ADD COLUMN lo REAL",
        "ALTER TABLE stats ADD COLUMN hi REAL",
        "CREATE INDEX stats_level ON stats (span, ts)",
        # Reads go by (agent, key, ts), an agent's keys found by skipping through it.
        "DROP INDEX stats_agent_time",
        # Stuck-agent episodes (daemon/sampler.py): one row while an agent is stuck.
        """CREATE TABLE stuck (
            agent TEXT PRIMARY KEY,
            since REAL NOT NULL,
            inbox INTEGER NOT NULL,
            last_turn REAL
        )""",
    ],
    [
        # Agents' tokens for the git remote (hyperhive/tokens.py): only a SHA-256 digest.
        """CREATE TABLE tokens (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            agent TEXT NOT NULL,
            digest TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL,
            created_by TEXT NOT NULL,
            revoked_at REAL,
            revoked_by TEXT
        )""",
    ],
    [
        # A harness's recv leases what it takes (broker/messages.py): 1 until the harness
        # acknowledges it; `release` (at the harness's start) hands it back unacknowledged.
        "ALTER TABLE messages ADD COLUMN leased INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX messages_leased ON messages (recipient, id) WHERE leased = 1",
    ],
    [
        # Forge sessions (hyperhive/sessions.py): only a SHA-256 digest of the cookie's id.
        """CREATE TABLE sessions (
            digest TEXT PRIMARY KEY,
            account TEXT NOT NULL,
            created_at REAL NOT NULL,
            seen_at REAL NOT NULL
        )""",
        "CREATE INDEX sessions_account ON sessions (account, created_at)",
    ],
    [
        # Dead letters (broker/messages.py): a message the harness gave up on after its
        # failed turns keeps its row, marked dead with why, until a requeue.
        "ALTER TABLE messages ADD COLUMN dead_at REAL",
        "ALTER TABLE messages ADD COLUMN dead_reason TEXT",
        "CREATE INDEX messages_dead ON messages (recipient, id) WHERE dead_at IS NOT NULL",
        # What is wrong with each agent now (broker/health.py): one row per kind of
        # problem (a failed turn, a harness that cannot start or keeps crashing, a claude
        # that cannot be found), deleted when it is over.
        """CREATE TABLE health (
            agent TEXT NOT NULL,
            kind TEXT NOT NULL,
            error TEXT NOT NULL,
            at REAL NOT NULL,
            count INTEGER NOT NULL DEFAULT 1,
            revision TEXT,
            PRIMARY KEY (agent, kind)
        )""",
    ],
    [
        # Files an operator marked viewed on a diff page (hyperhive/viewed.py), by the
        # blob ids of the file's two sides: a file that changes has new ids, no mark.
        """CREATE TABLE viewed (
            account TEXT NOT NULL,
            path TEXT NOT NULL,
            sides TEXT NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (account, path, sides)
        )""",
        "CREATE INDEX viewed_at ON viewed (account, at)",
    ],
]


def db_path(home: Home) -> Path:
    return home.root / "hive.db"


def fits(n: int) -> bool:
    """Whether sqlite can hold `n` (64-bit integers): a larger id given by a user names no
    row, and must not reach a query, which would raise OverflowError."""
    return -(2**63) <= n < 2**63


def connect(home: Home, any_thread: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit `BEGIN IMMEDIATE`).
    `any_thread`: it may be used from one thread after another (never two at once).

    `synchronous = FULL`, said rather than left to how sqlite was built: in WAL mode each
    commit then fsyncs the WAL before it returns, so what the daemon acknowledged (a sent
    message, a delivery) survives a power cut, not only a crash of the daemon. NORMAL
    would be ten times faster per commit and may lose the last commits to a power cut; the
    broker earns its speed back by committing concurrent sends together (broker/group.py)."""
    conn = sqlite3.connect(
        db_path(home), timeout=30, isolation_level=None, check_same_thread=not any_thread
    )
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


class Pool:
    """Open connections to `hive.db`, each lent to one thread at a time and kept for the
    next. Opening a connection per operation cost more than the operation: the open reads
    the schema, and closing the last connection checkpoints the WAL and deletes it, so the
    next write starts a new one. At most `keep` idle connections stay open.

    `write()` is a write transaction that also holds the pool's own lock: this process's
    writers queue on it, not on sqlite's busy handler, which polls with sleeps of 1 to 100
    ms (what made a wake-up's tail when sends and recvs of many agents met)."""

    def __init__(self, home: Home, keep: int = 8):
        self.home = home
        self.keep = keep
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._writing = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = connect(self.home, any_thread=True)
        try:
            yield conn
        except sqlite3.Error:
            conn.close()  # it may be broken (an I/O error): the next user gets a new one
            raise
        except BaseException:
            self._give_back(conn)
            raise
        self._give_back(conn)

    @contextmanager
    def write(self, begin: bool = True, synced: bool = True) -> Iterator[sqlite3.Connection]:
        """A connection inside `BEGIN IMMEDIATE`, committed when the block ends (rolled
        back if it raises), one such block in this process at a time (not reentrant: a
        block must not open another). `begin=False`: the block runs one statement, its own
        transaction (two round trips fewer).

        `synced=False` commits with `synchronous = NORMAL`: not fsynced now, but by the next
        FULL commit of anyone (the WAL is one file, synced whole) or the next checkpoint. A
        crash of the process loses nothing either way; only a power cut can take such a
        commit back, so it is for what may be done again safely, never for what a caller
        is told is stored."""
        with self._writing, self.connection() as conn:
            if not synced:
                conn.execute("PRAGMA synchronous = NORMAL")
            try:
                if begin:
                    conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    if begin:
                        conn.execute("ROLLBACK")
                    raise
                if begin:
                    conn.execute("COMMIT")
            finally:
                if not synced:
                    conn.execute("PRAGMA synchronous = FULL")

    def _give_back(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:  # a caller that raised out of its own BEGIN
            conn.execute("ROLLBACK")
        with self._lock:
            if len(self._idle) < self.keep:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


_migrated: set[Path] = set()
_migrating = threading.Lock()


def connect_migrated(home: Home) -> sqlite3.Connection:
    """A connection to an initialized hive's hive.db, its schema brought up to date once
    per process (for the short-lived readers outside the broker: tokens, sessions)."""
    home.require()
    with _migrating:
        if home.root not in _migrated:
            migrate(home)
            _migrated.add(home.root)
    return connect(home)


def migrate(home: Home, migrations: list[list[str]] | None = None) -> int:
    """Bring the schema up to date, one migration per transaction; the new version."""
    steps = MIGRATIONS if migrations is None else migrations
    conn = connect(home)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, statements in enumerate(steps[version:], start=version + 1):
                for sql in statements:
                    conn.execute(sql)
                conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return max(version, len(steps))
    finally:
        conn.close()

"""Messages between agents, the manager and the operator.

`recv` marks what it returns delivered in the same transaction, so a message is handed out
exactly once, across restarts too. A send is acknowledged only once its row is fsynced
(`synchronous = FULL`; sends that meet share one commit, broker/group.py); a delivery mark
is committed but synced with the next send, so a power cut (not a crash) can at worst hand
the last deliveries out again: at least once then, never lost.

A long-polling `recv` waits on its recipient's own condition, which a `send` to that
recipient in this process notifies (other processes poke the daemon's `wake` op, which
wakes every reader): it returns within milliseconds of a message, never by polling, and a
send wakes no reader but its recipient's.

The harness's `recv` also *leases* what it takes: the message stays the harness's until it
`ack`s it (after writing it to its inflight file), and `release` hands every unacknowledged
one back to the inbox. A harness killed between the reply and its own record of it thus
gets the messages again when it starts, instead of their being delivered to nobody.

A message whose turns kept failing is not dropped: the harness `give_up`s it, which marks
it dead (`dead_at`, `dead_reason`) and out of every inbox; `dead` lists them and
`requeue_dead` hands one back to its recipient's inbox as it was (its id, so its place).
"""

import json
import threading
import time
from collections.abc import Callable, Iterable

from hyperhive.broker.db import Pool, fits, migrate
from hyperhive.broker.group import GroupCommit
from hyperhive.errors import (
    BadInput,
    HiveError,
    PolicyRefused,
    UnknownAgent,
    UnknownMessage,
)
from hyperhive.home import Home
from hyperhive.names import MANAGER, OPERATOR, SYSTEM  # SYSTEM: crash and stuck notices
from hyperhive.wire.ops import MAX_WAIT

MAX_BODY = 64 * 1024
MAX_BATCH = 100  # messages per recv
# A recv's messages as JSON (escaped: up to 6 bytes per body byte) stay under this, so
# the reply fits the sockets' 1 MiB line (wire/protocol.MAX_LINE); one message always fits.
MAX_BATCH_BYTES = 512 * 1024
MAX_REASON = 500  # characters of a dead letter's reason
DEAD_PAGE = 50  # dead letters listed at a time by default
MAX_DEAD_PAGE = 500


def check_wait(wait_seconds: object) -> float:
    """None or 0: look now. A positive number: wait up to it, at most 180 s."""
    if wait_seconds is None:
        return 0.0
    if isinstance(wait_seconds, bool) or not isinstance(wait_seconds, int | float):
        raise BadInput(f"wait_seconds must be a number of seconds, not {wait_seconds!r}")
    if wait_seconds != wait_seconds or wait_seconds < 0:  # NaN or negative
        raise BadInput(f"wait_seconds must be 0 or more, not {wait_seconds!r}")
    return min(float(wait_seconds), MAX_WAIT)


def one_line(text: object, limit: int = MAX_REASON) -> str:
    """`text` as one line of at most `limit` characters (whitespace runs become one
    space, a cut ends in an ellipsis): what a table cell or a log line can show."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def row_to_message(row) -> dict:
    return {
        "id": row["id"],
        "from": row["sender"],
        "to": row["recipient"],
        "body": row["body"],
        "time": row["created_at"],
    }


def row_to_dead(row) -> dict:
    return {**row_to_message(row), "dead_at": row["dead_at"], "reason": row["dead_reason"]}


def check_ids(op: str, message_ids: object) -> list[int]:
    """A list of at most MAX_BATCH message ids (one recv's), or BadInput."""
    if not isinstance(message_ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and fits(i) for i in message_ids
    ):
        raise BadInput(f"{op} needs a list of message ids, not {message_ids!r}")
    if len(message_ids) > MAX_BATCH:
        raise BadInput(f"{op} takes at most {MAX_BATCH} ids (one recv's)")
    return message_ids


def check_page(limit: object, before: object) -> tuple[int, int | None]:
    """A page of a listing: at most `limit` (1 to MAX_DEAD_PAGE) rows with ids below
    `before` (None: from the newest)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_DEAD_PAGE:
        raise BadInput(f"limit must be 1 to {MAX_DEAD_PAGE}, not {limit!r}")
    if before is not None and (
        isinstance(before, bool) or not isinstance(before, int) or not 0 < before < 2**63
    ):
        raise BadInput(f"before must be a positive message id, not {before!r}")
    return limit, before


def _fitting(messages: list[dict]) -> list[dict]:
    """The first of `messages` whose JSON stays within MAX_BATCH_BYTES (the first always)."""
    size = 0
    for i, m in enumerate(messages):
        size += len(json.dumps(m))
        if i and size > MAX_BATCH_BYTES:
            return messages[:i]
    return messages


class Broker:
    def __init__(self, home: Home, policy_of: Callable[[str], dict] | None = None):
        """`policy_of(name)` gives an agent's deployed policy (`allowedRecipients`)."""
        self.home = home
        self.policy_of = policy_of or (lambda name: {})
        migrate(home)
        self.db = Pool(home)
        # Sends at the same moment share a commit (one fsync): broker/group.py.
        self._sends = GroupCommit(
            self.db,
            "INSERT INTO messages (sender, recipient, body, created_at) VALUES (?, ?, ?, ?)",
        )
        # One lock; a condition per recipient over it, and a counter per recipient that
        # each write to that inbox bumps (`_everyone` for a write to any inbox).
        self._lock = threading.Lock()
        self._inboxes: dict[str, threading.Condition] = {}
        self._writes: dict[str, int] = {}
        self._everyone = 0
        self._closing = False

    # -- waking ------------------------------------------------------------------------

    def _inbox(self, name: str) -> threading.Condition:
        """`name`'s condition (the lock is held)."""
        if (inbox := self._inboxes.get(name)) is None:
            inbox = self._inboxes[name] = threading.Condition(self._lock)
        return inbox

    def _seen(self, name: str) -> tuple[int, int]:
        """What a reader of `name` has seen written (the lock is held)."""
        return self._everyone, self._writes.get(name, 0)

    def wake(self, names: Iterable[str] | None = None) -> None:
        """`names`' inboxes were written: wake their waiting recvs. None: any inbox may
        have been (another process wrote to hive.db), so wake every waiting recv."""
        with self._lock:
            if names is None:
                self._everyone += 1
                woken = list(self._inboxes.values())
            else:
                woken = []
                for name in names:
                    self._writes[name] = self._writes.get(name, 0) + 1
                    woken.append(self._inbox(name))
            for inbox in woken:
                inbox.notify_all()

    def close(self) -> None:
        """The daemon is stopping: every waiting recv returns now, and none takes more."""
        with self._lock:
            self._closing = True
        self.wake()

    # -- sending -----------------------------------------------------------------------

    def check_send(self, sender: str, to: object, body: object) -> None:
        if not isinstance(to, str) or not to:
            raise BadInput("send needs a recipient name in `to`")
        if not isinstance(body, str) or not body.strip():
            raise BadInput("send needs a non-empty text `body`")
        if len(body.encode()) > MAX_BODY:
            raise BadInput(f"a message body is at most {MAX_BODY} bytes")
        if to != OPERATOR and not self.home.is_agent(to):
            raise UnknownAgent(f"unknown recipient {to!r}: `list_peers` shows who can be reached")
        if sender in (MANAGER, OPERATOR, SYSTEM):
            return  # the manager, the operator and the hive may always send anywhere
        allowed = self.policy_of(sender).get("allowedRecipients")
        if allowed is not None and to not in allowed:
            raise PolicyRefused(
                f"{sender}'s policy does not allow sending to {to!r}: "
                f"hyperhive.allowedRecipients = {json.dumps(allowed)}"
            )

    def send(self, sender: str, to: str, body: str) -> int:
        (result,) = self.send_many(sender, [(to, body)])
        if isinstance(result, BaseException):
            raise result
        return result

    def send_many(self, sender: str, messages: list[tuple[object, object]]) -> list:
        """`messages` (to, body) sent in order by `sender` (a connection's pipelined sends):
        the ones that pass the checks share commits (one fsync for up to MAX_GROUP), and
        each result is its id, or the error that refused it (nothing of it stored)."""
        results: list = [None] * len(messages)
        rows, places = [], []
        now = time.time()
        for i, (to, body) in enumerate(messages):
            try:
                self.check_send(sender, to, body)
            except HiveError as e:
                results[i] = e
            else:
                rows.append((sender, to, body, now))
                places.append(i)
        stored = set()
        for i, row, result in zip(places, rows, self._sends.insert_many(rows), strict=True):
            results[i] = result
            if not isinstance(result, BaseException):
                stored.add(row[1])
        if stored:
            self.wake(sorted(stored))
        return results

    # -- receiving ---------------------------------------------------------------------

    def _take(self, name: str, lease: bool) -> list[dict]:
        with self.db.connection() as conn:  # a look first: an empty inbox takes no write lock
            if not conn.execute(
                "SELECT 1 FROM messages WHERE recipient = ? AND delivered_at IS NULL LIMIT 1",
                (name,),
            ).fetchone():
                return []
        # Not fsynced now (the next send's commit syncs it): a power cut could at worst
        # hand these out again, never lose one, and a woken recv waits for one fsync less.
        with self.db.write(synced=False) as conn:
            rows = conn.execute(
                "SELECT * FROM messages WHERE recipient = ? AND delivered_at IS NULL "
                "ORDER BY id LIMIT ?",
                (name, MAX_BATCH),
            ).fetchall()
            messages = _fitting([row_to_message(r) for r in rows])
            if messages:
                conn.execute(
                    f"UPDATE messages SET delivered_at = ?, leased = ? WHERE id IN "
                    f"({','.join('?' * len(messages))})",
                    (time.time(), int(lease), *(m["id"] for m in messages)),
                )
        return messages

    def recv(self, name: str, wait_seconds: object = None, lease: bool = False) -> list[dict]:
        """Take `name`'s oldest undelivered messages, waiting up to `wait_seconds` for one.
        `lease`: they also stay leased until `ack`ed (the harness's recv)."""
        wait = check_wait(wait_seconds)
        deadline = time.monotonic() + wait
        while True:
            with self._lock:
                seen = self._seen(name)
                if self._closing:
                    return []
            if messages := self._take(name, lease):
                return messages
            with self._lock:
                inbox = self._inbox(name)
                # Sleep only if nothing was written to this inbox since we looked.
                while self._seen(name) == seen:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return []
                    inbox.wait(left)

    def requeue(self, message_ids: list[int]) -> None:
        """Hand messages back to their inbox (their reply never reached the reader)."""
        if not message_ids:
            return
        marks = ",".join("?" * len(message_ids))
        with self.db.write() as conn:
            conn.execute(
                f"UPDATE messages SET delivered_at = NULL, leased = 0 WHERE id IN ({marks})",
                message_ids,
            )
            names = conn.execute(
                f"SELECT DISTINCT recipient FROM messages WHERE id IN ({marks})", message_ids
            ).fetchall()
        self.wake(r["recipient"] for r in names)

    @staticmethod
    def _require_mine(conn, name: str, message_ids: list[int]) -> None:
        """Refuse ids that are not messages to `name` (a recipient never changes: the
        check cannot go stale before the caller's update)."""
        marks = ",".join("?" * len(message_ids))
        mine = conn.execute(
            f"SELECT id FROM messages WHERE recipient = ? AND id IN ({marks})",
            (name, *message_ids),
        )
        if foreign := sorted(set(message_ids) - {r["id"] for r in mine}):
            raise BadInput(f"not messages to {name}: {', '.join(f'#{i}' for i in foreign)}")

    def ack(self, name: str, message_ids: object) -> int:
        """End the leases of `name`'s messages `message_ids`; how many were still leased.
        Acknowledging twice is harmless (a retried ack whose reply was lost); an id that is
        not a message to `name` is refused, and then nothing is acknowledged."""
        message_ids = check_ids("ack", message_ids)
        if not message_ids:
            return 0
        with self.db.write() as conn:
            self._require_mine(conn, name, message_ids)
            return conn.execute(
                f"UPDATE messages SET leased = 0 WHERE leased = 1 AND id IN "
                f"({','.join('?' * len(message_ids))})",
                message_ids,
            ).rowcount

    # -- dead letters --------------------------------------------------------------------

    def give_up(self, name: str, message_ids: object, reason: object) -> int:
        """Mark `name`'s messages `message_ids` dead (its harness gave up on them), with
        `reason` in one line: out of the inbox, kept, listed by `dead`. How many were not
        dead yet (a retried call marks nothing twice). An id that is not a message to
        `name` is refused, and then nothing is marked."""
        message_ids = check_ids("give_up", message_ids)
        if not isinstance(reason, str) or not reason.strip():
            raise BadInput("give_up needs a non-empty text `reason`")
        if not message_ids:
            return 0
        with self.db.write() as conn:
            self._require_mine(conn, name, message_ids)
            now = time.time()
            return conn.execute(
                f"UPDATE messages SET dead_at = ?, dead_reason = ?, leased = 0, "
                f"delivered_at = coalesce(delivered_at, ?) "
                f"WHERE dead_at IS NULL AND id IN ({','.join('?' * len(message_ids))})",
                (now, one_line(reason), now, *message_ids),
            ).rowcount

    def dead(self, name: str, limit: object = DEAD_PAGE, before: object = None) -> dict:
        """A page of `name`'s dead letters, newest first: `{"messages": at most `limit`,
        with ids below `before` when given; "next": the `before` of the next page, None
        on the last}`."""
        limit, before = check_page(limit, before)
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT * FROM messages WHERE recipient = ? AND dead_at IS NOT NULL "
                "AND id < ? ORDER BY id DESC LIMIT ?",
                (name, 2**63 - 1 if before is None else before, limit + 1),
            ).fetchall()
        page = [row_to_dead(r) for r in rows[:limit]]
        return {"messages": page, "next": page[-1]["id"] if len(rows) > limit else None}

    def dead_counts(self) -> dict[str, int]:
        """Dead letters per recipient that has any."""
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT recipient, count(*) AS n FROM messages INDEXED BY messages_dead "
                "WHERE dead_at IS NOT NULL GROUP BY recipient"
            ).fetchall()
        return {r["recipient"]: r["n"] for r in rows}

    def dead_latest(self, limit: int = DEAD_PAGE) -> list[dict]:
        """The newest dead letters of every recipient, newest first."""
        limit, _ = check_page(limit, None)
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT * FROM messages INDEXED BY messages_dead WHERE dead_at IS NOT NULL "
                "ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [row_to_dead(r) for r in rows]

    def requeue_dead(self, name: str, message_id: object) -> dict:
        """Hand dead letter `message_id` back to `name`'s inbox as it was (its id keeps
        its place: it comes before what arrived since). The message; UnknownMessage when
        `name` has no dead letter of that id."""
        if isinstance(message_id, bool) or not isinstance(message_id, int):
            raise BadInput(f"a message id is a number, not {message_id!r}")
        with self.db.write(begin=False) as conn:
            # one statement: the dead letter is `name`'s, and alive again, or nothing
            # (fetchall: the statement, and so its write, ends before the connection goes back)
            rows = (
                conn.execute(
                    "UPDATE messages SET delivered_at = NULL, leased = 0, dead_at = NULL, "
                    "dead_reason = NULL WHERE id = ? AND recipient = ? AND dead_at IS NOT NULL "
                    "RETURNING *",
                    (message_id, name),
                ).fetchall()
                if fits(message_id)
                else []
            )
        if not rows:
            raise UnknownMessage(
                f"{name} has no dead letter #{message_id}: "
                f"`hyperhive inbox {name} --dead` lists them"
            )
        self.wake([name])
        return row_to_message(rows[0])

    def release(self, name: str) -> int:
        """Hand every message leased to `name` and not acknowledged back to its inbox, in
        one statement; they keep their ids, so each sender's order holds. How many."""
        with self.db.write(begin=False) as conn:
            released = conn.execute(
                "UPDATE messages SET delivered_at = NULL, leased = 0 "
                "WHERE recipient = ? AND leased = 1",
                (name,),
            ).rowcount
        if released:
            self.wake([name])
        return released

    def waiting(self, names: list[str]) -> dict[str, tuple[int, float | None]]:
        """Per recipient: how many messages wait, and when the oldest came. A message a
        harness leased and never acknowledged (it died holding it) still waits: its
        restart hands it back."""
        with self.db.connection() as conn:
            return {
                name: tuple(  # two index searches each, however long the history
                    conn.execute(
                        "SELECT count(*), min(created_at) FROM ("
                        " SELECT created_at FROM messages"
                        "  WHERE recipient = ? AND delivered_at IS NULL"
                        " UNION ALL SELECT created_at FROM messages"
                        "  WHERE recipient = ? AND leased = 1)",
                        (name, name),
                    ).fetchone()
                )
                for name in names
            }

    def inbox(self, name: str, limit: int = 100) -> list[dict]:
        """Undelivered messages for `name`, oldest first, without taking them."""
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT * FROM messages WHERE recipient = ? AND delivered_at IS NULL "
                "ORDER BY id LIMIT ?",
                (name, limit),
            ).fetchall()
        return [row_to_message(r) for r in rows]

    def recent_to(self, name: str, limit: int = 20) -> list[dict]:
        """The latest messages to `name`, delivered or not, newest first."""
        with self.db.connection() as conn:
            rows = conn.execute(
                "SELECT * FROM messages WHERE recipient = ? ORDER BY id DESC LIMIT ?",
                (name, limit),
            ).fetchall()
        return [row_to_message(r) for r in rows]

"""Forge sessions, held server-side in `hive.db` (table `sessions`) so they can end: the
signed cookie carries only a random session id, and a request is the operator's only
while its row exists, is younger than the absolute lifetime and was used within the idle
timeout (`[forge] session_hours`, `idle_minutes`).

Rows hold the id's SHA-256 digest (as agent tokens do): a copy of hive.db opens no
session. Logout deletes the row; a password change, a token rotation or an account's
removal deletes all of that account's (hyperhive.operator); `hyperhive operator
logout-all` deletes every one. The CLI and the daemon are separate processes: the daemon
reads the row at every request, so the CLI's changes hold at the next request.
"""

import hashlib
import secrets
import time
from dataclasses import dataclass

from hyperhive.broker.db import connect_migrated as _db
from hyperhive.home import Home
from hyperhive.settings import Forge

MAX_PER_ACCOUNT = 64  # an account's oldest sessions end beyond this many
TOUCH_SECONDS = 30.0  # `seen_at` is written at most this often per session


@dataclass(frozen=True)
class Lifetime:
    absolute: float  # seconds from the login
    idle: float  # seconds from the last request

    @classmethod
    def of(cls, forge: Forge) -> "Lifetime":
        return cls(absolute=forge.session_hours * 3600.0, idle=forge.idle_minutes * 60.0)


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode(errors="surrogatepass")).hexdigest()


def _expired(lifetime: Lifetime, now: float) -> tuple[str, tuple[float, float]]:
    return "created_at <= ? OR seen_at <= ?", (now - lifetime.absolute, now - lifetime.idle)


def start(home: Home, account: str, lifetime: Lifetime, now: float | None = None) -> str:
    """A new session for `account`: its id, for the cookie. Expired rows go on the way,
    and the account's oldest beyond MAX_PER_ACCOUNT, so the table stays small."""
    now = time.time() if now is None else now
    session_id = secrets.token_urlsafe(32)
    where, args = _expired(lifetime, now)
    conn = _db(home)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(f"DELETE FROM sessions WHERE {where}", args)
        conn.execute(
            "INSERT INTO sessions (digest, account, created_at, seen_at) VALUES (?, ?, ?, ?)",
            (_digest(session_id), account, now, now),
        )
        conn.execute(
            "DELETE FROM sessions WHERE account = ? AND digest NOT IN (SELECT digest FROM"
            " sessions WHERE account = ? ORDER BY created_at DESC LIMIT ?)",
            (account, account, MAX_PER_ACCOUNT),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return session_id


def check(home: Home, session_id: str, lifetime: Lifetime, now: float | None = None) -> str | None:
    """The account whose live session this is, or None (ended, expired or unknown). A live
    one's idle clock restarts (written at most every TOUCH_SECONDS); an expired one goes."""
    if not session_id:
        return None
    now = time.time() if now is None else now
    digest = _digest(session_id)
    conn = _db(home)
    try:
        row = conn.execute(
            "SELECT account, created_at, seen_at FROM sessions WHERE digest = ?", (digest,)
        ).fetchone()
        if row is None:
            return None
        if row["created_at"] <= now - lifetime.absolute or row["seen_at"] <= now - lifetime.idle:
            conn.execute("DELETE FROM sessions WHERE digest = ?", (digest,))
            return None
        if now - row["seen_at"] >= min(TOUCH_SECONDS, lifetime.idle / 4):
            conn.execute("UPDATE sessions SET seen_at = ? WHERE digest = ?", (now, digest))
        return row["account"]
    finally:
        conn.close()


def end(home: Home, session_id: str) -> bool:
    """End one session (a logout); whether it was live."""
    conn = _db(home)
    try:
        cur = conn.execute("DELETE FROM sessions WHERE digest = ?", (_digest(session_id),))
        return cur.rowcount > 0
    finally:
        conn.close()


def end_account(home: Home, account: str) -> int:
    """End every session of `account`; how many there were."""
    conn = _db(home)
    try:
        return conn.execute("DELETE FROM sessions WHERE account = ?", (account,)).rowcount
    finally:
        conn.close()


def end_all(home: Home) -> int:
    """End every session of every account; how many there were."""
    conn = _db(home)
    try:
        return conn.execute("DELETE FROM sessions").rowcount
    finally:
        conn.close()


def live(home: Home, lifetime: Lifetime, now: float | None = None) -> dict[str, int]:
    """How many live sessions each account has."""
    now = time.time() if now is None else now
    where, args = _expired(lifetime, now)
    conn = _db(home)
    try:
        rows = conn.execute(
            f"SELECT account, count(*) AS n FROM sessions WHERE NOT ({where}) GROUP BY account",
            args,
        ).fetchall()
    finally:
        conn.close()
    return {row["account"]: row["n"] for row in rows}

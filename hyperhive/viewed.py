"""Viewed-file marks of the diff pages: which files an operator account has marked as
read, kept in `hive.db` (table `viewed`).

A mark is keyed by the account, the file's path and the blob ids of its two sides
(`sides()`), never by approval or commit: the same change to a file shows as viewed
wherever it appears again (a follow-up proposal that left it alone), and a file that
changed has new blob ids, so its mark is gone without any bookkeeping (GitHub resets its
marks the same way). hive.db rather than git: a mark is one reader's progress, not part
of the audit; rather than the browser's storage: it follows the operator to another
browser. At most MAX_PER_ACCOUNT marks are kept per account, the oldest go first.
"""

import time
from collections.abc import Iterable

from hyperhive.broker.db import connect_migrated as _db
from hyperhive.errors import BadInput
from hyperhive.home import Home

MAX_PER_ACCOUNT = 10_000
MAX_PATH = 4096


def sides(old_sha: str | None, new_sha: str | None) -> str:
    """The key of a file's content change: its two blob ids ('-' for a missing side)."""
    return f"{old_sha or '-'}..{new_sha or '-'}"


def _check(path: str, key: str) -> None:
    if not path or len(path) > MAX_PATH:
        raise BadInput(f"a viewed mark needs a path of 1 to {MAX_PATH} characters")
    old, sep, new = key.partition("..")
    for side in (old, new):
        if not sep or not (
            side == "-" or (len(side) == 40 and all(c in "0123456789abcdef" for c in side))
        ):
            raise BadInput(f"bad sides {key!r}: OLD..NEW, each a blob id or '-'")


def mark(home: Home, account: str, path: str, key: str, on: bool = True) -> None:
    """Mark (or unmark) `path` with the sides `key` viewed by `account`."""
    _check(path, key)
    conn = _db(home)
    try:
        conn.execute("BEGIN IMMEDIATE")
        if on:
            conn.execute(
                "INSERT OR REPLACE INTO viewed (account, path, sides, at) VALUES (?, ?, ?, ?)",
                (account, path, key, time.time()),
            )
            conn.execute(
                "DELETE FROM viewed WHERE account = ? AND rowid NOT IN (SELECT rowid FROM"
                " viewed WHERE account = ? ORDER BY at DESC LIMIT ?)",
                (account, account, MAX_PER_ACCOUNT),
            )
        else:
            conn.execute(
                "DELETE FROM viewed WHERE account = ? AND path = ? AND sides = ?",
                (account, path, key),
            )
        conn.execute("COMMIT")
    finally:
        conn.close()


def marked(home: Home, account: str, files: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of `files` ((path, sides) pairs) `account` marked viewed."""
    wanted = set(files)
    if not wanted:
        return set()
    conn = _db(home)
    try:
        paths = sorted({p for p, _ in wanted})
        found: set[tuple[str, str]] = set()
        for k in range(0, len(paths), 500):  # sqlite's limit on bound parameters
            chunk = paths[k : k + 500]
            rows = conn.execute(
                f"SELECT path, sides FROM viewed WHERE account = ? AND path IN"
                f" ({','.join('?' * len(chunk))})",
                (account, *chunk),
            )
            found |= {(r["path"], r["sides"]) for r in rows}
        return found & wanted
    finally:
        conn.close()

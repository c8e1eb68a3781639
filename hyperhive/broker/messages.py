"""Messages between agents, the manager and the operator.

`recv` marks what it returns delivered in the same transaction, so a message is handed out
exactly once, across restarts too. A long-polling `recv` waits on its recipient's own
condition, which a `send` to that recipient in this process notifies (other processes
poke the daemon's `wake` op, which wakes every reader): it returns within milliseconds of
a message, never by polling, and a send wakes no reader but its recipient's.

The harness's `recv` also *leases* what it takes: the message stays the harness's until it
`ack`s it (after writing it to its inflight file), and `release` hands every unacknowledged
one back to the inbox. A harness killed between the reply and its own record of it thus
gets the messages again when it starts, instead of their being delivered to nobody.
"""

import json
import threading
import time
from collections.abc import Callable, Iterable

from hyperhive.broker.db import Pool, migrate
from hyperhive.errors import BadInput, HiveError, UnknownAgent
from hyperhive.home import Home

OPERATOR = "operator"
MANAGER = "manager"
# The hive itself as a sender (crash and stuck notices): a reserved name, never an
# agent (names.RESERVED_NAMES), and nobody can send to it.
SYSTEM = "system"
MAX_WAIT = 180.0
MAX_BODY = 64 * 1024
MAX_BATCH = 100  # messages per recv
# A recv's messages as JSON (escaped: up to 6 bytes per body byte) stay under this, so
# the reply fits the sockets' 1 MiB line (hostsock.MAX_LINE); one message always fits.
MAX_BATCH_BYTES = 512 * 1024


class PolicyRefused(HiveError):
    pass


def check_wait(wait_seconds: object) -> float:
    """None or 0: look now. A positive number: wait up to it, at most 180 s."""
    if wait_seconds is None:
        return 0.0
    if isinstance(wait_seconds, bool) or not isinstance(wait_seconds, int | float):
        raise BadInput(f"wait_seconds must be a number of seconds, not {wait_seconds!r}")
    if wait_seconds != wait_seconds or wait_seconds < 0:  # NaN or negative
        raise BadInput(f"wait_seconds must be 0 or more, not {wait_seconds!r}")
    return min(float(wait_seconds), MAX_WAIT)


def row_to_message(row) -> dict:
    return {
        "id": row["id"],
        "from": row["sender"],
        "to": row["recipient"],
        "body": row["body"],
        "time": row["created_at"],
    }


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
        self.check_send(sender, to, body)
        with self.db.connection() as conn:
            message_id = conn.execute(
                "INSERT INTO messages (sender, recipient, body, created_at) VALUES (?, ?, ?, ?)",
                (sender, to, body, time.time()),
            ).lastrowid
        self.wake([to])
        return message_id

    # -- receiving ---------------------------------------------------------------------

    def _take(self, name: str, lease: bool) -> list[dict]:
        with self.db.connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
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
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
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
        with self.db.connection() as conn:
            conn.execute(
                f"UPDATE messages SET delivered_at = NULL, leased = 0 WHERE id IN ({marks})",
                message_ids,
            )
            names = conn.execute(
                f"SELECT DISTINCT recipient FROM messages WHERE id IN ({marks})", message_ids
            ).fetchall()
        self.wake(r["recipient"] for r in names)

    def ack(self, name: str, message_ids: object) -> int:
        """End the leases of `name`'s messages `message_ids`; how many were still leased.
        Acknowledging twice is harmless (a retried ack whose reply was lost); an id that is
        not a message to `name` is refused, and then nothing is acknowledged."""
        if not isinstance(message_ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in message_ids
        ):
            raise BadInput(f"ack needs a list of message ids, not {message_ids!r}")
        if len(message_ids) > MAX_BATCH:
            raise BadInput(f"ack takes at most {MAX_BATCH} ids (one recv's)")
        if not message_ids:
            return 0
        marks = ",".join("?" * len(message_ids))
        with self.db.connection() as conn:
            # a message's recipient never changes: the check cannot go stale before the update
            mine = conn.execute(
                f"SELECT id FROM messages WHERE recipient = ? AND id IN ({marks})",
                (name, *message_ids),
            )
            if foreign := sorted(set(message_ids) - {r["id"] for r in mine}):
                raise BadInput(f"not messages to {name}: {', '.join(f'#{i}' for i in foreign)}")
            return conn.execute(
                f"UPDATE messages SET leased = 0 WHERE leased = 1 AND id IN ({marks})",
                message_ids,
            ).rowcount

    def release(self, name: str) -> int:
        """Hand every message leased to `name` and not acknowledged back to its inbox, in
        one statement; they keep their ids, so each sender's order holds. How many."""
        with self.db.connection() as conn:
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

"""Agents' tokens for the git remote: issued by the hive, kept only as a SHA-256 digest in
`hive.db`, listed and revoked by the operator, and revoked when their agent is destroyed.

A token is 32 random bytes, so a plain digest is as good as a slow password hash: nothing
can be guessed from it. The operator accounts' tokens live in `operator.json`
(hyperhive.operator) and are checked first.

The manager's token is written into its state directory (`/state/hyperhive-token` in its
container) so it can push from there; `hyperhive up` renews it when it is missing or
revoked.
"""

import hashlib
import os
import secrets
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from hyperhive import operator
from hyperhive.broker.db import connect_migrated as _db
from hyperhive.broker.db import fits
from hyperhive.errors import BadInput, HiveError, UnknownToken
from hyperhive.home import Home
from hyperhive.names import OPERATOR
from hyperhive.runtime.ownership import state_owner

PREFIX = "hht_"  # recognisable in a leaked log line or a secret scanner
STATE_FILE = "hyperhive-token"
MAX_READ = 4096  # a token file is one short line


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(home: Home, name: str, actor: str) -> tuple[int, str]:
    """A new token for agent `name`: its id and the token, which is shown only now."""
    if name == OPERATOR:  # an agent's token must never read as the operator's
        raise BadInput("the operator's token is `hyperhive operator token`")
    home.require_agent(name)
    if home.is_destroyed(name):
        raise BadInput(f"agent {name!r} was destroyed: it gets no token")
    token = PREFIX + secrets.token_urlsafe(32)
    conn = _db(home)
    try:
        cur = conn.execute(
            "INSERT INTO tokens (agent, digest, created_at, created_by) VALUES (?, ?, ?, ?)",
            (name, digest(token), time.time(), actor),
        )
        return cur.lastrowid, token
    finally:
        conn.close()


def listing(home: Home) -> list[dict]:
    """Every token ever issued, oldest first (the digests are not shown)."""
    conn = _db(home)
    try:
        rows = conn.execute(
            "SELECT id, agent, created_at, created_by, revoked_at, revoked_by"
            " FROM tokens ORDER BY id"
        ).fetchall()
    finally:
        conn.close()
    return [dict(row) for row in rows]


def revoke(home: Home, token_id: int, actor: str) -> dict:
    """Revoke a token for good; the next request with it gets 401."""
    conn = _db(home)
    try:
        conn.execute("BEGIN IMMEDIATE")
        row = None
        if fits(token_id):
            row = conn.execute("SELECT * FROM tokens WHERE id = ?", (token_id,)).fetchone()
        if row is None:
            conn.execute("ROLLBACK")
            raise UnknownToken(f"no token #{token_id}: `hyperhive token list` shows them")
        if row["revoked_at"] is not None:
            conn.execute("ROLLBACK")
            raise UnknownToken(f"token #{token_id} was already revoked by {row['revoked_by']}")
        conn.execute(
            "UPDATE tokens SET revoked_at = ?, revoked_by = ? WHERE id = ?",
            (time.time(), actor, token_id),
        )
        conn.execute("COMMIT")
        return {"id": token_id, "agent": row["agent"]}
    finally:
        conn.close()


def revoke_agent(home: Home, name: str, actor: str) -> int:
    """Revoke every live token of agent `name` (it is destroyed: a purged name can be taken
    by a new agent, which its predecessor's tokens must not read); how many there were."""
    conn = _db(home)
    try:
        cur = conn.execute(  # one statement: atomic in autocommit mode
            "UPDATE tokens SET revoked_at = ?, revoked_by = ?"
            " WHERE agent = ? AND revoked_at IS NULL",
            (time.time(), actor, name),
        )
        return cur.rowcount
    finally:
        conn.close()


@dataclass(frozen=True)
class Caller:
    """Who a token speaks for: `role` is what it may do (`operator`, or an agent's name),
    `actor` whom the tags name (the operator account, or the agent)."""

    role: str
    actor: str


def caller(home: Home, secret: str) -> Caller | None:
    """Whose token this is: an operator account's, an active agent's, or None (unknown,
    revoked, or its agent was destroyed)."""
    if not secret:
        return None
    account = operator.token_account(home, secret)
    if account is not None:
        return Caller(OPERATOR, account)
    if not secret.startswith(PREFIX):
        return None
    conn = _db(home)
    try:
        row = conn.execute(
            "SELECT agent FROM tokens WHERE digest = ? AND revoked_at IS NULL", (digest(secret),)
        ).fetchone()
    finally:
        conn.close()
    if row is None or not home.is_agent(row["agent"]):
        return None
    return Caller(row["agent"], row["agent"])


def identify(home: Home, secret: str) -> str | None:
    """The role of whoever holds this token: `operator` (any account), an active agent's
    name, or None."""
    found = caller(home, secret)
    return found.role if found else None


def state_file(home: Home, name: str) -> Path:
    return home.state_dir(name) / STATE_FILE


def _read_state_token(path: Path) -> str:
    """The token in an agent's state file, or "" — read without following a symlink or
    blocking on a fifo: the agent can write to its state directory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return os.read(fd, MAX_READ).decode(errors="replace").strip()
    finally:
        os.close(fd)


def write_state_token(home: Home, name: str, token: str) -> Path:
    """Put `token` into the agent's state directory, mode 0600, atomically. The file
    belongs to the state directory's owner (the container's user once a user-namespaced
    runtime has chowned the directory), so the agent can read it."""
    state = home.state_dir(name)
    state.mkdir(parents=True, exist_ok=True)
    owner = state_owner(home, name)
    fd, tmp = tempfile.mkstemp(dir=state, prefix=f".{STATE_FILE}.")  # 0600, never follows
    try:
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
            if owner is not None:
                os.fchown(f.fileno(), *owner)
        os.replace(tmp, state_file(home, name))  # replaces a symlink, never follows it
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return state_file(home, name)


def provision(home: Home, name: str, actor: str = "hyperhive") -> int | None:
    """Make sure the agent's state holds a valid token of its own; the id of a newly
    issued one, None if the one there is still good."""
    if identify(home, _read_state_token(state_file(home, name))) == name:
        return None
    token_id, token = issue(home, name, actor)
    try:
        write_state_token(home, name, token)
    except OSError as e:  # the agent can write there (a directory in the way, a full disk)
        revoke(home, token_id, actor)  # nobody holds it
        raise HiveError(
            f"cannot write the {name}'s git token into {state_file(home, name)}: {e}"
        ) from None
    return token_id

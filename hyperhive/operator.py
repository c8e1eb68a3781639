"""Operator accounts: each a name with its own salted password hash (scrypt, via
Werkzeug) and bearer token; and the key that signs web sessions.

Kept in `<home>/operator.json`, mode 0600, replaced atomically, every change made under
a flock (`operator.lock`) so the CLI and the daemon never lose each other's writes:

    {"version": 2, "session_key": "…",
     "accounts": {"operator": {"password": "scrypt:…", "token": "…", "created_at": 1.0}}}

A file from before accounts (`{"password", "token", "session_key"}` at the top) is read as
the account `operator` and rewritten so on first read. A change of an account's password
or token, or its removal, ends its forge sessions (hyperhive.sessions).
"""

import fcntl
import functools
import json
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hyperhive import sessions
from hyperhive.errors import BadInput, HiveError, UnknownAccount
from hyperhive.home import Home
from hyperhive.names import AGENT_NAME_RE, DEFAULT_ACCOUNT


def _security():
    """werkzeug's password hashing, imported on first use: the import runs werkzeug's
    package, its server and test client with it, a third of every CLI command's start-up,
    and most commands never hash a password."""
    from werkzeug import security

    return security


DEFAULT = DEFAULT_ACCOUNT  # the account a hive starts with (names.py)
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # scrypt hashes any length; a form field need not be unbounded
MAX_ACCOUNTS = 100
VERSION = 2
# Names an account may not take: they already mean someone else in the tags' `Actor:`.
RESERVED = {"manager", "hyperhive", "system"}


@functools.cache
def _dummy_hash() -> str:
    """A hash no password matches: an unknown account costs the same scrypt as a known one
    (made on first need: every CLI command imports this module)."""
    return _security().generate_password_hash(secrets.token_urlsafe(16), method="scrypt")


def check_account_name(name: str) -> str:
    """An account name is spelt like an agent's: `^[a-z][a-z0-9-]{0,30}$`."""
    if not isinstance(name, str) or not AGENT_NAME_RE.fullmatch(name):
        raise BadInput(f"invalid account name {name!r}: must match {AGENT_NAME_RE.pattern}")
    return name


def _path(home: Home) -> Path:
    return home.root / "operator.json"


# The daemon reads the file at every bearer request and login: parsed once per version of
# it (an atomic replace gives it a new inode), so the CLI's changes apply at the next read.
_cache: dict[Path, tuple[tuple[int, int, int], dict]] = {}
_cache_lock = threading.Lock()


def _read(home: Home) -> dict:
    path = _path(home)
    try:
        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            with _cache_lock:
                cached = _cache.get(path)
            if cached and cached[0] == key:
                return cached[1]
            raw = f.read()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
    except ValueError as e:
        raise HiveError(f"{path} is not valid JSON: {e}") from e
    with _cache_lock:
        _cache[path] = (key, data)
    return data


def _upgrade(data: dict) -> dict:
    """The v2 shape of what was read; an old file's password and token become `operator`'s."""
    if data.get("version") == VERSION and isinstance(data.get("accounts"), dict):
        return data
    if "accounts" in data or data.get("version", VERSION) != VERSION:
        raise HiveError(f"operator.json has an unknown shape (version {data.get('version')!r})")
    account = {k: data[k] for k in ("password", "token") if data.get(k)}
    new = {"version": VERSION, "accounts": {DEFAULT: {**account, "created_at": time.time()}}}
    if data.get("session_key"):
        new["session_key"] = data["session_key"]
    return new


def _load(home: Home) -> dict:
    """The file's contents in the current shape; an old file is rewritten on first read."""
    data = _read(home)
    if not data or data.get("version") == VERSION:
        return _upgrade(data) if data else {"version": VERSION, "accounts": {}}
    try:
        with _changing(home) as current:
            return current  # _changing upgraded it and writes it back
    except OSError:  # a read-only home: use it as it is
        return _upgrade(data)


def _save(home: Home, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=home.root, prefix=".operator.")
    try:
        with os.fdopen(fd, "w") as f:  # mkstemp creates the file 0600
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, _path(home))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _changing(home: Home) -> Iterator[dict]:
    """The current contents under the lock, written back when the block ends without an
    error: read-modify-write from two processes never loses one's change."""
    with open(home.root / "operator.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = _read(home)
        data = _upgrade(data) if data else {"version": VERSION, "accounts": {}}
        before = json.dumps(data, sort_keys=True)
        data = json.loads(before)  # a copy: the cached one is never changed in place
        yield data
        if json.dumps(data, sort_keys=True) != before or _read(home).get("version") != VERSION:
            _save(home, data)


def _account(data: dict, name: str) -> dict:
    try:
        return data["accounts"][name]
    except KeyError:
        raise UnknownAccount(
            f"no operator account {name!r}: `hyperhive operator list` shows them"
        ) from None


# -- accounts ------------------------------------------------------------------------


def accounts(home: Home) -> list[dict]:
    """Every account: name, whether it has a password and a token, when it was made."""
    home.require()
    _ensure_default(home)
    return [
        {
            "name": name,
            "password": bool(a.get("password")),
            "token": bool(a.get("token")),
            "created_at": a.get("created_at"),
        }
        for name, a in sorted(_load(home)["accounts"].items())
    ]


def _ensure_default(home: Home) -> None:
    """A hive without operator.json has the account `operator` (no password yet)."""
    if _load(home)["accounts"]:
        return
    with _changing(home) as data:
        if not data["accounts"]:
            data["accounts"][DEFAULT] = {"created_at": time.time()}


def check_new_account(home: Home, name: str) -> None:
    """Refuse a name `add` would refuse (before asking for a password). It may not be an
    agent's, kept or live, nor one the system writes in tags, nor an account's."""
    home.require()
    check_account_name(name)
    if name in RESERVED or (home.applied_dir(name) / "HEAD").is_file():
        raise BadInput(f"{name!r} names an agent or the system in the tags: pick another name")
    _ensure_default(home)
    _new_account_fits(_load(home), name)


def _new_account_fits(data: dict, name: str) -> None:
    if name in data["accounts"]:
        raise BadInput(f"operator account {name!r} exists already")
    if len(data["accounts"]) >= MAX_ACCOUNTS:
        raise BadInput(f"at most {MAX_ACCOUNTS} operator accounts")


def require_account(home: Home, name: str) -> str:
    home.require()
    _ensure_default(home)
    _account(_load(home), name)
    return name


def add(home: Home, name: str, password: str | None = None) -> None:
    """A new account, with `password` if given (its token is made on first use)."""
    check_new_account(home, name)
    if password is not None:
        _check_password_rules(password)
    with _changing(home) as data:
        _new_account_fits(data, name)
        account: dict = {"created_at": time.time()}
        if password is not None:
            account["password"] = _security().generate_password_hash(password, method="scrypt")
        data["accounts"][name] = account


def remove(home: Home, name: str) -> int:
    """Remove an account and end its sessions (how many); never the last account."""
    home.require()
    _ensure_default(home)
    with _changing(home) as data:
        _account(data, name)
        if len(data["accounts"]) == 1:
            raise BadInput(f"{name!r} is the only operator account: add another one first")
        del data["accounts"][name]
    return sessions.end_account(home, name)


# -- passwords -------------------------------------------------------------------------


def _check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise BadInput(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise BadInput(f"the password must have at most {MAX_PASSWORD} characters")


def set_password(home: Home, password: str, account: str = DEFAULT) -> int:
    """Set an account's password and end every session it has (how many)."""
    home.require()
    _check_password_rules(password)
    _ensure_default(home)
    hashed = _security().generate_password_hash(password, method="scrypt")
    with _changing(home) as data:
        _account(data, account)["password"] = hashed
    return sessions.end_account(home, account)


def has_password(home: Home) -> bool:
    """Whether any account has a password (else only a token logs in)."""
    return any(a.get("password") for a in _load(home)["accounts"].values())


def check_password(home: Home, account: str, password: str) -> bool:
    """Whether `password` is `account`'s. An unknown account, or one without a password,
    costs one scrypt check all the same, so timing does not tell which accounts exist."""
    stored = _load(home)["accounts"].get(account, {}).get("password")
    if len(password) > MAX_PASSWORD:
        return False
    ok = _security().check_password_hash(stored or _dummy_hash(), password)
    return bool(stored) and ok


# -- tokens ----------------------------------------------------------------------------


def token(home: Home, rotate: bool = False, account: str = DEFAULT) -> str:
    """An account's API token, made on first use; `rotate` replaces it and ends the
    account's sessions."""
    home.require()
    _ensure_default(home)
    current = _account(_load(home), account).get("token")
    if current and not rotate:
        return current
    with _changing(home) as data:
        entry = _account(data, account)
        if rotate or not entry.get("token"):
            entry["token"] = secrets.token_urlsafe(32)
        made = entry["token"]
    if rotate:
        sessions.end_account(home, account)
    return made


def token_account(home: Home, candidate: str) -> str | None:
    """Whose token `candidate` is: an account's name, or None."""
    if not candidate:
        return None
    # as bytes: compare_digest raises on a str that is not ASCII (any header or form value)
    given = candidate.encode(errors="surrogatepass")
    found = None
    for name, a in _load(home)["accounts"].items():  # every one compared: constant time
        stored = a.get("token")
        if stored and secrets.compare_digest(stored.encode(), given):
            found = name
    return found


def session_key(home: Home) -> str:
    """Signs session cookies; kept so sessions survive a daemon restart."""
    data = _load(home)
    if data.get("session_key"):
        return data["session_key"]
    with _changing(home) as data:
        if not data.get("session_key"):
            data["session_key"] = secrets.token_urlsafe(32)
        return data["session_key"]

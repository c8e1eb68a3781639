"""The operator's credentials: a salted password hash (scrypt, via Werkzeug), the bearer
token for the JSON API, and the key that signs web sessions.

Kept in `<home>/operator.json`, mode 0600, written atomically.
"""

import json
import os
import secrets
import tempfile
from pathlib import Path

from werkzeug.security import check_password_hash, generate_password_hash

from hyperhive.errors import HiveError
from hyperhive.home import Home

MIN_PASSWORD = 8


def _path(home: Home) -> Path:
    return home.root / "operator.json"


def _load(home: Home) -> dict:
    try:
        return json.loads(_path(home).read_text())
    except FileNotFoundError:
        return {}
    except ValueError as e:
        raise HiveError(f"{_path(home)} is not valid JSON: {e}") from e


def _save(home: Home, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=home.root, prefix=".operator.")
    with os.fdopen(fd, "w") as f:  # mkstemp creates the file 0600
        json.dump(data, f, indent=2)
    os.replace(tmp, _path(home))


def _ensure(home: Home, key: str) -> str:
    data = _load(home)
    if not data.get(key):
        data[key] = secrets.token_urlsafe(32)
        _save(home, data)
    return data[key]


def set_password(home: Home, password: str) -> None:
    home.require()
    if len(password) < MIN_PASSWORD:
        raise HiveError(f"the password must have at least {MIN_PASSWORD} characters")
    data = _load(home)
    data["password"] = generate_password_hash(password, method="scrypt")
    _save(home, data)


def has_password(home: Home) -> bool:
    return bool(_load(home).get("password"))


def check_password(home: Home, password: str) -> bool:
    stored = _load(home).get("password")
    return bool(stored) and check_password_hash(stored, password)


def token(home: Home, rotate: bool = False) -> str:
    """The operator's API token, created on first use; `rotate` replaces it."""
    home.require()
    if rotate:
        data = _load(home)
        data["token"] = ""
        _save(home, data)
    return _ensure(home, "token")


def check_token(home: Home, candidate: str) -> bool:
    stored = _load(home).get("token")
    # as bytes: compare_digest raises on a str that is not ASCII (any header or form value)
    return bool(stored) and secrets.compare_digest(
        stored.encode(), candidate.encode(errors="surrogatepass")
    )


def session_key(home: Home) -> str:
    """Signs session cookies; kept so sessions survive a daemon restart."""
    return _ensure(home, "session_key")

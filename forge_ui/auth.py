"""Operator auth: a session from the login page, or a bearer token for the JSON API; and
who a git client is (`git_identity`: an operator's or an agent's token, for /git/).

Every route but the login page and static files needs one. Session requests that change
state need the CSRF token (flask-wtf); nothing changes state over GET.

A session is an operator account's (the login asks account and password, or a token,
which names its account); the signed cookie holds only its id, checked against
hive.db at every request (hyperhive.sessions), so a logout, a password change or
`hyperhive operator logout-all` ends it at once. Logins are throttled (forge_ui.throttle).
The cookie is `Secure` when the request came over HTTPS (behind a TLS-terminating proxy:
gunicorn trusts its `X-Forwarded-Proto` from `forwarded_allow_ips`, and `[forge]
proxy_hops` makes the client's address the proxy's `X-Forwarded-For`).
"""

import time
from collections.abc import Callable
from urllib.parse import urlsplit

from flask import (
    Flask,
    abort,
    current_app,
    g,
    has_request_context,
    jsonify,
    redirect,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFProtect
from werkzeug.wrappers import Request

from forge_ui.context import hive
from forge_ui.throttle import LoginThrottle
from hyperhive import operator, sessions, tokens
from hyperhive.home import Home

csrf = CSRFProtect()

PUBLIC = {
    "auth.login",
    "static",
    "look.favicon",
}  # the login page (views/login.py), static files, the favicon (views/look.py)
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path.startswith("/ws/")


def lifetime() -> sessions.Lifetime:
    return current_app.extensions["session_lifetime"]


def throttle() -> LoginThrottle:
    return current_app.extensions["login_throttle"]


def session_account() -> str | None:
    """The account of this request's live session, or None; a cookie whose session has
    ended is dropped."""
    sid = session.get("sid")
    if not sid:
        return None
    account = sessions.check(hive().home, sid, lifetime())
    if account is None:
        session.clear()
    return account


def guard():
    g.actor = None
    if request.path.startswith("/ws/"):
        require_same_origin()
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        account = operator.token_account(hive().home, header[len("Bearer ") :].strip())
        if account is None:
            return jsonify({"error": "invalid bearer token"}), 401
        g.actor = account  # the token names its account
        return None  # a token request needs no CSRF token
    if request.endpoint == "static":
        return None
    g.actor = session_account()
    if g.actor is None and request.endpoint not in PUBLIC:
        if wants_json():
            return jsonify({"error": "log in or send Authorization: Bearer <token>"}), 401
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    if request.method not in SAFE_METHODS:
        csrf.protect()
    return None


# Seconds between re-checks of a lasting request's credentials: as often as the sockets'
# loops look (their TICK), so a logout or a rotated token ends its pages within about a
# second (a check is one read of a small file or one sqlite row).
RECHECK = 1.0


def still_allowed() -> Callable[[], bool]:
    """For a request that lasts (a terminal's websocket): a check that its session or
    bearer token still holds, asked again at most every RECHECK seconds; once it fails it
    stays failed. Call it in the request."""
    home, life, account = hive().home, lifetime(), g.actor
    header = request.headers.get("Authorization", "")
    token = header[len("Bearer ") :].strip() if header.startswith("Bearer ") else None
    sid = session.get("sid", "")
    state = {"at": time.monotonic(), "ok": True}

    def allowed() -> bool:
        now = time.monotonic()
        if state["ok"] and now - state["at"] >= RECHECK:
            state["at"] = now
            if token is not None:
                state["ok"] = operator.token_account(home, token) == account
            else:
                state["ok"] = sessions.check(home, sid, life) == account
        return state["ok"]

    return allowed


POLICY_VIOLATION = 1008  # a websocket's close code: its credentials no longer hold


def lasting(ws) -> Callable[[], bool]:
    """For a websocket's loop: whether to go on. False once the socket closed or the
    daemon is stopping; once the session or token that opened it ends (a logout, a
    rotated token), the socket is closed with 1008, so no page keeps being fed after
    its operator left. Call it in the request."""
    allowed, stopping = still_allowed(), hive().stopping

    def going() -> bool:
        if not ws.connected or stopping.is_set():
            return False
        if not allowed():
            ws.close(reason=POLICY_VIOLATION, message="your session ended: log in again")
            return False
        return True

    return going


def git_identity(home: Home, environ: dict) -> tokens.Caller | None:
    """Who a git client is (an operator account or an agent, or None): HTTP basic with a
    token as the password and any user name — what git sends for `http://x:TOKEN@host/…`
    or a credential helper — or `Authorization: Bearer TOKEN` (`http.extraHeader`)."""
    auth = Request(environ).authorization
    if auth is None:
        return None
    if auth.type == "bearer":
        secret = auth.token
    elif auth.type == "basic":
        secret = auth.password or auth.username  # a token given as the user name alone
    else:
        return None
    return tokens.caller(home, secret or "")


class SessionCookies(SecureCookieSessionInterface):
    """Flask's signed cookie, `Secure` whenever the request came over HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        secure = super().get_cookie_secure(app)
        return secure or (has_request_context() and request.is_secure)


def init_app(app: Flask, lifetime: sessions.Lifetime) -> None:
    app.session_interface = SessionCookies()
    app.extensions["session_lifetime"] = lifetime
    app.extensions["login_throttle"] = LoginThrottle()
    csrf.init_app(app)
    app.before_request(guard)


def safe_next(target: str | None) -> str:
    """Only a path on this site: never `//host` or `https://host`."""
    if not target:
        return url_for("dashboard.index")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("dashboard.index")
    return target


def require_same_origin() -> None:
    """Websocket handshakes carry cookies but no CSRF token: check where they come from."""
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        abort(403, description=f"cross-origin websocket from {origin} refused")

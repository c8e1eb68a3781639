"""Operator auth: a session from the login page, or a bearer token for the JSON API; and
who a git client is (`git_identity`: the operator's or an agent's token, for /git/).

Every route but the login page and static files needs one. Session requests that change
state need the CSRF token (flask-wtf); nothing changes state over GET.
"""

import re
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    abort,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFProtect
from werkzeug.wrappers import Request

from forge_ui import hive
from hyperhive import operator, tokens
from hyperhive.home import Home

bp = Blueprint("auth", __name__)
csrf = CSRFProtect()

PUBLIC = {"auth.login", "static"}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
ACTOR_RE = re.compile(r"[A-Za-z0-9._-]{1,40}")


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path.startswith("/ws/")


def guard():
    g.actor = None
    if request.path.startswith("/ws/"):
        require_same_origin()
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        if not operator.check_token(hive().home, header[len("Bearer ") :].strip()):
            return jsonify({"error": "invalid bearer token"}), 401
        g.actor = "operator"
        return None  # a token request needs no CSRF token
    if session.get("operator"):
        g.actor = session.get("actor", "operator")
    elif request.endpoint not in PUBLIC:
        if wants_json():
            return jsonify({"error": "log in or send Authorization: Bearer <token>"}), 401
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    if request.method not in SAFE_METHODS:
        csrf.protect()
    return None


def git_identity(home: Home, environ: dict) -> str | None:
    """Who a git client is (`operator`, an agent, or None): HTTP basic with a token as the
    password and any user name — what git sends for `http://x:TOKEN@host/…` or a
    credential helper — or `Authorization: Bearer TOKEN` (`http.extraHeader`)."""
    auth = Request(environ).authorization
    if auth is None:
        return None
    if auth.type == "bearer":
        secret = auth.token
    elif auth.type == "basic":
        secret = auth.password or auth.username  # a token given as the user name alone
    else:
        return None
    return tokens.identify(home, secret or "")


def init_app(app: Flask) -> None:
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


@bp.route("/login", methods=["GET", "POST"])
def login():
    home = hive().home
    error = None
    if request.method == "POST":
        secret = request.form.get("password", "")
        actor = request.form.get("name", "").strip() or "operator"
        if not ACTOR_RE.fullmatch(actor):
            error = "a name is 1-40 letters, digits, '.', '_' or '-'"
        elif operator.check_password(home, secret) or operator.check_token(home, secret):
            session.clear()
            session.permanent = True
            session["operator"] = True
            session["actor"] = actor
            return redirect(safe_next(request.args.get("next")))
        else:
            error = "wrong password or token"
    status = 401 if error else 200
    return (
        render_template(
            "login.html", error=error, has_password=operator.has_password(home), title="Log in"
        ),
        status,
    )


@bp.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("auth.login"))


def require_same_origin() -> None:
    """Websocket handshakes carry cookies but no CSRF token: check where they come from."""
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        abort(403, description=f"cross-origin websocket from {origin} refused")

"""The login page (an account and its password, or an account's token; throttled) and
logout. The blueprint keeps the name `auth`: `auth.login` is the guard's public page."""

from flask import Blueprint, make_response, redirect, render_template, request, session, url_for

from forge_ui.auth import lifetime, safe_next, throttle
from forge_ui.context import hive
from forge_ui.throttle import Busy, LoginThrottle
from hyperhive import operator, sessions
from hyperhive.names import AGENT_NAME_RE

bp = Blueprint("auth", __name__)

WRONG = "wrong account, password or token"


def login_page(error: str | None, status: int, account: str, retry_after: int = 0):
    home = hive().home
    page = render_template(
        "login.html",
        error=error,
        account=account,
        has_password=operator.has_password(home),
        title="Log in",
    )
    response = make_response(page, status)
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


def authenticate(account: str, secret: str) -> str | None:
    """The account these credentials log in as, or None. A token names its account (the
    form's account, when given, must be that one); a password is the account's. Busy when
    no password-check slot frees in time."""
    home = hive().home
    owner = operator.token_account(home, secret)
    if owner is not None and account in ("", owner):
        return owner
    if not account:
        return None
    with throttle().checking():
        return account if operator.check_password(home, account, secret) else None


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method != "POST":
        return login_page(None, 200, operator.DEFAULT)
    account = request.form.get("account", "").strip()
    secret = request.form.get("password", "")
    if account and not AGENT_NAME_RE.fullmatch(account):
        return login_page(f"an account name matches {AGENT_NAME_RE.pattern}", 400, "")
    keys = LoginThrottle.keys(request.remote_addr, account)
    if wait := throttle().retry_after(keys):
        return login_page(f"too many failed logins: try again in {wait} s", 429, account, wait)
    try:
        who = authenticate(account, secret)
    except Busy:
        return login_page("too many logins at once: try again in a moment", 429, account, 1)
    if who is None:
        throttle().failed(keys)
        return login_page(WRONG, 401, account)
    throttle().succeeded(keys)
    session.clear()
    session.permanent = True
    session["sid"] = sessions.start(hive().home, who, lifetime())
    session["account"] = who
    return redirect(safe_next(request.args.get("next")))


@bp.post("/logout")
def logout():
    if sid := session.get("sid"):
        sessions.end(hive().home, sid)
    session.clear()
    return redirect(url_for("auth.login"))

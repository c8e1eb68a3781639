"""The forge web UI: a Flask app factory over one hive (its views reach it with
`context.hive()`)."""

from datetime import timedelta

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from forge_ui import (
    auth,
    checks,
    difftable,
    difftree,
    errors,
    filters,
    git_http,
    headers,
    policy_view,
    state,
    state_json,
)
from forge_ui.context import hive
from forge_ui.views import (
    api,
    blobparts,
    browse,
    comments,
    dashboard,
    dead,
    live,
    login,
    look,
    review,
    spawn,
    terminal,
    viewed,
)
from hyperhive import operator
from hyperhive.daemon.httpworker import PREREAD_BYTES
from hyperhive.hive import Hive
from hyperhive.sessions import Lifetime
from hyperhive.settings import load_settings

# A request body the forge reads at most (a form, an API call's JSON): the daemon's
# listener reads that much before a thread serves the request. The git remote (/git/) is
# outside the Flask app and has its own limit (git.max_push_bytes).
MAX_CONTENT_LENGTH = PREREAD_BYTES


def create_app(hive: Hive) -> Flask:
    forge = load_settings(hive.home).forge  # read at start
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=operator.session_key(hive.home),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        # the cookie's own expiry; the session's validity is checked server-side (auth)
        PERMANENT_SESSION_LIFETIME=timedelta(hours=forge.session_hours),
        MAX_CONTENT_LENGTH=MAX_CONTENT_LENGTH,
        # CSRF is checked by auth.guard for session requests only: a bearer-token request
        # carries no ambient credential a foreign page could ride on.
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=None,
        SOCK_SERVER_OPTIONS={"ping_interval": 25, "max_message_size": live.MAX_MESSAGE},
    )
    app.extensions["hive"] = hive
    # what open dashboards show, loaded once; its JSON texts serve GET /api/state too
    app.extensions["state"] = state.Latest(hive, state_json.for_app(app))
    auth.init_app(app, Lifetime.of(forge))
    errors.init_app(app)
    filters.init_app(app)
    headers.init_app(app)
    live.sock.init_app(app)
    views = (
        login,
        dashboard,
        dead,
        review,
        policy_view,
        comments,
        browse,
        blobparts,
        viewed,
        api,
        live,
        look,
        spawn,
        terminal,
        checks,
    )
    for module in views:  # blobparts after browse: its rules use browse's converter
        app.register_blueprint(module.bp)
    difftree.init_app(app)
    difftable.init_app(app)
    if forge.proxy_hops:  # the client's address and host as the proxies in front say
        n = forge.proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)
    # Outside ProxyFix: the git mount sees the connection's own address, which is how it
    # knows a request came through an agent's git.sock (no header can pretend otherwise).
    app.wsgi_app = git_http.GitMount(app.wsgi_app, hive)  # /git/: the git remote
    return app


__all__ = ["create_app", "hive"]

"""The forge web UI: a Flask app factory over one hive."""

from datetime import timedelta

from flask import Flask, current_app

from hyperhive import operator
from hyperhive.hive import Hive


def create_app(hive: Hive) -> Flask:
    from forge_ui import (
        api,
        auth,
        browse,
        dashboard,
        errors,
        filters,
        git_http,
        live,
        review,
        spawn_views,
        terminal,
    )

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=operator.session_key(hive.home),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        # CSRF is checked by auth.guard for session requests only: a bearer-token request
        # carries no ambient credential a foreign page could ride on.
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=None,
        SOCK_SERVER_OPTIONS={"ping_interval": 25, "max_message_size": live.MAX_MESSAGE},
    )
    app.extensions["hive"] = hive
    auth.init_app(app)
    errors.init_app(app)
    filters.init_app(app)
    live.sock.init_app(app)
    for module in (auth, dashboard, review, browse, api, live, spawn_views, terminal):
        app.register_blueprint(module.bp)
    app.wsgi_app = git_http.GitMount(app.wsgi_app, hive)  # /git/: the git remote
    return app


def hive() -> Hive:
    return current_app.extensions["hive"]

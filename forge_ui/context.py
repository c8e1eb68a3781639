"""The hive the running app serves, for its views (the app factory, forge_ui/__init__.py,
registers it)."""

from flask import current_app

from hyperhive.hive import Hive


def hive() -> Hive:
    return current_app.extensions["hive"]

"""Dead letters in the forge: the requeue button's POST (the dashboard's and the agent
page's dead-letter tables), and what the JSON API shares with it."""

from flask import Blueprint, redirect, request

from forge_ui import state
from forge_ui.auth import safe_next
from forge_ui.context import hive
from hyperhive.broker.messages import DEAD_PAGE
from hyperhive.errors import BadInput
from hyperhive.wire import notify

bp = Blueprint("dead", __name__)


def listing(name: str, args) -> dict:
    """`?limit=&before=` of `name`'s dead letters, newest first: `{"agent", "messages",
    "next"}`, `next` the `before` of the next page (None on the last)."""
    hive().home.require_agent(name)
    limit = _int(args.get("limit"), "limit", DEAD_PAGE)
    before = _int(args.get("before"), "before", None)
    return {"agent": name, **state.broker(hive()).dead(name, limit, before)}


def _int(raw: str | None, what: str, default: int | None) -> int | None:
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        raise BadInput(f"{what} must be a positive whole number, not {raw!r}")
    return int(raw)


def requeue(name: str, message_id: int) -> dict:
    """Dead letter `message_id` of `name` back into its inbox; the message."""
    home = hive().home
    home.require_agent(name)
    message = state.broker(hive()).requeue_dead(name, message_id)
    if hive().broker is None:  # not the daemon's broker: let the daemon wake its readers
        notify.wrote_messages(home)
    notify.changed(home, name, "dead")
    return message


@bp.post("/agents/<name>/dead/<int:message_id>/requeue")
def requeue_form(name: str, message_id: int):
    requeue(name, message_id)
    return redirect(safe_next(request.form.get("next")))

"""The JSON API: the same operations and refusals as the CLI (409/404/400 + `error`)."""

from flask import Blueprint, current_app, g, jsonify, request

from forge_ui import charts, checks, state, state_json
from forge_ui.context import hive
from forge_ui.views import comments, dead
from hyperhive.errors import BadInput
from hyperhive.workflow import checks as wf_checks
from hyperhive.workflow.approvals import Approvals

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.get("/state")
def get_state():
    texts = current_app.extensions["state"].texts  # the sections' JSON kept while unchanged
    return state_json.response(current_app, texts, state.collect(hive()))


@bp.get("/agents/<name>/history")
def agent_history(name: str):
    live = wf_checks.live_states(hive().checks.status()) if hive().checks else {}
    return jsonify(wf_checks.history_json(hive().home, name, live))


@bp.get("/agents/<name>/dead")
def agent_dead(name: str):
    """?limit=N (1-500, default 50)&before=ID: the agent's dead letters, newest first."""
    return jsonify(dead.listing(name, request.args))


@bp.post("/agents/<name>/dead/<int:message_id>/requeue")
def requeue_dead(name: str, message_id: int):
    json_body()
    return jsonify(dead.requeue(name, message_id))


@bp.get("/stats")
def stats():
    """?agent=NAME (empty: hive-wide)&since=UNIX_TIME&keys=a,b — see forge_ui/charts.py."""
    return jsonify(charts.payload(hive(), request.args))


def json_body() -> dict:
    if not request.data:
        return {}
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadInput("the request body must be a JSON object")
    return body


@bp.get("/approvals/<name>/<int:approval_id>")
def approval(name: str, approval_id: int):
    """The approval with its check and its policy diff (forge_ui/checks.py
    `approval_json`)."""
    return jsonify(checks.approval_json(Approvals(hive().home, name).get(approval_id)))


@bp.post("/approvals/<name>/<int:approval_id>/approve")
def approve(name: str, approval_id: int):
    """`{"force": true}` approves anyway when the check failed or has not finished."""
    force = checks.force_requested(json_body().get("force"))
    a = wf_checks.approve(hive().home, name, approval_id, g.actor, force)
    return jsonify(checks.approval_json(a, wait=False))


@bp.post("/approvals/<name>/<int:approval_id>/deny")
def deny(name: str, approval_id: int):
    body = json_body()
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise BadInput('a denial needs a reason: {"reason": "..."}')
    a = Approvals(hive().home, name).deny(approval_id, g.actor, reason)
    sent = comments.after_deny(a, reason, body.get(comments.KEEP))
    return jsonify(
        {
            **checks.approval_json(a, wait=False),
            "comments_sent": list(sent.comments) if sent else [],
        }
    )

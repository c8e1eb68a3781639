"""`POST /viewed`: the operator marks a file of a diff viewed or not (hyperhive.viewed)."""

from flask import Blueprint, g, jsonify, request

from forge_ui.context import hive
from hyperhive import viewed
from hyperhive.errors import BadInput

bp = Blueprint("viewed", __name__)


@bp.post("/viewed")
def mark():
    """JSON {path, sides, viewed}: mark or unmark a file viewed for the operator."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("path"), str):
        raise BadInput('send JSON {"path": ..., "sides": "OLD..NEW", "viewed": true|false}')
    on = body.get("viewed", True)
    if not isinstance(on, bool) or not isinstance(body.get("sides"), str):
        raise BadInput('"viewed" is true or false; "sides" is "OLD..NEW"')
    viewed.mark(hive().home, g.actor, body["path"], body["sides"], on)
    return jsonify({"path": body["path"], "sides": body["sides"], "viewed": on})

"""Spawning an agent from the dashboard: the operator types a name, the one-shot spawn
creates its repos and proposes its first config, and the review page of that proposal
opens. Refusals (a bad or taken name) go through the HiveError handler."""

from flask import Blueprint, g, redirect, request, url_for

from forge_ui.context import hive
from hyperhive.spawn import spawn

bp = Blueprint("spawn", __name__)


@bp.post("/agents/spawn")
def spawn_agent():
    name = request.form.get("name", "").strip()
    approval = spawn(hive().home, name, hive().runtime, g.actor)
    return redirect(url_for("review.approval", name=approval.agent, approval_id=approval.id))

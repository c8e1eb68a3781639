"""The effective-policy diff in the forge (hyperhive/workflow/policydiff.py): the review
page's flag and table, the dashboard's column. A page never waits for nix: what is not
cached yet is evaluated in the background (one `Warmer` per process), the page shows
"evaluating…" and asks `/review/NAME/ID/policy` until it is there; the dashboard is
woken through the bus."""

from flask import Blueprint, jsonify, render_template

from forge_ui.context import hive
from hyperhive.hive import Hive
from hyperhive.workflow import policydiff
from hyperhive.workflow.approvals import Approval, Approvals

bp = Blueprint("policy", __name__)

WARMER = policydiff.Warmer()


def cached_or_queued(
    h: Hive, approval: Approval, approvals: Approvals | None = None
) -> dict | None:
    """The approval's policy diff if both sides are cached; else None, and it is queued
    for the background evaluation, which wakes the dashboard when done. `approvals`: the
    agent's, when the caller has them."""
    diff = policydiff.of_approval(h.home, approval, only_cached=True, approvals=approvals)
    if diff is None and not approval.pruned_on:
        WARMER.wanted(h.home, approval, lambda: h.bus.publish("state", {"ref": "policy"}))
    return diff


def context(approval: Approval) -> dict:
    """What `_policy_flag.html` and `_policy_diff.html` read."""
    diff = cached_or_queued(hive(), approval)
    return {
        "policy_diff": diff,
        "policy_pending": diff is None and not approval.pruned_on,
        "policy_rule": policydiff.rule_of,
    }


@bp.get("/review/<name>/<int:approval_id>/policy")
def fragment(name: str, approval_id: int):
    """The flag and the table once evaluated (`ready`), for the review page to put in."""
    a = Approvals(hive().home, name).get(approval_id, with_pruned=True)
    ctx = {"a": a, **context(a)}
    if ctx["policy_pending"]:
        return jsonify({"ready": False})
    return jsonify(
        {
            "ready": True,
            "widens": bool(ctx["policy_diff"] and ctx["policy_diff"]["widens"]),
            "flag": render_template("_policy_flag.html", **ctx),
            "table": render_template("_policy_diff.html", **ctx),
        }
    )

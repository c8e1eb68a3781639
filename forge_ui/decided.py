"""What a review, a done page and a build log say around the diff: who decided an
approval, when and why; the links to its commit, what it is reviewed against, the deploy
a rollback returns to, and the meta commit that pinned its deploy."""

from flask import render_template, url_for
from markupsafe import Markup

from forge_ui.context import hive
from hyperhive.errors import HiveError
from hyperhive.gitstore.tags import TagInfo
from hyperhive.names import parse_target
from hyperhive.workflow import meta
from hyperhive.workflow.approvals import Approval, Approvals
from hyperhive.workflow.states import State


def decision(a: Approval) -> tuple[State, TagInfo] | None:
    """The approved or denied tag of `a` (kept by a prune record if retention removed
    it), or None while it waits."""
    for state in (State.APPROVED, State.DENIED):
        if state in a.states:
            return state, a.states[state]
    return None


def render(a: Approval) -> Markup:
    """The "approved by X at T" / "denied by X at T: why" panel; empty while undecided."""
    found = decision(a)
    if found is None:
        return Markup("")
    state, tag = found
    return Markup(render_template("review/_decided.html", a=a, state=state, tag=tag))


def commit_url(agent: str, sha: str | None) -> str | None:
    return url_for("browse.commit", repo=f"{agent}/applied", rev=sha) if sha else None


def rollback(approvals: Approvals, a: Approval) -> dict | None:
    """For a proposal that rolls back (its `Rollback:` trailer): the deploy it returns to."""
    proposal = a.states.get(State.PROPOSAL)
    to = proposal.trailers.get("Rollback") if proposal else None
    if not to:
        return None
    try:
        name, approval_id = parse_target(to)
        deployed = approvals.get(approval_id, with_pruned=True).states[State.DEPLOYED]
    except (HiveError, KeyError, ValueError):
        return {"target": None}  # an ancestor no deploy ran exactly
    return {
        "target": to,
        "time": deployed.time,
        "url": url_for("review.approval", name=name, approval_id=approval_id),
    }


def links(approvals: Approvals, a: Approval, base: str | None = None) -> dict:
    deployed = State.DEPLOYED in a.states
    pin = meta.deploy_commit(hive().home, a.agent, a.id) if deployed else None
    return {
        "commit": commit_url(a.agent, a.commit),
        "base": commit_url(a.agent, base),
        "review": url_for("review.approval", name=a.agent, approval_id=a.id),
        "rollback": rollback(approvals, a),
        "pin": url_for("browse.commit", repo="meta", rev=pin) if pin else None,
    }

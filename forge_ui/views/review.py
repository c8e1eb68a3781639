"""An agent's page, the review page of one approval (diff, history, approve/deny with a
confirm step) and build logs."""

from flask import Blueprint, Response, g, redirect, render_template, request, send_file, url_for
from markupsafe import Markup

from forge_ui import checks, decided, etags, followup, harness_log, policy_view, state
from forge_ui.context import hive
from forge_ui.diffcache import diff_page
from forge_ui.filters import utc
from forge_ui.views import comments, dead
from hyperhive.agents import runtime_state
from hyperhive.errors import BadInput, HiveError, UnknownApproval
from hyperhive.gitstore import history
from hyperhive.workflow import checks as wf_checks
from hyperhive.workflow import hooks, policydiff
from hyperhive.workflow.approvals import Approval, Approvals
from hyperhive.workflow.states import State

bp = Blueprint("review", __name__)

DECIDABLE = {State.PROPOSAL}
DONE = {"approve": "approved", "deny": "denied"}


def approvals_of(name: str) -> Approvals:
    return Approvals(hive().home, name)


def diff_base(approvals: Approvals, approval: Approval) -> str | None:
    return policydiff.review_base(approvals, approval)


def hook_runs(approval: Approval) -> list[hooks.HookRun]:
    return [r for r in hooks.runs(hive().home, approval.agent) if hooks.concerns(r, approval.id)]


def live_view(approval: Approval) -> dict:
    """What the review page updates live: state, buttons, history, the decision."""
    return {
        "state": str(approval.state),
        "can_decide": approval.state in DECIDABLE,
        "decision": decided.render(approval),
        "history": Markup(
            render_template("review/_history.html", approval=approval, runs=hook_runs(approval))
        ),
        "comments": comments.tip(approval),
    }


@bp.get("/agents/<name>")
def agent(name: str):
    approvals = approvals_of(name)
    every = list(reversed(approvals.all(with_pruned=True)))
    log_text, log_offset = harness_log.tail(harness_log.path_of(name))
    return render_template(
        "review/agent.html",
        name=name,
        approvals=every,
        deployed=approvals.deployed_commit(),
        runtime=runtime_state(hive().home, name, hive().runtime),
        dead=dead.listing(name, {"before": request.args.get("dead_before")}),
        log_text=log_text,
        log_offset=log_offset,
        title=f"{name}",
        runs_open=state.runs_open(hive()),
    )


@bp.get("/agents/<name>/harness.log")
def harness_log_raw(name: str):
    """The whole harness log as plain text."""
    hive().home.require_agent(name)
    path = harness_log.path_of(name)
    if path.exists():
        response = send_file(path, mimetype="text/plain", max_age=0, conditional=False)
    else:
        response = Response(b"", mimetype="text/plain")
    response.headers.update(
        {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}
    )
    return response


@bp.get("/review/<name>/<int:approval_id>")
def approval(name: str, approval_id: int):
    approvals = approvals_of(name)
    a = approvals.get(approval_id, with_pruned=True)
    with approvals.repo() as repo:
        if a.pruned_on:
            return etags.page(
                render_template(
                    "review/pruned.html",
                    a=a,
                    approval=a,
                    runs=hook_runs(a),
                    commit_kept=a.commit.encode() in repo,
                    talk=comments.talk(a, None, writable=False),
                    title=f"{a.target} (pruned)",
                )
            )
        base = diff_base(approvals, a)
        follow = followup.of(approvals, a, request.args.get("diff"))
        old = follow.old(base)
        only = request.args.get("file")
        files = diff_page(repo, old.encode() if old else None, a.commit.encode(), only)
        commit = history.commit_info(repo, a.commit.encode())
        return etags.page(
            render_template(
                "review/approval.html",
                a=a,
                base=base,
                links=decided.links(approvals, a, base),
                commit=commit,
                files=files,
                only=only,
                view=request.args.get("view", "unified"),
                diff_repo=f"{name}/applied",  # where _diff.html loads context and images from
                live=live_view(a),
                follow=follow,
                talk=comments.talk(a, old),
                check_panel=checks.panel(a),
                **policy_view.context(a),
                title=f"Review {a.target}",
            )
        )


def decide(name: str, approval_id: int, action: str):
    approvals = approvals_of(name)
    a = approvals.get(approval_id)
    reason = request.form.get("reason", "").strip()
    if request.method == "GET":  # a reload or a link: the confirm step, never a bare 405
        return render_template(
            "review/confirm.html", a=a, action=action, reason="", title=f"{action} {a.target}?"
        )
    if action == "deny" and not reason:
        raise BadInput("a denial needs a reason")
    check = checks.view(a) if action == "approve" else None
    if request.form.get("confirm") != "yes":
        return render_template(
            "review/confirm.html",
            a=a,
            action=action,
            reason=reason,
            check=check,
            title=f"{action} {a.target}?",
        )
    try:
        if action == "approve":
            force = checks.force_requested(request.form.get("force"))
            a = wf_checks.approve(hive().home, name, approval_id, g.actor, force)
        else:
            a = approvals.deny(approval_id, g.actor, reason)
    except HiveError as e:
        return render_template(
            "review/confirm.html",
            a=approvals.get(approval_id),
            action=action,
            reason=reason,
            check=check,
            error=str(e),
            title=f"{action} {a.target}?",
        ), 409
    if action == "deny":  # the denial is written: its comments go to the manager with it
        comments.after_deny(a, reason, request.form.get(comments.KEEP))
    # Post/redirect/get: reloading the page that says it is done asks nothing again.
    return redirect(url_for("review.done", name=name, approval_id=approval_id), code=303)


@bp.route("/review/<name>/<int:approval_id>/approve", methods=["GET", "POST"])
def approve(name: str, approval_id: int):
    return decide(name, approval_id, "approve")


@bp.route("/review/<name>/<int:approval_id>/deny", methods=["GET", "POST"])
def deny(name: str, approval_id: int):
    return decide(name, approval_id, "deny")


@bp.get("/review/<name>/<int:approval_id>/done")
def done(name: str, approval_id: int):
    """Where a decision lands: who decided, and the build followed live."""
    a = approvals_of(name).get(approval_id, with_pruned=True)
    decision = decided.decision(a)
    if decision is None:  # not decided (yet): the review page is the place
        return redirect(url_for("review.approval", name=name, approval_id=approval_id))
    state, _ = decision
    action = "approve" if state == State.APPROVED else "deny"
    return render_template(
        "review/done.html",
        a=a,
        action=action,
        done=DONE[action],
        decision=decided.render(a),
        running=a.state in (State.APPROVED, State.BUILDING),
        title=f"{a.target} {DONE[action]}",
    )


def unpruned(name: str, approval_id: int) -> Approval:
    """The approval of a build log; a pruned one is named as such (its log went with it)."""
    a = approvals_of(name).get(approval_id, with_pruned=True)
    if a.pruned_on:
        raise UnknownApproval(
            f"{a.target} was pruned on {utc(a.pruned_on)} (final state {a.state}); "
            "its build log went with its tags"
        )
    return a


@bp.get("/builds/<name>/<int:approval_id>")
def build_log(name: str, approval_id: int):
    a = unpruned(name, approval_id)
    path = hive().home.build_log(name, approval_id)
    text = path.read_text(errors="replace") if path.exists() else ""
    return render_template(
        "review/build.html",
        a=a,
        links=decided.links(approvals_of(name), a),
        text=text,
        running=a.state == State.BUILDING,
        started=a.states[State.BUILDING].time if State.BUILDING in a.states else None,
        title=f"Build {a.target}",
    )


@bp.get("/builds/<name>/<int:approval_id>/raw")
def build_log_raw(name: str, approval_id: int):
    unpruned(name, approval_id)
    path = hive().home.build_log(name, approval_id)
    text = path.read_bytes() if path.exists() else b""
    return Response(
        text,
        mimetype="text/plain",
        headers={"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"},
    )

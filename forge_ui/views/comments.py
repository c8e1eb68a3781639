"""Review comments in the forge (hyperhive/workflow/comments.py keeps them in git): the
review page's part (`templates/review/_comments.html`, `static/comments.js`), the forms'
POSTs (a session with its CSRF token), the JSON API (a session or a bearer token), and
the delivery to the manager's inbox (Send, and a denial carrying them)."""

from contextlib import suppress
from dataclasses import dataclass

from flask import Blueprint, g, jsonify, redirect, request, url_for

from forge_ui import state
from forge_ui.context import hive
from hyperhive.errors import BadInput, HiveError
from hyperhive.wire import notify
from hyperhive.workflow import comments
from hyperhive.workflow.approvals import Approval, Approvals
from hyperhive.workflow.comments import Anchor, Delivery, Review
from hyperhive.workflow.states import State

bp = Blueprint("comments", __name__)
KEEP = "keep_comments"  # a deny form's field: do not send the unsent comments with it


@dataclass(frozen=True)
class Talk:
    """What the review page shows of an approval's comments."""

    review: Review
    old: str | None  # the commits of the diff on the page: where new comments point
    new: str
    writable: bool

    @property
    def unsent(self) -> list:
        return self.review.unsent()


def talk(a: Approval, old: str | None, writable: bool = True) -> Talk:
    return Talk(comments.read(hive().home, a.agent, a.id), old, a.commit, writable)


def tip(a: Approval) -> str | None:
    """The conversation's newest record: what the live review page compares."""
    return comments.read(hive().home, a.agent, a.id).tip


def review_commits(approvals: Approvals, a: Approval) -> set[str]:
    """The commits a comment of `a` may point into: its own, the deployed one it is
    compared with (now, and when proposed) and the one it follows up."""
    found = {a.commit}
    if deployed := approvals.deployed_commit():
        found.add(deployed)
    proposal = a.states.get(State.PROPOSAL)
    if proposal and proposal.trailers.get("Base"):
        found.add(proposal.trailers["Base"])
    if a.follows is not None:
        with suppress(HiveError):  # the followed one is unknown: nothing more to allow
            found.add(approvals.get(a.follows, with_pruned=True).commit)
    return found


def _line(raw: object) -> int | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 9:
        return int(raw)
    raise BadInput(f"a line number is a whole number, not {raw!r}")


def write(name: str, approval_id: int, fields) -> comments.Comment:
    """One comment or reply from a form's or a JSON body's fields."""
    approvals = Approvals(hive().home, name)
    a = approvals.get(approval_id)
    reply_to = _line(fields.get("reply_to"))
    anchor = None
    if reply_to is None and any(fields.get(k) for k in ("path", "side", "line")):
        anchor = Anchor(
            fields.get("path") or None,
            fields.get("side") or None,
            _line(fields.get("line")),
            fields.get("commit"),
        )
    c = comments.add(
        hive().home,
        name,
        approval_id,
        g.actor,
        fields.get("text"),
        anchor,
        reply_to,
        review_commits(approvals, a),
    )
    notify.changed(hive().home, name, comments.ref_of(approval_id).decode())
    return c


def deliver(name: str, approval_id: int, denied: str | None = None) -> Delivery | None:
    """The unsent comments to the manager's inbox, as one message."""
    home = hive().home
    links = comments.Links(
        url_for("review.approval", name=name, approval_id=approval_id, _external=True)
    )
    sent = comments.send(
        home, state.broker(hive()), name, approval_id, g.actor, links, denied=denied
    )
    if sent is not None:
        if hive().broker is None:  # not the daemon's broker: let the daemon wake its readers
            notify.wrote_messages(home)
        notify.changed(home, name, comments.ref_of(approval_id).decode())
    return sent


def after_deny(a: Approval, reason: str, keep: object) -> Delivery | None:
    """A denial carries the unsent comments to the manager unless asked to keep them."""
    if keep in ("yes", True):
        return None
    return deliver(a.agent, a.id, denied=reason)


def back(name: str, approval_id: int, anchor: str | None = None):
    args = {k: v for k in ("view", "diff") if (v := request.form.get(k))}
    return redirect(
        url_for("review.approval", name=name, approval_id=approval_id, _anchor=anchor, **args)
    )


@bp.app_context_processor
def helpers() -> dict:
    def unsent_comments(a: Approval) -> int:
        return len(comments.read(hive().home, a.agent, a.id).unsent())

    return {"unsent_comments": unsent_comments, "KEEP_COMMENTS": KEEP}


# -- the review page's forms --------------------------------------------------------------


@bp.post("/review/<name>/<int:approval_id>/comments")
def comment_form(name: str, approval_id: int):
    c = write(name, approval_id, request.form)
    return back(name, approval_id, f"comment-{c.number}")


@bp.post("/review/<name>/<int:approval_id>/comments/send")
def send_form(name: str, approval_id: int):
    deliver(name, approval_id)
    return back(name, approval_id, "comments")


# -- the JSON API ----------------------------------------------------------------------


def _json() -> dict:
    body = request.get_json(silent=True) if request.data else {}
    if not isinstance(body, dict):
        raise BadInput("the request body must be a JSON object")
    return body


@bp.get("/api/approvals/<name>/<int:approval_id>/comments")
def api_list(name: str, approval_id: int):
    Approvals(hive().home, name).get(approval_id, with_pruned=True)
    return jsonify(comments.read(hive().home, name, approval_id).to_json())


@bp.post("/api/approvals/<name>/<int:approval_id>/comments")
def api_write(name: str, approval_id: int):
    return jsonify(write(name, approval_id, _json()).to_json()), 201


@bp.post("/api/approvals/<name>/<int:approval_id>/comments/send")
def api_send(name: str, approval_id: int):
    _json()
    sent = deliver(name, approval_id)
    return jsonify(
        {"sent": list(sent.comments) if sent else [], "message": sent.message if sent else None}
    )

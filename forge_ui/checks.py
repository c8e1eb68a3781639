"""A proposal's check in the forge (workflow/checks.py, daemon/checker.py): the review
page's panel (queued, running with its log streaming, passed, failed with the log's last
lines), its websocket, the raw log, a rerun button, the confirm step's "approve anyway",
and the approval's JSON for the API (`approval_json`, the one place the API's approval
is built: its check and its policy diff)."""

import json
import time
from pathlib import Path

from flask import Blueprint, Response, redirect, render_template, request, url_for
from flask_sock import Sock
from markupsafe import Markup

from forge_ui import auth, policy_view
from forge_ui.context import hive
from hyperhive.errors import BadInput, HiveError, UnknownApproval
from hyperhive.names import format_target
from hyperhive.workflow import checks, policydiff
from hyperhive.workflow.approvals import Approval, Approvals

bp = Blueprint("checks", __name__)
# Its own Sock: forge_ui.live imports the review page, which imports this module (a route
# of live's Sock would need live imported first). flask-sock routes need no init_app.
sock = Sock()

LOG_CHUNK = 64 * 1024
TICK = 1.0  # seconds between looks at the check (as forge_ui/live.py's sockets)


def live_of(name: str, approval_id: int) -> dict | None:
    """The daemon's view of this check: queued (ahead) or running (started, log)."""
    worker = hive().checks
    if worker is None:
        return None
    found = worker.of(name, approval_id)
    if found and found["state"] == "running":
        running = worker.status()["running"].get(format_target(name, approval_id), {})
        found["log"] = running.get("log") or ""
    return found


def view(approval: Approval) -> dict:
    """What the panel shows: `check_json` plus whether it can be decided, the log path."""
    data = checks.check_json(
        hive().home, approval.agent, approval.id, live_of(approval.agent, approval.id)
    )
    data["pending"] = approval.state == "proposal"
    return data


def status_html(approval: Approval, check: dict) -> Markup:
    return Markup(render_template("checks/_status.html", a=approval, check=check, now=time.time()))


def panel(approval: Approval) -> Markup:
    """The review page's check panel (`{{ check_panel }}` in review/approval.html)."""
    check = view(approval)
    return Markup(
        render_template(
            "checks/_panel.html", a=approval, check=check, status=status_html(approval, check)
        )
    )


def approval_json(approval: Approval, wait: bool = True) -> dict:
    """The API's approval (the one place it is built): the approval with its check and
    its policy diff (workflow/policydiff.py). `GET /api/approvals/NAME/ID` waits for the
    diff's evaluation (cached by commit; each side bounded by `policydiff.TIMEOUT`);
    `wait=False` (the approve and deny replies) gives it when cached, else null and the
    background evaluation is queued, as the dashboard does."""
    if wait:
        diff = policydiff.of_approval(hive().home, approval)
    else:
        diff = policy_view.cached_or_queued(hive(), approval)
    return {**approval.to_json(), "check": view(approval), "policy_diff": diff}


def force_requested(value: object) -> bool:
    """The "approve anyway" of a form ("yes") or a JSON body (true)."""
    if value in (None, False, "", "no"):
        return False
    if value in (True, "yes"):
        return True
    raise BadInput(f'force must be true or false (a form: "yes"), not {value!r}')


def _log_path(check: dict) -> Path | None:
    path = check.get("log")
    return Path(path) if path else None


@bp.before_request
def known_approval():
    """An unknown agent or approval is a 404 before a websocket's handshake."""
    if request.endpoint == "checks.ws":
        Approvals(hive().home, request.view_args["name"]).get(
            request.view_args["approval_id"], with_pruned=True
        )


@bp.get("/checks/<name>/<int:approval_id>/raw")
def raw(name: str, approval_id: int):
    """The latest run's log (`?run=N`: that run's) as plain text."""
    Approvals(hive().home, name).get(approval_id)
    run = request.args.get("run", type=int)
    if run is not None:
        path = hive().home.check_log(name, approval_id, run)
    else:
        path = _log_path(view(Approvals(hive().home, name).get(approval_id)))
    if path is None or not path.exists():
        raise UnknownApproval(f"no check log of {format_target(name, approval_id)}")
    return Response(
        path.read_bytes(),
        mimetype="text/plain",
        headers={"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"},
    )


@bp.post("/checks/<name>/<int:approval_id>/rerun")
def rerun(name: str, approval_id: int):
    Approvals(hive().home, name).get(approval_id)
    if hive().checks is None:
        raise HiveError("no check worker runs here: `hyperhive check` runs one")
    hive().checks.submit(name, approval_id, rerun=True)
    return redirect(url_for("review.approval", name=name, approval_id=approval_id) + "#check")


@sock.route("/ws/check/<name>/<int:approval_id>", bp=bp, endpoint="ws")
def check_ws(ws, name: str, approval_id: int):
    """`{"status": html, "state", "text", "reset", "offset"}`: the panel's status when it
    changes, and what the current run's log gains from `?offset=` on (`reset`: another
    run's log begins). Woken by the check's lines and state events, looks every TICK."""
    approvals = Approvals(hive().home, name)
    offset = max(0, request.args.get("offset", 0, type=int))
    following = request.args.get("log") or None
    topics = ("state", f"check:{name}:{approval_id}")
    going = auth.lasting(ws)
    with hive().bus.subscribe(*topics) as sub:
        last = None
        while going():
            a = approvals.get(approval_id, with_pruned=True)
            check = view(a)
            path = _log_path(check)
            reset = str(path or "") != str(following or "")
            if reset:
                following, offset = (str(path) if path else None), 0
            text = ""
            if path is not None and path.exists():
                with path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read(LOG_CHUNK)
                end = chunk.rfind(b"\n") + 1  # whole lines: no character is split
                text = chunk[:end].decode(errors="replace")
                offset += end
            status = str(status_html(a, check))
            if text or reset or status != last:
                ws.send(
                    json.dumps(
                        {
                            "status": status,
                            "state": check["state"],
                            "text": text,
                            "reset": reset,
                            "offset": offset,
                            "log": following,
                        },
                    )
                )
                last = status
            if not text:
                sub.get(timeout=TICK)

"""Live updates over websockets (flask-sock): the dashboard, a review page, a build log,
an agent's harness log.

Every socket follows the source of truth (refs, the log file) and uses the event bus
only to wake up early: an event lost to a full queue, or a build running in another
process, is caught up at the next wake-up at the latest. Every socket ends with the
session or token that opened it (`auth.lasting`: looked at every second).
"""

import json
import time

from flask import Blueprint, current_app, request
from flask_sock import Sock

from forge_ui import auth, charts, harness_log, state
from forge_ui.context import hive
from forge_ui.views import dashboard, review
from hyperhive.workflow.states import TERMINAL, State

bp = Blueprint("live", __name__)
sock = Sock()

TICK = 1.0  # seconds between checks of the source of truth
REFRESH = 30.0  # a dashboard looks this often anyway: what no event announces (telemetry) shows
DEBOUNCE = 0.1  # a burst of events (a deploy writes several tags) renders once
STATS_DEBOUNCE = 1.0  # a busy agent's charts redraw at most about once a second
LOG_CHUNK = 64 * 1024
CLOSE_WAIT = 10.0

# Bytes of one message from a client at most; a bigger one closes the socket (1009).
# static/terminal.js sends input in pieces well below it.
MAX_MESSAGE = 1024 * 1024


def send(ws, payload: dict) -> None:
    ws.send(json.dumps(payload))


def drain(sub, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0 and sub.get(timeout=left):
        pass


@sock.route("/ws/dashboard", bp=bp)
def dashboard_ws(ws):
    """`?have={"section": "version", …}`: what the page holds (the versions it was
    rendered or last sent with). Sends `{"sections": {name: html}, "versions": {name:
    version}}` with only the sections whose version differs from what this client
    holds (all of them without `have`), when the state changes and every REFRESH."""
    latest: state.Latest = current_app.extensions["state"]  # shared by every dashboard
    held = state.parse_have(request.args.get("have"))
    going = auth.lasting(ws)
    with hive().bus.subscribe("state") as sub:
        refreshed = None
        while going():
            if refreshed is not None:
                woke = sub.get(timeout=TICK)
                if woke is not None:
                    drain(sub, DEBOUNCE)
                elif time.monotonic() - refreshed < REFRESH:
                    continue
            data, versions = latest.snapshot(max_age=TICK)
            changed = [name for name, v in versions.items() if held.get(name) != v]
            if changed:
                sections = dashboard.render_sections(data, changed, versions)
                send(ws, {"sections": sections, "versions": {n: versions[n] for n in changed}})
                held.update((n, versions[n]) for n in changed)
            refreshed = time.monotonic()


@bp.before_request
def check_query():
    """A bad chart query or an unknown agent is refused before the handshake, as a
    400/404 the client sees."""
    if request.endpoint == "live.stats":
        charts.parse(hive(), request.args, time.time())
    if request.endpoint == "live.harness":
        hive().home.require_agent(request.view_args["name"])
    if request.endpoint == "live.dashboard_ws":
        state.parse_have(request.args.get("have"))


@sock.route("/ws/stats", bp=bp, endpoint="stats")
def stats_ws(ws):
    """`?agent=NAME&window=SECONDS[&keys=…]`: the JSON of GET /api/stats for the last
    `window` seconds, sent at once, when the agent's (or the hive-wide) rows change, and
    every REFRESH seconds anyway, so ages move and a lost event only delays an update."""
    agent = request.args.get("agent")
    going = auth.lasting(ws)
    with hive().bus.subscribe("stats") as sub:
        while going():
            send(ws, charts.payload(hive(), request.args))
            deadline = time.monotonic() + REFRESH
            while (left := deadline - time.monotonic()) > 0:
                if not going():
                    return
                event = sub.get(timeout=min(left, TICK))
                if event is not None and event[1].get("agent") in (agent, ""):
                    drain(sub, STATS_DEBOUNCE)
                    break


@sock.route("/ws/approval/<name>/<int:approval_id>", bp=bp, endpoint="approval")
def approval_ws(ws, name: str, approval_id: int):
    approvals = review.approvals_of(name)
    going = auth.lasting(ws)
    with hive().bus.subscribe("state") as sub:
        last, refreshed, woke = None, 0.0, True
        while going():  # every TICK: the credentials; the view on an event or REFRESH
            if woke or time.monotonic() - refreshed >= REFRESH:
                view = review.live_view(approvals.get(approval_id, with_pruned=True))
                if view != last:
                    send(ws, view)
                    last = view
                refreshed = time.monotonic()
            woke = sub.get(timeout=TICK) is not None
            if woke:
                drain(sub, DEBOUNCE)


@sock.route("/ws/build/<name>/<int:approval_id>", bp=bp, endpoint="build")
def build_ws(ws, name: str, approval_id: int):
    """Sends the log from `?offset=` on as it grows, and the approval's state; ends with
    `done` once the build is over and the whole log was sent."""
    approvals = review.approvals_of(name)
    path = hive().home.build_log(name, approval_id)
    offset = max(0, request.args.get("offset", 0, type=int))
    topics = ("state", f"log:{name}:{approval_id}")
    going = auth.lasting(ws)
    with hive().bus.subscribe(*topics) as sub:
        last_state = None
        while going():
            a = approvals.get(approval_id)
            text = ""
            if path.exists():
                with path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read(LOG_CHUNK)
                # Send whole lines only, so a multi-byte character is never split.
                end = chunk.rfind(b"\n") + 1 if a.state not in TERMINAL else len(chunk)
                text = chunk[:end].decode(errors="replace")
                offset += end
            started = a.states[State.BUILDING].time if State.BUILDING in a.states else None
            done = a.state in TERMINAL and not text
            if text or a.state != last_state or done:
                send(ws, {"text": text, "state": str(a.state), "started": started, "done": done})
                last_state = a.state
            if done:  # let the client close, so it reads everything first
                ws.receive(timeout=CLOSE_WAIT)
                return
            if not text:
                sub.get(timeout=TICK)


@sock.route("/ws/harness/<name>", bp=bp, endpoint="harness")
def harness_ws(ws, name: str):
    """Sends what `logs/<name>/harness.log` gains from `?offset=` on (`{"text", "reset",
    "offset"}`: `reset` when the log started over, rotated by a harness start; `offset`
    where the text ends, for a reconnect to go on from); looks every TICK, and
    at once again while there is more to send. It never ends by itself: the harness
    writes as long as it runs, and a restart goes on in the same log."""
    offset = max(0, request.args.get("offset", 0, type=int))
    follower = harness_log.Follower(harness_log.path_of(name), offset)
    going = auth.lasting(ws)
    while going():
        text, reset = follower.read()
        if text or reset:
            send(ws, {"text": text, "reset": reset, "offset": follower.offset})
        if len(text) < harness_log.CHUNK // 2:
            time.sleep(TICK)

"""The hive's state as the dashboard and `GET /api/state` show it.

Each section is loaded on its own: one that fails to load is reported in `errors` with
its cause and logged, never shown as an empty list that would hide the failure.
"""

import heapq
import json
import logging
import threading
import time
from collections.abc import Callable

from flask import current_app, has_app_context

from forge_ui import charts, policy_view
from forge_ui.state_json import SectionTexts
from hyperhive import spawn
from hyperhive.agents import list_agents
from hyperhive.broker import questions
from hyperhive.broker.health import problems
from hyperhive.broker.messages import OPERATOR, Broker
from hyperhive.errors import BadInput
from hyperhive.gitstore.cache import LRU, listed_once
from hyperhive.hive import Hive
from hyperhive.workflow import checks
from hyperhive.workflow.approvals import Approval, Approvals
from hyperhive.workflow.states import State

log = logging.getLogger("hyperhive.forge")

RECENT = 20
DEAD_SHOWN = 20  # the dashboard's dead letters: the newest, the rest on each agent page


def runs_open(hive: Hive) -> bool:
    """The runtime runs the agents without their sandbox (`[local] sandbox = false`): the
    dashboard and the agent pages say so in red."""
    return getattr(hive.runtime, "sandboxed", True) is False


def pending(hive: Hive) -> list[dict]:
    """The approvals waiting for a decision, oldest first, each with its check and
    policy diff (what an agent's approvals share is read once per agent)."""
    home = hive.home
    live = checks.live_states(hive.checks.status()) if hive.checks else {}
    rows = [row for name in home.agent_names() for row in _pending_of(hive, name, live)]
    rows.sort(key=lambda r: r[0])
    return [row for _, row in rows]


def _waiting(by_id: dict[int, Approval]) -> list[Approval]:
    """An agent's pending approvals by id (Approvals.derived: once per listing)."""
    return [by_id[i] for i in sorted(by_id) if set(by_id[i].states) == {State.PROPOSAL}]


# An agent's pending rows by (home, agent), with what they were made of: its pending
# approvals and recorded checks (the same objects while its tags are unchanged), the
# deployed commit they are reviewed against and the check worker's word on each. A
# dashboard load at 50 agents x 200 tags made a thousand rows that were all the same.
_rows: LRU[tuple[str, str], tuple[tuple, list[tuple[int, dict]]]] = LRU(1024)


def _pending_of(hive: Hive, name: str, live: dict[str, dict]) -> list[tuple[int, dict]]:
    """(proposal time, row) of each pending approval of `name`, by id."""
    home = hive.home
    approvals = Approvals(home, name)
    waiting = approvals.derived(_waiting)
    if not waiting:
        return []
    every = checks.recorded(home, name)
    made_of = (waiting, every, approvals.deployed_commit(), [live.get(a.target) for a in waiting])
    key = (str(home.root), name)
    known = _rows.get(key)
    if known is not None and _same(known[0], made_of):
        return known[1]
    rows = []
    for a, now in zip(waiting, made_of[3], strict=True):
        row = a.to_json()
        row["check"] = checks.check_json(home, name, a.id, now, every)
        row["policy_diff"] = policy_view.cached_or_queued(hive, a, approvals)
        rows.append((a.states[State.PROPOSAL].time, row))
    # a diff not evaluated yet is queued by cached_or_queued: asked again at every load
    if all(row["policy_diff"] is not None for _, row in rows):
        _rows.put(key, (made_of, rows))
    return rows


def _same(old: tuple, new: tuple) -> bool:
    return old[0] is new[0] and old[1] is new[1] and old[2:] == new[2:]


def _ended(by_id: dict[int, Approval]) -> list[tuple]:
    """An agent's RECENT latest deploys and failures, newest first, as (time, id, state,
    tag) (Approvals.derived: once per listing of its tags)."""
    ended = (
        (a.states[state].time, approval_id, state, a.states[state])
        for state in (State.DEPLOYED, State.FAILED)
        for approval_id, a in by_id.items()
        if state in a.states
    )
    return heapq.nlargest(RECENT, ended, key=lambda e: (e[0], e[1]))


def recent(hive: Hive) -> list[dict]:
    """The latest deploys and failures across agents, newest first (the newest of each
    agent's newest: the same as of all, ties in the same order)."""
    ended = (
        (time, approval_id, name, state, tag)
        for name in hive.home.agent_names()
        for time, approval_id, state, tag in Approvals(hive.home, name).derived(_ended)
    )
    return [
        {
            "agent": name,
            "id": approval_id,
            "target": f"{name}#{approval_id}",
            "state": str(state),
            "commit": tag.target,
            "time": tag.time,
            "reason": tag.trailers.get("Reason", ""),
            "duration": tag.trailers.get("Duration", ""),
        }
        for _, approval_id, name, state, tag in heapq.nlargest(
            RECENT, ended, key=lambda e: (e[0], e[1])
        )
    ]


def agents(hive: Hive) -> list[dict]:
    builds = hive.builds()
    rows = list_agents(hive.home, hive.runtime)
    for row in rows:
        row["build"] = builds["running"].get(row["name"])
        row["queued"] = builds["queued"].get(row["name"], [])
    return rows


def broker(hive: Hive) -> Broker:
    """The daemon's broker (its sends wake its long-polls), or one for reading (one per
    app: each opens its own connections to hive.db)."""
    if hive.broker is not None:
        return hive.broker
    if not has_app_context():
        return Broker(hive.home)
    found = current_app.extensions.get("reading_broker")
    if found is None or found.home != hive.home:
        found = current_app.extensions["reading_broker"] = Broker(hive.home)
    return found


def open_questions(hive: Hive) -> list[dict]:
    return questions.pending(broker(hive))


def inbox(hive: Hive) -> list[dict]:
    """What agents sent the operator, newest first."""
    return broker(hive).recent_to(OPERATOR)


def alerts(hive: Hive) -> dict:
    """The dashboard's banner: the deployed agents whose claude cannot be found (checked
    by the daemon at its start and as it runs: daemon/supervisor.py)."""
    active = set(hive.home.agent_names())
    claude = [
        {"agent": name, "error": p["claude"]["error"], "since": p["claude"]["at"]}
        for name, p in sorted(problems(hive.home).items())
        if name in active and "claude" in p
    ]
    return {"claude": claude}


def dead(hive: Hive) -> dict:
    """Dead letters (messages given up after their failed turns): how many per agent and
    the newest DEAD_SHOWN of them."""
    b = broker(hive)
    counts = b.dead_counts()
    return {"total": sum(counts.values()), "counts": counts, "latest": b.dead_latest(DEAD_SHOWN)}


def drafts(hive: Hive) -> list[dict]:
    return spawn.drafts(hive.home)


def kept(hive: Hive) -> list[dict]:
    return spawn.kept(hive.home)


# name -> loader; later issues add sections here (and a template in templates/dash/).
SECTIONS: dict[str, Callable[[Hive], object]] = {
    "alerts": alerts,  # a banner above the panels (dashboard.BANNERS), not a panel
    "agents": agents,
    "activity": charts.activity,
    "approvals": pending,
    "recent": recent,
    "questions": open_questions,
    "inbox": inbox,
    "dead": dead,
    "drafts": drafts,
    "kept": kept,
}


def collect(hive: Hive, only: list[str] | None = None) -> dict:
    """Every section (or those named in `only`), from one look at each repo's refs: the
    sections ask about the same repos many times over (cache.listed_once)."""
    result: dict = {"errors": []}
    with listed_once():
        for name, loader in SECTIONS.items():
            if only is not None and name not in only:
                continue
            try:
                result[name] = loader(hive)
            except Exception as e:
                log.exception("loading the %s section failed", name)
                result[name] = None
                result["errors"].append({"section": name, "error": f"{type(e).__name__}: {e}"})
    return result


def versions(data: dict, texts: SectionTexts | None = None) -> dict[str, str]:
    """A digest of each section's data in `data` (and of `errors`): a client that holds a
    section's version holds its content, so a socket sends a section only when its
    version differs from what the client has. Its HTML is a function of the data and
    the session (ages tick in the page: filters.live_age). The digests are of the
    sections' texts in `texts` (kept while a section's data stays equal)."""
    texts = texts or _PLAIN
    return {name: texts.digest(name, data[name]) for name in (*SECTIONS, "errors") if name in data}


_PLAIN = SectionTexts()


class Latest:
    """The newest `collect` of the hive, shared by its open dashboards: after a change (an
    event on the bus's `state` topic) the first dashboard to ask loads the state, and the
    others woken by the same change reuse that load instead of each doing it again. Each
    load comes with its sections' `versions`."""

    def __init__(self, hive: Hive, texts: SectionTexts | None = None):
        self.hive = hive
        self.texts = texts or SectionTexts()  # its loads' JSON, shared with GET /api/state
        self._lock = threading.Lock()
        self._data: dict | None = None
        self._versions: dict[str, str] = {}
        self._seen = -1  # the `state` events published when the load started
        self._at = 0.0

    def get(self, max_age: float) -> dict:
        """A load made after every `state` event published before this call, at most
        `max_age` seconds old (what no event announces, such as ages, moves too)."""
        return self.snapshot(max_age)[0]

    def snapshot(self, max_age: float) -> tuple[dict, dict[str, str]]:
        """`get`'s load and its `versions` (shared: never change them)."""
        wanted = self.hive.bus.published("state")
        with self._lock:
            fresh = time.monotonic() - self._at <= max_age
            if self._data is None or self._seen < wanted or not fresh:
                # read before loading: an event published during the load is not in it
                self._seen = self.hive.bus.published("state")
                self._at = time.monotonic()
                self._data = collect(self.hive)
                self._versions = versions(self._data, self.texts)
            return self._data, self._versions


MAX_HAVE = 2048  # characters of a client's `have` at most: a dozen names and digests


def parse_have(raw: str | None) -> dict[str, str]:
    """What a reconnecting dashboard holds (`?have=`, JSON `{section: version}`, the
    versions it was last sent); empty for none. Unknown sections are dropped."""
    if not raw:
        return {}
    if len(raw) > MAX_HAVE:
        raise BadInput(f"have: at most {MAX_HAVE} bytes")
    try:
        have = json.loads(raw)
    except ValueError:
        have = None
    if not isinstance(have, dict) or not all(isinstance(v, str) for v in have.values()):
        raise BadInput('have must be a JSON object {"section": "version"}')
    return {k: v for k, v in have.items() if k in SECTIONS or k == "errors"}

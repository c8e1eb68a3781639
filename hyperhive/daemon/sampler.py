"""The daemon's telemetry jobs: the sampler (hive-wide series and every agent's inbox
depth), the roll-up, and stuck-agent detection.

An agent is stuck when its inbox holds a message older than `telemetry.stuck_minutes`
and no turn of it ended in that time. A stuck episode is one row of the `stuck` table
from the sample that finds it to the sample that finds the agent moving again (a turn,
or an empty inbox); the manager gets one system message when the row is created — the
operator instead when the manager itself is stuck —, so a restart or a second run never
repeats it.
"""

import logging
import time
from collections.abc import Callable

from hyperhive.broker.messages import MANAGER, OPERATOR, SYSTEM, Broker
from hyperhive.broker.stats import Stats
from hyperhive.hive import Hive
from hyperhive.settings import Telemetry
from hyperhive.wire import notify
from hyperhive.workflow.approvals import Approvals

log = logging.getLogger("hyperhive.telemetry")


def stuck_agents(stats: Stats) -> dict[str, dict]:
    """The open stuck episodes: name -> since, inbox (depth when found), last_turn."""
    with stats.reading() as conn:
        return {r["agent"]: dict(r) for r in conn.execute("SELECT * FROM stuck ORDER BY agent")}


class Sampler:
    def __init__(self, hive: Hive, broker: Broker, settings: Telemetry):
        self.hive, self.broker, self.settings = hive, broker, settings
        self.stats = Stats(hive.home, broker.db)

    def jobs(self) -> list[tuple[str, int, Callable[[], object]]]:
        """(name, period in seconds, function) of each job, for the daemon's scheduler."""
        period = self.settings.sample_seconds
        return [
            ("telemetry-sample", period, self.sample),
            ("telemetry-rollup", period, self.rollup),
        ]

    def rollup(self, now: float | None = None) -> dict[str, int]:
        changed = self.stats.rollup(self.settings, now)
        if any(changed.values()):
            log.info("telemetry roll-up: %s", changed)
        return changed

    def sample(self, now: float | None = None) -> list[str]:
        """Record the sampled series and update the stuck episodes; the agents that just
        became stuck."""
        now = time.time() if now is None else now
        home = self.hive.home
        names = home.agent_names()
        waiting = self.broker.waiting(names)
        pending = 0
        for n in names:
            try:
                pending += len(Approvals(home, n).all(pending_only=True))
            except Exception:  # one unreadable repo must not stop every hive-wide series
                log.exception("telemetry: %s's approvals could not be read; not counted", n)
        rows = [("", now, "approvals.pending", float(pending))]
        rows += [(n, now, "inbox.depth", float(waiting.get(n, (0, None))[0])) for n in names]
        newly, episodes = self.update_stuck(names, waiting, now)
        rows.append(("", now, "agents.stuck", float(episodes)))
        self.stats.record_many(rows)
        notify.stats_recorded(self.hive.home, "")
        return newly

    # -- stuck agents ------------------------------------------------------------------

    def is_stuck(self, name: str, waiting: tuple[int, float | None], now: float) -> bool:
        depth, oldest = waiting
        limit = self.settings.stuck_minutes * 60
        if not depth or oldest is None or now - oldest < limit:
            return False
        last = self.stats.latest(name, "turn")
        return last is None or now - (last["ts"] + last["span"]) >= limit

    def update_stuck(
        self, names: list[str], waiting: dict[str, tuple[int, float]], now: float
    ) -> tuple[list[str], int]:
        """Open and close episodes; (the newly stuck, how many are stuck now)."""
        open_now = stuck_agents(self.stats)
        stuck = {n for n in names if self.is_stuck(n, waiting.get(n, (0, None)), now)}
        newly = []
        for name in sorted(stuck - set(open_now)):
            last = self.stats.latest(name, "turn")
            last_turn = last["ts"] + last["span"] if last else None
            if self._open(name, now, waiting[name][0], last_turn):
                newly.append(name)
        for name in set(open_now) - stuck:
            self._close(name)
            log.info("%s is no longer stuck", name)
        if newly or set(open_now) - stuck:
            notify.changed(self.hive.home, "", "stuck")  # the dashboard's badges
        return newly, len(stuck)

    def _open(self, name: str, now: float, depth: int, last_turn: float | None) -> bool:
        with self.stats.reading() as conn:
            created = conn.execute(
                "INSERT OR IGNORE INTO stuck (agent, since, inbox, last_turn) VALUES (?, ?, ?, ?)",
                (name, now, depth, last_turn),
            ).rowcount
        if not created:
            return False
        log.warning("%s is stuck: %d message(s) waiting", name, depth)
        try:
            self.tell(name, depth, last_turn, now)
        except Exception:
            # Not told: forget the episode, so the next sample opens it and tells again.
            log.exception("telling about stuck agent %s failed", name)
            self._close(name)
            return False
        return True

    def _close(self, name: str) -> None:
        with self.stats.reading() as conn:
            conn.execute("DELETE FROM stuck WHERE agent = ?", (name,))

    def tell(self, name: str, depth: int, last_turn: float | None, now: float) -> None:
        if last_turn is None:
            when = "it has never finished a turn"
        else:
            when = f"its last turn ended {(now - last_turn) / 60:.0f} minutes ago"
        state = self.hive.runtime.status(name)["state"]
        body = (
            f"agent {name} looks stuck: {depth} message(s) wait in its inbox, the oldest "
            f"for over {self.settings.stuck_minutes} minutes, and {when} (runtime: {state}). "
            "You get this once per episode."
        )
        self.broker.send(SYSTEM, OPERATOR if name == MANAGER else MANAGER, body)

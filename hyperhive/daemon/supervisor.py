"""Keeping the deployed agents running, and telling when one dies.

Supervised runtimes (local: each agent is a harness subprocess of the daemon):

- `start` runs every deployed agent; `sync` (on every `state` event and every
  `[local] sync_seconds`, default 5) starts the deployed agents that do not run and
  restarts those that run an older revision than the deployed one (so every deploy, from
  the build worker or a CLI `deploy --here`, restarts its agent), and stops those no
  longer active; `stop` stops them all with the daemon.
- A harness that exits unasked is a crash: a `container_crash` message from `system` with
  the log tail goes to the manager (to the operator when the manager is the one that
  crashed), and the first sync after a backoff restarts the harness: `[local]
  restart_seconds` (default 5 s), doubling with each crash up to 5 min, back to the start
  after 10 min without one or at once after a new deploy. Of one episode of crashes
  (ended by 10 min up or a new deploy) only the first and the third are told; the rest
  are logged, so a crash loop does not flood the manager.

What it learns goes to the agents' health (broker/health.py), so the Agents table, `GET
/api/state` and `hyperhive agent list` say `failing` or `crash-looping` with the cause: a
harness that cannot start (`start`), a crash episode (`crash`, ended after 10 calm
minutes, a new deploy or the daemon's stop), and whether the `claude` each agent's policy
names can be found (`claude`: checked at the start, where every agent whose claude
cannot be found is logged, and at each sync, so installing it clears the dashboard's
banner without a restart).

Other runtimes (nixos-container: containers run on their own, systemd restarts their
harness unit): every `POLL_SECONDS` each deployed agent's status is compared with the last
one seen; an agent that was `up` and is now down or gone, without a destroy, is a crash
reported the same way (with the container unit's journal). The daemon does not start or
stop containers.
"""

import logging
import signal
import threading
import time
from collections.abc import Callable

from hyperhive.broker.health import Health
from hyperhive.broker.messages import MANAGER, MAX_BODY, OPERATOR, SYSTEM, Broker
from hyperhive.errors import HiveError
from hyperhive.hive import Hive
from hyperhive.policy import claude_problem, deployed_policy
from hyperhive.runtime import record
from hyperhive.settings import Local
from hyperhive.wire import notify

log = logging.getLogger("hyperhive.daemon")

POLL_SECONDS = 30.0
MAX_RESTART_SECONDS = 300.0  # the backoff's cap ([local] restart_seconds is its start)
CALM_SECONDS = 600.0  # a crash this long after the last one starts the backoff afresh
TELL_AGAIN_AT = 3  # an episode's crashes told: the first, and this one ("keeps crashing")
TAIL_LINES = 40
MAX_LINE = 500  # characters of one log line in a crash message
KIND = "container_crash"


def exit_text(status: int) -> str:
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"


def crash_body(name: str, what: str, tail: list[str]) -> str:
    """The message: its kind and the agent on the first line, what happened, the log tail."""
    lines = [line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…" for line in tail]
    head = f"{KIND}: {name}\n{what}\n"
    if not lines:
        return head + "(its log is empty)"
    body = head + f"Last {len(lines)} lines of its log:\n" + "\n".join(lines)
    while len(body.encode()) > MAX_BODY and lines:
        lines = lines[1:]
        body = head + f"Last {len(lines)} lines of its log:\n" + "\n".join(lines)
    return body


def backoff(first: float, count: int) -> float:
    """`first`, doubled with each crash in a row after the first, at most 5 min (the
    exponent capped too: a crash loop of days counts past what a float can hold)."""
    return min(first * 2 ** min(count - 1, 32), MAX_RESTART_SECONDS)


class Supervisor:
    def __init__(self, hive: Hive, broker: Broker, settings: Local | None = None):
        self.hive, self.broker = hive, broker
        self.settings = settings or Local()  # the backoff and the sync's period
        self.runtime = hive.runtime
        self.supervised = bool(getattr(self.runtime, "supervised", False))
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.started: set[str] = set()
        self.crashes: dict[str, tuple[int, float, str | None]] = {}  # count, time, revision
        self.seen: dict[str, str] = {}  # unsupervised: the state each agent had last
        self.failing: dict[str, str] = {}  # the last start error of each agent, logged once
        self.health = Health(hive.home)
        self.starter: threading.Thread | None = None

    def start(self, wait: bool = True) -> None:
        """Start the deployed agents (supervised) or note their states (others); with
        `wait=False` on a thread of its own, so the daemon serves while they start (200
        harnesses, one after the other, kept `hyperhive up` from answering for over a
        minute in bench/swarm.py)."""
        if self.supervised:
            # what a daemon before this one knew of starts and crashes is not true now
            self.health.clear(kind="start")
            self.health.clear(kind="crash")
            self.runtime.watch(self.exited)
            try:
                self.check_claude(announce=True)
            except Exception:
                log.exception("checking the agents' claude failed")
        if wait:
            self._first_tick()
        else:
            self.starter = threading.Thread(target=self._first_tick, name="agents-start")
            self.starter.start()

    def _first_tick(self) -> None:
        try:
            self.tick()
        except Exception:  # the scheduler's next tick tries again
            log.exception("starting the agents failed")

    def jobs(self) -> list[tuple[str, float, Callable[[], object]]]:
        """(name, period in seconds, function) for the daemon's scheduler."""
        period = self.settings.sync_seconds if self.supervised else POLL_SECONDS
        return [("agents", period, self.tick)]

    def stop(self) -> None:
        """Stop every agent this daemon started: all at once where the runtime can (one
        by one, 200 harnesses outlasted the daemon's graceful stop), else in turn."""
        self.stopping.set()
        with self.lock:
            names = sorted(self.started)
            self.started.clear()
            if not self._stop_together(names):
                for name in names:
                    try:
                        self.runtime.stop(name)
                    except Exception:
                        log.exception("%s: stopping the agent failed", name)
        if self.supervised:  # stopped now, whatever they did before
            self.health.clear(kind="start")
            self.health.clear(kind="crash")

    def _stop_together(self, names: list[str]) -> bool:
        """Stop `names` at once where the runtime can; False when it cannot."""
        stop_many = getattr(self.runtime, "stop_many", None)
        if stop_many is None:
            return False
        try:
            stop_many(names)
            return True
        except Exception:
            log.exception("stopping the agents together failed: one by one")
            return False

    def _changed(self, name: str, changed: bool) -> None:
        """Tell the forge when an agent's health changed."""
        if changed:
            notify.changed(self.hive.home, name, "health")

    def _restart_sandboxed(self, name: str) -> None:
        """A sandbox mounts the directory of the claude found when it was made: one made
        while the claude could not be found cannot see it, so the harness starts anew."""
        if not (self.supervised and getattr(self.runtime, "sandboxed", False)):
            return
        with self.lock:
            if name not in self.started or self.stopping.is_set():
                return
            try:
                self.runtime.stop(name)
                self.runtime.start(name)
            except HiveError as e:
                log.error("%s: restarting it with its claude failed: %s", name, e)

    def check_claude(self, announce: bool = False) -> None:
        """Record, per deployed agent, whether the claude its policy names can be found
        (on the daemon's PATH, which its harness inherits); log a change, or with
        `announce` (the daemon's start) every agent whose claude cannot be found."""
        deployed = self.deployed()
        for name in sorted(deployed):
            try:
                problem = claude_problem(deployed_policy(self.hive.home, name).get("claude"))
            except HiveError as e:
                problem = f"its policy cannot be read: {e}"
            if problem is None:
                if self.health.clear(name, "claude"):
                    log.info("%s: its claude can be found now", name)
                    self._changed(name, True)
                    self._restart_sandboxed(name)
                continue
            changed = self.health.set(name, "claude", problem)
            if changed or announce:
                log.error("%s: %s: its turns fail until it can", name, problem)
            self._changed(name, changed)
        for name, problems in self.health.all().items():
            if name not in deployed and self.health.clear(name):  # destroyed, undeployed
                self._changed(name, bool(problems))

    def tick(self) -> None:
        if self.supervised:
            self.sync()
        else:
            self.check()

    # -- supervised runtimes ------------------------------------------------------------

    def deployed(self) -> dict[str, str]:
        """Active agents with a deployed revision: name → revision."""
        home = self.hive.home
        revisions = {n: record.deployed_revision(home, n) for n in home.agent_names()}
        return {n: rev for n, rev in revisions.items() if rev is not None}

    def sync(self) -> None:
        """Run every deployed agent at its deployed revision; stop the ones gone."""
        if not self.supervised:
            return
        with self.lock:
            if self.stopping.is_set():
                return
            deployed = self.deployed()
            for name, revision in sorted(deployed.items()):
                if self.stopping.is_set():  # a stop during the first start: let it have them
                    break
                if self._waiting(name, revision):
                    continue
                try:
                    self.runtime.start(name)
                    self.started.add(name)
                    self.failing.pop(name, None)
                    self._changed(name, self.health.clear(name, "start"))
                except HiveError as e:
                    if self.failing.get(name) != str(e):  # not again every few seconds
                        log.error("%s: %s", name, e)
                    self.failing[name] = str(e)
                    self._changed(name, self.health.set(name, "start", str(e)))
            for name in sorted(self.started - set(deployed)):
                try:
                    self.runtime.stop(name)
                except HiveError as e:
                    log.error("%s: %s", name, e)
                self.started.discard(name)
            self._calm(deployed)
        self.check_claude()

    def _calm(self, deployed: dict[str, str]) -> None:
        """End the crash episodes that are over: 10 minutes without a crash, or the
        agent deployed anew (or not at all) since."""
        now = time.time()
        for name, (_, at, revision) in list(self.crashes.items()):
            if now - at > CALM_SECONDS or deployed.get(name) != revision:
                del self.crashes[name]
                self._changed(name, self.health.clear(name, "crash"))

    def _waiting(self, name: str, revision: str) -> bool:
        """The agent crashed lately and waits out its backoff (not after a new deploy)."""
        if name not in self.crashes:
            return False
        count, at, crashed_revision = self.crashes[name]
        if crashed_revision != revision:
            return False
        return time.time() < at + self._delay(count)

    def _delay(self, count: int) -> float:
        """The wait before the restart after the `count`th crash in a row."""
        return backoff(self.settings.restart_seconds, count)

    def exited(self, name: str, status: int) -> None:
        """The runtime's report of a harness that exited unasked."""
        now = time.time()
        with self.lock:
            count, at, before = self.crashes.get(name, (0, 0.0, None))
            revision = record.deployed_revision(self.hive.home, name)
            new_episode = now - at > CALM_SECONDS or revision != before
            count = 1 if new_episode else count + 1
            self.crashes[name] = (count, now, revision)
            stopping = self.stopping.is_set()
        what = f"The harness of agent {name} exited unexpectedly ({exit_text(status)})"
        then = "" if stopping else f"; it is restarted in {self._delay(count):g} s"
        if not stopping:
            self._changed(
                name,
                self.health.set(
                    name, "crash", self.crash_line(name, status, count), count, revision
                ),
            )
        if count == 1:
            self.tell(name, f"{what}{then}.")
        elif count == TELL_AGAIN_AT:
            self.tell(
                name,
                f"{what}, {count} times in a row{then}. Further crashes are only logged "
                f"until it stays up {CALM_SECONDS / 60:.0f} minutes or is deployed again.",
            )
        else:  # each message costs its reader a turn: a crash loop is told twice, not forever
            log.error("%s: %s (crash %d in a row, not told again)", name, what, count)

    def crash_line(self, name: str, status: int, count: int) -> str:
        """The crash in one line: how it exited, how often, and its log's last line."""
        line = f"the harness exited unexpectedly ({exit_text(status)})"
        if count > 1:
            line += f", {count} times in a row"
        try:
            last = next((x for x in reversed(self.runtime.log_tail(name, 5)) if x.strip()), "")
        except Exception:
            last = ""
        return f"{line}; its log ends: {last.strip()}" if last else line

    # -- other runtimes -----------------------------------------------------------------

    def check(self) -> None:
        """Compare each deployed agent's state with the last one seen."""
        for name in sorted(self.deployed()):
            state = self.runtime.status(name).get("state")
            if state == "unknown":  # the runtime could not tell this time: no news
                continue
            before, self.seen[name] = self.seen.get(name), state
            if before == "up" and state in ("down", "not deployed"):
                what = "went down" if state == "down" else "is gone"
                self.tell(name, f"The container of agent {name} {what} unexpectedly.")

    # -- telling ------------------------------------------------------------------------

    def tell(self, name: str, what: str) -> None:
        """A `container_crash` message from `system` with the agent's log tail."""
        try:
            tail = self.runtime.log_tail(name, TAIL_LINES)
        except Exception as e:
            tail = [f"(no log: {e})"]
        to = OPERATOR if name == MANAGER else MANAGER
        log.error("%s: %s (told %s)", name, what, to)
        try:
            self.broker.send(SYSTEM, to, crash_body(name, what, tail))
        except HiveError as e:
            log.error("%s: the crash report to %s was not sent: %s", name, to, e)
            return
        notify.changed(self.hive.home, to, notify.MESSAGE)

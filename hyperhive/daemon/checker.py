"""The daemon's check worker: every new proposal is checked in the background
(workflow/checks.py), off the build queue.

Its own bounded pool (`checks.workers` threads, one queue), so a build never waits for a
check: checks take no build lock, no check starts while the daemon builds (a queued check
waits for the build), and the check threads (and the commands they run, which inherit
it) run at a low CPU priority (nice +10), so a build that starts beside running
checks gets the CPU first. Proposals are found from the `state` events every proposal
publishes (the CLI, the API, a push to refs/for/main, a spawn commit), at the start
(pending proposals without a check) and every SWEEP seconds (an event lost to a full
queue). A destroyed
agent's queued checks are dropped and its running one is cancelled (and not recorded).
The stop cancels the running checks: unrecorded, they run again at the next start.
"""

import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from hyperhive.broker.messages import MANAGER, SYSTEM, Broker
from hyperhive.errors import HiveError
from hyperhive.home import Home
from hyperhive.names import format_target
from hyperhive.runtime import stream
from hyperhive.runtime.base import Runtime
from hyperhive.settings import Checks, load_settings
from hyperhive.wire import notify
from hyperhive.workflow import checks
from hyperhive.workflow.approvals import Approvals

log = logging.getLogger("hyperhive.checks")

NICE = 10  # the check threads' niceness over the daemon's: builds and agents come first
BUSY_WAIT = 0.2  # seconds between looks at whether the build worker is still busy
SWEEP = 30.0  # seconds between looks for proposals no event announced
PROPOSAL_REF = re.compile(r"refs/tags/proposal/(\d+)$")


def manager_teller(home: Home, broker: Broker) -> Callable[[str], None]:
    """Send a check's result to the manager's inbox, from `system`."""

    def tell(body: str) -> None:
        broker.send(SYSTEM, MANAGER, body)
        notify.changed(home, MANAGER, notify.MESSAGE)

    return tell


class CheckWorker:
    def __init__(
        self,
        home: Home,
        runtime: Runtime,
        broker: Broker | None,
        settings: Checks,
        building: Callable[[], bool] = lambda: False,
    ):
        """`building()` says whether a build runs now: no check starts meanwhile."""
        self.home, self.runtime, self.settings = home, runtime, settings
        self.building = building
        self.tell = manager_teller(home, broker) if broker is not None else None
        self.cond = threading.Condition()
        self.queue: deque[tuple[str, int]] = deque()
        self.running: dict[tuple[str, int], dict] = {}  # (name, id) -> started, limit, log
        self.threads: list[threading.Thread] = []
        self.stopping = False

    # -- what is asked ------------------------------------------------------------------

    def submit(self, name: str, approval_id: int, rerun: bool = False) -> dict:
        """Queue a check of a proposal; `rerun` checks again one that has a result. Says
        where it is: `{"state": "queued", "ahead": n}` or `{"state": "running"}`."""
        approval = Approvals(self.home, name).get(approval_id)
        key = (name, approval_id)
        with self.cond:
            if self.stopping:
                raise HiveError("the daemon is stopping; the check runs at its next start")
            if key in self.running:
                return {"state": "running"}
            if key in self.queue:
                return {"state": "queued", "ahead": list(self.queue).index(key)}
            if not rerun and checks.latest(self.home, name, approval_id) is not None:
                return {"state": "done"}
            self.queue.append(key)
            ahead = len(self.queue) - 1
            self.cond.notify()
        log.info("%s: check queued (%d ahead)", approval.target, ahead)
        notify.changed(self.home, name, "check queued")
        return {"state": "queued", "ahead": ahead}

    def status(self) -> dict:
        """`{"running": {target: {"started", "log"}}, "queued": [targets]}`."""
        with self.cond:
            return {
                "running": {
                    format_target(*k): {"started": v["started"], "log": str(v["log"] or "")}
                    for k, v in self.running.items()
                },
                "queued": [format_target(*k) for k in self.queue],
            }

    def of(self, name: str, approval_id: int) -> dict | None:
        """This approval's check in the worker: queued (with how many ahead) or running."""
        key = (name, approval_id)
        with self.cond:
            if key in self.running:
                return {"state": "running", "started": self.running[key]["started"]}
            if key in self.queue:
                return {"state": "queued", "ahead": list(self.queue).index(key)}
        return None

    # -- following the workflow ---------------------------------------------------------

    def changed(self, event: object) -> None:
        """A `state` event: a new proposal is checked; a destroyed agent's checks end."""
        if not isinstance(event, dict) or not isinstance(event.get("agent"), str):
            return
        name = event["agent"]
        try:
            if self.home.is_destroyed(name):
                self.drop(name)
                return
        except HiveError:
            return  # not an agent name (a message event's sender, say)
        if match := PROPOSAL_REF.match(str(event.get("ref"))):
            try:
                self.submit(name, int(match.group(1)))
            except HiveError as e:
                log.warning("%s#%s: not checked: %s", name, match.group(1), e)

    def sweep(self) -> None:
        """Queue every pending proposal that has no check yet (at the start, and now and
        then for an event that was lost)."""
        for name, approval_id in checks.pending_unchecked(self.home):
            if self.of(name, approval_id) is None:
                try:
                    self.submit(name, approval_id)
                except HiveError as e:
                    log.warning("%s#%d: not checked: %s", name, approval_id, e)

    def drop(self, name: str) -> None:
        with self.cond:
            dropped = [k for k in self.queue if k[0] == name]
            for k in dropped:
                self.queue.remove(k)
            running = [v["limit"] for k, v in self.running.items() if k[0] == name]
        for limit in running:
            if limit is not None:
                limit.cancel(f"agent {name} was destroyed")
        if dropped or running:
            log.info("%s: destroyed; %d check(s) dropped", name, len(dropped) + len(running))

    # -- the pool -----------------------------------------------------------------------

    def start(self, bus=None) -> None:
        for i in range(self.settings.workers):
            thread = threading.Thread(target=self._work, name=f"check-{i}", daemon=True)
            self.threads.append(thread)
            thread.start()
        if bus is not None:
            follower = threading.Thread(target=self._follow, args=(bus,), daemon=True)
            follower.name = "check-events"
            follower.start()

    def _follow(self, bus) -> None:
        with bus.subscribe("state", skip=notify.is_message) as sub:  # never a proposal
            self.sweep()
            swept = time.monotonic()
            while not self.stopping:
                event = sub.get(timeout=1.0)
                if event is not None:
                    self.changed(event[1])
                if sub.overflowed or time.monotonic() - swept > SWEEP:
                    sub.overflowed = False
                    try:
                        self.sweep()
                    except Exception:
                        log.exception("looking for unchecked proposals failed")
                    swept = time.monotonic()

    def _work(self) -> None:
        try:  # on Linux a thread's niceness is its own, and what it forks inherits it
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        except OSError as e:
            log.debug("checks run at normal priority: %s", e)
        while True:
            with self.cond:
                while not self.stopping and (not self.queue or self.building()):
                    self.cond.wait(BUSY_WAIT if self.queue else None)
                if self.stopping:
                    return
                key = self.queue.popleft()
                entry = self.running[key] = {"started": time.time(), "limit": None, "log": None}
            try:
                self._check(key, entry)
            finally:
                with self.cond:
                    del self.running[key]
                notify.changed(self.home, key[0], "check finished")

    def _check(self, key: tuple[str, int], entry: dict) -> None:
        name, approval_id = key

        def started(limit: stream.Limit, path: Path) -> None:
            with self.cond:
                entry["limit"], entry["log"] = limit, path
                if self.stopping:
                    limit.cancel("cancelled: the daemon stops")
            notify.changed(self.home, name, "check running")

        try:
            if self.home.is_destroyed(name):
                return
            timeout = self._timeout()
            done = checks.run(
                self.home, name, approval_id, self.runtime, timeout, self.tell, started
            )
            if done is not None:
                log.info("%s: check %s", done.tag, done.result)
        except HiveError as e:
            log.error("%s#%d: check not run: %s", name, approval_id, e)
        except Exception:
            log.exception("%s#%d: check worker error", name, approval_id)

    def _timeout(self) -> float:
        """`checks.timeout_seconds` as hyperhive.toml says now (the start's if broken)."""
        try:
            return load_settings(self.home).checks.timeout_seconds
        except HiveError:
            return self.settings.timeout_seconds

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel the running checks (they run again at the next start: no result was
        recorded) and end the pool."""
        with self.cond:
            self.stopping = True
            self.queue.clear()
            limits = [v["limit"] for v in self.running.values() if v["limit"] is not None]
            self.cond.notify_all()
        for limit in limits:
            limit.cancel("cancelled: the daemon stops")
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

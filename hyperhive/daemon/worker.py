"""The daemon's build worker: one queue and one thread per agent, so builds of an agent
run one at a time while different agents build side by side."""

import logging
import queue
import threading

from hyperhive.errors import HiveError, IllegalTransition, ShuttingDown
from hyperhive.home import Home
from hyperhive.runtime.base import Runtime
from hyperhive.wire import notify
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.deploy import deploy
from hyperhive.workflow.states import State

log = logging.getLogger("hyperhive.daemon")

_STOP = object()


class BuildWorker:
    def __init__(self, home: Home, runtime: Runtime):
        self.home = home
        self.runtime = runtime
        self.lock = threading.Lock()
        self.queues: dict[str, queue.Queue] = {}
        self.threads: dict[str, threading.Thread] = {}
        self.queued: dict[str, list[int]] = {}
        self.running: dict[str, int] = {}
        self.stopping = False

    def submit(self, name: str, approval_id: int) -> int:
        """Queue an approved id; returns how many builds of the agent are ahead of it."""
        approval = Approvals(self.home, name).get(approval_id)
        if approval.state != State.APPROVED:
            raise IllegalTransition(f"cannot deploy {approval.target}: it is {approval.state}")
        with self.lock:
            if self.stopping:
                raise ShuttingDown("the daemon is stopping; the build resumes at its next start")
            pending = self.queued.setdefault(name, [])
            if approval_id in pending or self.running.get(name) == approval_id:
                raise IllegalTransition(f"{approval.target} is already queued")
            ahead = len(pending) + (name in self.running)
            pending.append(approval_id)
            if name not in self.queues:
                self.queues[name] = queue.Queue()
                thread = threading.Thread(target=self._run, args=(name,), name=f"build-{name}")
                self.threads[name] = thread
                thread.start()
            self.queues[name].put(approval_id)
        log.info("%s#%d queued (%d ahead)", name, approval_id, ahead)
        notify.changed(self.home, name, "build queued")
        return ahead

    def resume(self) -> list[str]:
        """Queue every approved id that never started building (the daemon stopped first)."""
        resumed = []
        for name in self.home.agent_names():
            for a in Approvals(self.home, name).all():
                if a.state == State.APPROVED:
                    self.submit(name, a.id)
                    resumed.append(a.target)
        return resumed

    def _run(self, name: str) -> None:
        q = self.queues[name]
        while (approval_id := q.get()) is not _STOP:
            with self.lock:
                if self.stopping:  # left approved: resumed at the next start
                    continue
                self.queued[name].remove(approval_id)
                self.running[name] = approval_id
            try:
                result = deploy(self.home, name, approval_id, self.runtime)
                log.info("%s: %s", result.target, result.state)
            except HiveError as e:
                log.error("%s#%d: %s", name, approval_id, e)
            except Exception:
                log.exception("%s#%d: build worker error", name, approval_id)
            finally:
                with self.lock:
                    del self.running[name]
                notify.changed(self.home, name, "build finished")  # the queue view changed

    def status(self) -> dict:
        with self.lock:
            return {
                "running": dict(self.running),
                "queued": {n: list(ids) for n, ids in self.queued.items() if ids},
            }

    def stop(self) -> None:
        """Finish the builds that are running; queued ones stay approved for next start."""
        with self.lock:
            self.stopping = True
            for name, q in self.queues.items():
                if dropped := self.queued[name]:
                    log.info("%s: %d queued build(s) resume at next start", name, len(dropped))
                    dropped.clear()
                q.put(_STOP)
        for thread in self.threads.values():
            thread.join()

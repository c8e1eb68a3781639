"""Work that ran out of a request's time, finished in the background: one daemon thread
per `Finisher`, a bounded queue, each key queued once at a time. What it makes goes into a
cache, so the next view (anyone's) has it; a request never waits for it. Used for syntax
highlighting past its budget (diffcache, blobview)."""

import logging
import queue
import threading
from collections.abc import Callable, Hashable

from flask import Response, after_this_request, has_request_context

log = logging.getLogger(__name__)


class Finisher:
    def __init__(self, name: str, queued_max: int = 8) -> None:
        self.name = name
        self.queue: queue.Queue[tuple[Hashable, Callable[[], None]]] = queue.Queue(queued_max)
        self.pending: set[Hashable] = set()
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self.thread: threading.Thread | None = None

    def wanted(self, key: Hashable, job: Callable[[], None]) -> None:
        """Run `job` in the background unless `key` is queued already; when the queue is
        full, not at all (what it would have made is asked for again at the next view).
        Asked in a request, it starts once that request's answer is sent: a CPU-bound
        thread holding the GIL beside a request slows it several times over."""
        if has_request_context():

            def later(response: Response) -> Response:
                response.call_on_close(lambda: self._queue(key, job))
                return response

            after_this_request(later)
        else:
            self._queue(key, job)

    def _queue(self, key: Hashable, job: Callable[[], None]) -> None:
        with self.lock:
            if key in self.pending:
                return
            try:
                self.queue.put_nowait((key, job))
            except queue.Full:
                return
            self.pending.add(key)
            if self.thread is None:
                # a daemon thread: work in flight never holds up an exit
                self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self.thread.start()

    def _run(self) -> None:
        while True:
            key, job = self.queue.get()
            try:
                job()
            except Exception:
                log.exception("%s: finishing %r failed", self.name, key)
            finally:
                with self.lock:
                    self.pending.discard(key)
                    self.idle.notify_all()

    def wait(self, timeout: float) -> bool:
        """Until nothing is pending (tests, benchmarks); False at the timeout."""
        with self.lock:
            return self.idle.wait_for(lambda: not self.pending, timeout)

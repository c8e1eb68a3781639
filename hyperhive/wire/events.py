"""The daemon's in-process event bus: topics, and subscribers that each get a bounded
queue, so a slow websocket never holds up a publisher or grows memory without bound."""

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

QUEUE_SIZE = 1000

Skip = Callable[[str, object], bool]


class Subscription:
    def __init__(self, topics: set[str], skip: Skip | None = None):
        self.topics = topics
        self.skip = skip
        self.queue: queue.Queue = queue.Queue(QUEUE_SIZE)
        self.overflowed = False

    def get(self, timeout: float | None) -> tuple[str, object] | None:
        """The next event, or None after `timeout` seconds without one."""
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None


class EventBus:
    def __init__(self):
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []
        self._published: dict[str, int] = {}

    @contextmanager
    def subscribe(self, *topics: str, skip: Skip | None = None) -> Iterator[Subscription]:
        """`skip(topic, data)`: events this subscriber never wants, left out of its queue
        by the publisher. A reader blocked in `get` is then not woken for them: a thread
        that ignores the broker's per-send event costs a send nothing (a woken thread took
        the GIL from the socket thread on every send)."""
        sub = Subscription(set(topics), skip)
        with self._lock:
            self._subs.append(sub)
        try:
            yield sub
        finally:
            with self._lock:
                self._subs.remove(sub)

    def published(self, topic: str) -> int:
        """How many events of `topic` were published so far: what a reader caches a
        view of the source of truth under, so it can tell whether a change came since."""
        return self._published.get(topic, 0)

    def publish(self, topic: str, data: object = None) -> None:
        with self._lock:
            self._published[topic] = self._published.get(topic, 0) + 1
            subs = [
                s
                for s in self._subs
                if topic in s.topics and (s.skip is None or not s.skip(topic, data))
            ]
        for sub in subs:
            try:
                sub.queue.put_nowait((topic, data))
            except queue.Full:
                sub.overflowed = True  # the reader resyncs from the source of truth

"""Login throttling: a password check costs ~32 MiB and ~0.1 s of scrypt, so the forge
takes few at once and makes a guesser wait.

- Backoff: after FREE_FAILURES failed logins from one client address, or against one
  account, each further attempt from it (or at it) must wait, 1 s doubling to MAX_DELAY;
  the login answers 429 with `Retry-After` without checking anything, the right password
  too. A success clears the address and the account; failures are forgotten FORGET
  seconds after the last one. The table holds at most MAX_KEYS entries (the least recently
  failed go first), so a flood of addresses costs bounded memory.
- Concurrency: at most CHECKS password checks run at once; another login waits up to
  WAIT seconds for a slot, then gets 429.

Both live in the worker process (gunicorn runs one).
"""

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

FREE_FAILURES = 5
MAX_DELAY = 300.0
FORGET = 900.0
MAX_KEYS = 10_000
CHECKS = 2
WAIT = 2.0


class Busy(Exception):
    """Too many password checks at once: try again in a moment."""


@dataclass
class _Failures:
    count: int
    last: float

    def wait(self, now: float) -> float:
        """Seconds left before the next attempt is checked (0: now)."""
        if self.count < FREE_FAILURES:
            return 0.0
        delay = min(MAX_DELAY, 2.0 ** (self.count - FREE_FAILURES))
        return max(0.0, self.last + delay - now)


class LoginThrottle:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
        checks: int = CHECKS,
        wait: float = WAIT,
    ):
        self.clock, self.max_keys, self.wait_seconds = clock, max_keys, wait
        self._failures: OrderedDict[str, _Failures] = OrderedDict()
        self._lock = threading.Lock()
        self._checks = threading.BoundedSemaphore(checks)

    @staticmethod
    def keys(address: str | None, account: str) -> list[str]:
        """What an attempt counts against: its client address, and the account it names."""
        return [f"addr:{address or '-'}"] + ([f"account:{account}"] if account else [])

    def retry_after(self, keys: list[str]) -> int:
        """Whole seconds to wait before an attempt with these keys is checked; 0: now."""
        now = self.clock()
        with self._lock:
            self._forget(now)
            found = [self._failures[k] for k in keys if k in self._failures]
            left = max((f.wait(now) for f in found), default=0.0)
        return math.ceil(left)

    def failed(self, keys: list[str]) -> None:
        now = self.clock()
        with self._lock:
            for key in keys:
                entry = self._failures.pop(key, None) or _Failures(0, now)
                entry.count, entry.last = entry.count + 1, now
                self._failures[key] = entry  # to the end: the most recent
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def succeeded(self, keys: list[str]) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)

    def __len__(self) -> int:
        return len(self._failures)

    def _forget(self, now: float) -> None:
        # oldest first: stop at the first one still remembered
        while self._failures:
            key, entry = next(iter(self._failures.items()))
            if now - entry.last < FORGET:
                break
            del self._failures[key]

    @contextmanager
    def checking(self) -> Iterator[None]:
        """Hold one of the password-check slots; Busy if none frees within the wait."""
        if not self._checks.acquire(timeout=self.wait_seconds):
            raise Busy()
        try:
            yield
        finally:
            self._checks.release()

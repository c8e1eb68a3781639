"""Waiting for a condition instead of sleeping a guessed time."""

import time

INTERVAL = 0.05  # between two calls of a cheap predicate
MAX_INTERVAL = 0.5  # between two calls of a costly one


def wait_for(predicate, timeout=30.0, what="condition"):
    """Poll `predicate` until it returns something true (returned) or `timeout` seconds
    pass (AssertionError naming `what`).

    A predicate that starts a process (the CLI, git) costs a CPU core for a good part of
    a second on a 2-core machine running other tests: after a call that took t, the next
    comes t later (at least INTERVAL, at most MAX_INTERVAL), so polling a process takes
    about half of a core rather than all of it; a cheap predicate is still polled every
    INTERVAL, and a slow one on a loaded machine still often enough to see a state that
    holds for a moment."""
    deadline = time.monotonic() + timeout
    while (start := time.monotonic()) < deadline:
        if value := predicate():
            return value
        time.sleep(min(max(INTERVAL, time.monotonic() - start), MAX_INTERVAL))
    raise AssertionError(f"timed out waiting for {what}")

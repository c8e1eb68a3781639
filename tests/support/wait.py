"""Waiting for a condition instead of sleeping a guessed time."""

import time

INTERVAL = 0.05  # between two calls of a cheap predicate


def wait_for(predicate, timeout=30.0, what="condition"):
    """Poll `predicate` until it returns something true (returned) or `timeout` seconds
    pass (AssertionError naming `what`).

    A predicate that starts a process (the CLI, git) costs a CPU core for a good part of
    a second on a 2-core machine running other tests: after a call that took t, the next
    comes t later (at least INTERVAL), so polling takes at most half of a core, never
    all of it, and a cheap predicate is still polled every INTERVAL."""
    deadline = time.monotonic() + timeout
    while (start := time.monotonic()) < deadline:
        if value := predicate():
            return value
        time.sleep(max(INTERVAL, time.monotonic() - start))
    raise AssertionError(f"timed out waiting for {what}")

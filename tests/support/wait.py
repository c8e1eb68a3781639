"""Waiting for a condition instead of sleeping a guessed time."""

import time


def wait_for(predicate, timeout=30.0, what="condition"):
    """Poll `predicate` until it returns something true (returned) or `timeout` seconds
    pass (AssertionError naming `what`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")

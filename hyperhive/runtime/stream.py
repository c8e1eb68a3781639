"""Run a command and hand each output line to a callback the moment it is printed.

A thread may set a time limit (`time_limit`): every command run through here while it
holds is killed, its whole process group, once the limit is reached, and `TimedOut` (a
BuildError) says so. A check of a proposal uses it, so an evaluation that hangs ends."""

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from hyperhive.runtime.base import BuildError, Emit

MAX_LINE = 64 * 1024  # a longer line is handed on in pieces of this size

_current = threading.local()


class TimedOut(BuildError):
    """The thread's time limit was reached (or it was cancelled) while a command ran: the
    command was killed."""


class Limit:
    """A thread's time limit: each command run under it is killed at the deadline, or
    when `cancel` is called from another thread."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.cancelled: str | None = None
        self.lock = threading.Lock()
        self.procs: set[subprocess.Popen] = set()

    def error(self) -> TimedOut:
        return TimedOut(self.cancelled or f"timed out after {self.seconds:g}s: stopped")

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if self.cancelled or left <= 0:
            raise self.error()
        return left

    def cancel(self, why: str) -> None:
        """End the command running under the limit now; the next one is not started."""
        with self.lock:
            self.cancelled = why
            procs = list(self.procs)
        for proc in procs:
            kill_group(proc)


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[Limit]:
    """Commands this thread runs within the block are killed after `seconds` in all."""
    limit = _current.limit = Limit(seconds)
    try:
        yield limit
    finally:
        _current.limit = None


def current() -> Limit | None:
    return getattr(_current, "limit", None)


def remaining() -> float | None:
    """Seconds left of this thread's time limit (None: no limit); TimedOut when none."""
    limit = current()
    return None if limit is None else limit.remaining()


def timed_out() -> TimedOut:
    limit = current()
    return limit.error() if limit else TimedOut("timed out: stopped")


def own_group() -> bool:
    """Whether a command started now gets a process group of its own (`start_new_session`):
    under a time limit, so the limit kills all it started."""
    return current() is not None


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def limited(proc: subprocess.Popen) -> Iterator[None]:
    """Kill `proc`'s process group (it leads one under a time limit: `own_group()`) when the
    thread's time limit is reached or cancelled within the block, then raise TimedOut;
    kill it too when the block raises while it runs."""
    limit = current()
    fired = threading.Event()
    timer = None
    if limit is not None:
        with limit.lock:
            limit.procs.add(proc)
        try:
            left = limit.remaining()
        except TimedOut:
            left = 0.0

        def expire() -> None:
            fired.set()
            kill_group(proc)

        timer = threading.Timer(left, expire)
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
        if proc.poll() is None:  # the block raised: leave nothing running
            if limit is not None:
                kill_group(proc)
            else:
                proc.kill()  # it is in the caller's group: only itself
            proc.wait()
        if limit is not None:
            with limit.lock:
                limit.procs.discard(proc)
    if limit is not None and (fired.is_set() or limit.cancelled):
        raise limit.error()


def run_streamed(argv: list[str], emit: Emit, cwd: Path | None = None) -> int:
    """Run `argv` with stdout and stderr merged, emitting lines as they arrive (a line
    over MAX_LINE in pieces); exit code. Under a `time_limit` it runs in a process group of
    its own, killed whole at the limit; otherwise in the caller's (a killed `hyperhive
    deploy`'s group takes its build commands with it)."""
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=own_group(),  # a time limit kills the group
    )
    with limited(proc):
        with proc.stdout:
            for raw in iter(lambda: proc.stdout.readline(MAX_LINE), b""):
                emit(raw.decode(errors="replace").rstrip("\n"))
        code = proc.wait()
    return code

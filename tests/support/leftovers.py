"""No process left behind: a pytest plugin (conftest.py loads it) that fails the run,
naming them, when processes the tests started outlive it, then ends them.

A process is the run's when its command line or working directory is under the run's
temporary directory, or when it carries the run's mark in its environment: every process
that runs tests (a plain run, or each xdist worker) puts the mark in its own environment,
so whatever it starts inherits it (a daemon in its own session, a bench script's
children in the system's /tmp, a browser) unless it was given an environment of its own."""

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

MARK = "HYPERHIVE_TEST_RUN"


def run_root(config: pytest.Config) -> str:
    """The whole run's temporary directory: an xdist worker's is a directory in it."""
    base = Path(config._tmp_path_factory.getbasetemp())
    return str(base.parent if hasattr(config, "workerinput") else base)


def left_behind(root: str) -> dict[int, str]:
    """Processes of the run under `root`: their command lines (or cwd) by pid."""
    under = root.rstrip(os.sep) + os.sep  # pytest-22 is not pytest-224
    mark = f"{MARK}={root}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or not ours to read
        if under in cmdline or (cwd + os.sep).startswith(under) or mark in environ:
            found[int(entry.name)] = cmdline.strip() or f"(cwd {cwd})"
    return found


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """Mark what the tests start; here, as an xdist controller has started its workers
    by now (they mark their own), so they do not carry it."""
    os.environ[MARK] = run_root(session.config)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Checked once, by the process that owns the whole run's temporary directory (the
    xdist controller, after its workers ended, or a plain run)."""
    if hasattr(session.config, "workerinput"):
        return
    root = run_root(session.config)
    # a grace period for reapers finishing their last kill
    deadline = time.monotonic() + float(os.environ.get("HYPERHIVE_TEST_LEFTOVER_GRACE", "10"))
    while (left := left_behind(root)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not left:
        return
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    lines = "\n".join(f"  pid {pid}: {cmd[:200]}" for pid, cmd in sorted(left.items()))
    session.config.get_terminal_writer().line(
        f"\nprocesses started by the tests were still running at the end (now killed):\n{lines}",
        red=True,
    )
    session.exitstatus = pytest.ExitCode.TESTS_FAILED

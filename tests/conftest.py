"""Fixtures for every test module (a real hive home on disk, its local runtime) and the
run-wide check that no process the tests started is left. Helpers live in tests/support/."""

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from hyperhive.agents import init_hive
from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime


@pytest.fixture
def home(tmp_path: Path) -> Home:
    """An initialized hive: meta repo and the manager agent with proposal manager#1."""
    h = Home(tmp_path / "hive")
    init_hive(h, LocalRuntime(h), "operator")
    return h


@pytest.fixture
def runtime(home: Home) -> LocalRuntime:
    return LocalRuntime(home)


# -- no process left behind ---------------------------------------------------------------


def _left_behind(root: str) -> dict[int, str]:
    """Processes whose command line or working directory is under `root` (this run's
    temporary directories): what a test started and did not end."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue  # gone, or not ours to read
        if root in cmdline or cwd.startswith(root):
            found[int(entry.name)] = cmdline.strip() or f"(cwd {cwd})"
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run, naming them, when processes the tests started outlive it (then end
    them, so nothing is left on the machine). Checked once, by the process that owns the
    whole run's temporary directory (the xdist controller, or a plain run)."""
    if hasattr(session.config, "workerinput"):
        return
    root = str(session.config._tmp_path_factory.getbasetemp())
    deadline = time.monotonic() + 10  # reapers finishing their last kill
    while (left := _left_behind(root)) and time.monotonic() < deadline:
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

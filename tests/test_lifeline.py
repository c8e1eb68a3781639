"""No orphaned harness: `hyperhive harness --exit-with-parent` ends with the process that
started it, real processes all along: a starter that exits at once (before the harness
even ran), the same through bubblewrap with a pid namespace, one killed later, and a
harness with no lifeline (the parent death signal)."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from support.hive import HYPERHIVE
from support.wait import wait_for

from hyperhive.runtime.local_harness import _alive

# The starter: runs `hyperhive harness` the way the local runtime does (its lifeline's
# read end passed down), prints the harness's pid, then exits at once or when told.
STARTER = textwrap.dedent(
    """
    import os, subprocess, sys
    from hyperhive.runtime import lifeline
    wrap, mode, log, *argv = sys.argv[1:]
    fd = lifeline.read_end()
    extra = ["--exit-with-parent"]
    if not mode.endswith("no-lifeline"):
        extra += ["--lifeline", str(fd)]
    proc = subprocess.Popen(
        [*(wrap.split() if wrap else []), *argv, *extra],
        stdout=open(log, "ab"), stderr=subprocess.STDOUT, pass_fds=(fd,),
        start_new_session=True,
    )
    print(proc.pid, flush=True)
    if mode.startswith("wait"):
        sys.stdin.read()  # until the test closes it, or kills this process
    os._exit(0)
    """
)


def start(tmp_path, mode: str, wrap: str = "") -> tuple[subprocess.Popen, int, object]:
    log = tmp_path / "harness.log"
    argv = [
        HYPERHIVE, "harness", "--socket", str(tmp_path / "no-daemon.sock"),
        "--state", str(tmp_path / "state"), "--etc", str(tmp_path / "etc"),
    ]  # fmt: skip
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, wrap, mode, str(log), *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    pid = int(starter.stdout.readline())
    return starter, pid, log


def ended(pid: int) -> bool:
    return not _alive(pid)


def stray(pid: int) -> None:
    """A harness a failed test left: end it (its group) so nothing outlives the test."""
    if _alive(pid):
        os.killpg(pid, 9)


def test_a_harness_whose_starter_exited_before_it_ran_ends(tmp_path):
    starter, pid, log = start(tmp_path, "at-once")
    try:
        assert starter.wait(30) == 0
        wait_for(lambda: ended(pid), what="the orphaned harness to end")
        text = log.read_text()
        assert "the daemon that started this harness is gone" in text
        assert "ready on" not in text
    finally:
        stray(pid)


def test_a_harness_ends_when_its_starter_is_killed_later(tmp_path):
    starter, pid, log = start(tmp_path, "wait")
    try:
        # it runs: looking for its daemon, which is not there
        wait_for(lambda: log.exists() and "no answer to whoami" in log.read_text(), what="run")
        assert _alive(pid)
        starter.kill()  # a SIGKILL: no handler of the starter's runs
        starter.wait(30)
        wait_for(lambda: ended(pid), what="the harness to end")
    finally:
        stray(pid)


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_the_lifeline_goes_through_bubblewrap_and_its_pid_namespace(tmp_path):
    """Inside a pid namespace the starter's pid means nothing; the pipe still ends."""
    probe = subprocess.run(
        ["bwrap", "--dev-bind", "/", "/", "--unshare-pid", "true"], capture_output=True
    )
    if probe.returncode != 0:
        pytest.skip(f"bwrap cannot make a pid namespace here: {probe.stderr.decode().strip()}")
    wrap = "bwrap --dev-bind / / --unshare-pid --"  # no --die-with-parent: the pipe alone
    starter, pid, log = start(tmp_path, "at-once", wrap)
    try:
        assert starter.wait(30) == 0
        wait_for(lambda: ended(pid), what="bwrap and the harness in it to end")
        assert "the daemon that started this harness is gone" in log.read_text()
    finally:
        stray(pid)


def test_without_a_lifeline_the_parent_death_signal_ends_it(tmp_path):
    starter, pid, log = start(tmp_path, "wait, no-lifeline")
    try:
        wait_for(lambda: log.exists() and "no answer to whoami" in log.read_text(), what="run")
        starter.stdin.close()  # the starter exits
        assert starter.wait(30) == 0
        wait_for(lambda: ended(pid), what="the harness to end")
    finally:
        stray(pid)


@pytest.mark.parametrize(
    "fd, said",
    [("1", "expected a file descriptor number above 2"), ("x", "above 2")],
)
def test_a_bad_lifeline_is_a_usage_error(tmp_path, fd, said):
    proc = subprocess.run(
        [HYPERHIVE, "harness", "--lifeline", fd], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and said in proc.stderr


def test_a_lifeline_that_is_no_pipe_is_refused(tmp_path):
    with open(tmp_path / "file", "w") as f:
        fd = f.fileno()
        proc = subprocess.run(
            [HYPERHIVE, "harness", "--socket", str(tmp_path / "s"), "--state",
             str(tmp_path / "state"), "--lifeline", str(f.fileno())],
            capture_output=True, text=True, timeout=60, pass_fds=(f.fileno(),),
        )  # fmt: skip
    assert proc.returncode == 2 and f"--lifeline {fd} is not a pipe" in proc.stderr


def test_a_stop_landing_inside_a_log_call_is_not_swallowed():
    """Regression: SIGTERM's Stop raised while the harness was writing a log line was
    caught by logging (`emit` turns an Exception into a printed "Logging error") and the
    harness went on, orphaned. Stop is a BaseException now, as KeyboardInterrupt."""
    import io
    import logging

    from hyperhive.harness.loop import Stop

    class Landing(io.StringIO):
        def write(self, text):
            raise Stop("SIGTERM")  # where the signal handler's raise would land

    logger = logging.getLogger("hyperhive.test-stop")
    handler = logging.StreamHandler(Landing())
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with pytest.raises(Stop):
            logger.warning("no answer to whoami; retrying")
    finally:
        logger.removeHandler(handler)

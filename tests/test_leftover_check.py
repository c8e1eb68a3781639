"""The run-wide check that no process the tests started outlives the run (tests/support/
leftovers.py), on a run of its own spread over two xdist workers: it fails the run, names
what was left (started in the run's temporary directory, or only carrying the run's mark,
as a daemon in its own session in the system's /tmp does) and ends them, and names
neither the workers nor what a test ended itself."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

from support.wait import wait_for

LEAKY = """
import subprocess, sys

def sleeper(name, cwd):
    argv = [sys.executable, "-c", "import time; time.sleep(600)", "{token}-" + name]
    return subprocess.Popen(argv, cwd=cwd, start_new_session=True)

def test_leaves_one_in_its_tmp_path(tmp_path):
    sleeper("in-tmp-path", tmp_path)

def test_leaves_one_elsewhere():
    sleeper("elsewhere", "/")

def test_ends_its_own(tmp_path):
    p = sleeper("ended", "/")
    p.kill()
    p.wait()
"""


def running(token: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if token in line and "time.sleep" in line]


def test_a_run_over_xdist_workers_fails_naming_what_was_left(pytester):
    token = f"leftover-{uuid.uuid4().hex[:12]}"
    pytester.makepyfile(test_leaky=LEAKY.format(token=token))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path]),
        "HYPERHIVE_TEST_LEFTOVER_GRACE": "0.5",  # the leftovers here end nowhere else
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",  # xdist alone: a start-up of its own
    }
    argv = [sys.executable, "-m", "pytest", "-p", "xdist", "-p", "support.leftovers", "-n", "2"]
    argv += ["-q"]
    argv += ["-p", "no:cacheprovider", f"--basetemp={pytester.path / 'base'}"]
    proc = subprocess.run(
        argv, cwd=pytester.path, env=env, capture_output=True, text=True, timeout=120
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "3 passed" in out, out
    assert "processes started by the tests were still running at the end (now killed)" in out
    named = sorted(
        line.split(f"{token}-")[1] for line in out.splitlines() if line.startswith("  pid ")
    )
    assert named == ["elsewhere", "in-tmp-path"], out
    wait_for(lambda: not running(token), what="the left processes to be ended")

"""Fixtures for every test module (a real hive home on disk, its local runtime) and the
run-wide check that no process the tests started is left. Helpers live in tests/support/."""

import sys
from pathlib import Path

import pytest
from support.template import Templates, copy_hive
from support.tmpfs import short_basetemp, use_tmpfs

from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime

# pytest keeps its assertion rewrite of each test module in __pycache__ only when bytecode
# may be written: with PYTHONDONTWRITEBYTECODE set (CI, this machine) every xdist worker
# rewrote all ~80 modules at every run, 8-10 s of CPU each before its first test. `make
# test` writes the cache beforehand (the Makefile's $(REWRITTEN)); this keeps it written
# by a run started by hand and for a module changed since. Checked against the source's
# mtime and size, as a .pyc is.
sys.dont_write_bytecode = False

# The check that no process the tests started outlives the run, `--cpu-top=N` (the tests
# that cost the most CPU), the Chromium and forge a process's browser tests share;
# pytester for its own test.
pytest_plugins = ["support.leftovers", "support.cputime", "support.browser_worker", "pytester"]

# Before anything asks for a temporary directory: the hives the tests build on tmpfs,
# where an fsync costs nothing (support/tmpfs.py).
ON_TMPFS = use_tmpfs()


@pytest.hookimpl(trylast=True)  # after pytest's tmpdir plugin made its factory
def pytest_configure(config: pytest.Config) -> None:
    if ON_TMPFS:
        short_basetemp(config)


@pytest.fixture(scope="session")
def hive_templates(tmp_path_factory: pytest.TempPathFactory) -> Templates:
    return Templates(lambda: tmp_path_factory.mktemp("template") / "hive")


@pytest.fixture
def hive_template(hive_templates: Templates) -> Home:
    """The hive `init_hive` made once per test process (and umask), which `home` copies
    (support/template.py)."""
    return hive_templates.current()


@pytest.fixture
def home(tmp_path: Path, hive_template: Home) -> Home:
    """An initialized hive: meta repo and the manager agent with proposal manager#1."""
    return copy_hive(hive_template, tmp_path / "hive")


@pytest.fixture
def runtime(home: Home) -> LocalRuntime:
    return LocalRuntime(home)


# The longest tests, first: xdist hands tests out in collection order, so a long test
# collected last would run alone on one worker while the other has nothing left to do.
# (Measured with `pytest --durations`; a prefix is a module or a test.)
LONGEST_FIRST = (
    # 6-17 s each in an idle full run (`--durations`)
    "tests/test_bench.py",  # its tests longest first
    "tests/test_harness_daemon.py::test_a_message_runs_a_turn",
    "tests/test_claude_cli.py",
    "tests/test_harness_daemon.py::test_an_agent_whose_claude_cannot_start",
    "tests/test_comments_browser.py",
    "tests/test_browser.py::test_propose_appears_live",
    # 3-5 s
    "tests/test_terminal.py::test_local_shell_is_a_login_shell",
    "tests/test_terminal.py::test_stopping_the_daemon",
    "tests/test_cli.py::test_full_cycle",
    "tests/test_daemon.py::test_start_recovers",
    "tests/test_gitsock.py::test_the_local_harness",
    "tests/test_sandbox.py::test_an_agent_sees_its_state",
    "tests/test_stats.py::test_a_fake_claude_turn",
    "tests/test_checks.py::test_the_daemon_checks_proposals",
    "tests/test_retention.py::test_property",
    "tests/test_harness.py::test_a_turn_sends_through",
    "tests/test_operator_auth.py::test_the_cli_ends_sessions",
    # builds the wheel the installed-wheel test then finds built (support/once.py)
    "tests/test_packaging.py::test_the_wheel",
    "tests/test_sandbox.py::test_no_bwrap",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        return next(
            (i for i, p in enumerate(LONGEST_FIRST) if item.nodeid.startswith(p)),
            len(LONGEST_FIRST),
        )

    items.sort(key=rank)  # stable: the rest keep their order

"""Fixtures for every test module (a real hive home on disk, its local runtime) and the
run-wide check that no process the tests started is left. Helpers live in tests/support/."""

from pathlib import Path

import pytest

from hyperhive.agents import init_hive
from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime

# The check that no process the tests started outlives the run; pytester for its own test.
pytest_plugins = ["support.leftovers", "pytester"]


@pytest.fixture
def home(tmp_path: Path) -> Home:
    """An initialized hive: meta repo and the manager agent with proposal manager#1."""
    h = Home(tmp_path / "hive")
    init_hive(h, LocalRuntime(h), "operator")
    return h


@pytest.fixture
def runtime(home: Home) -> LocalRuntime:
    return LocalRuntime(home)

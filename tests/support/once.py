"""Something the tests share that costs seconds to make (a built wheel), made once per
run: under xdist each worker is a process of its own, where a session-scoped fixture
alone would make it once per worker, at the same time."""

import fcntl
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from .leftovers import run_root


def once_per_run(config: pytest.Config, name: str, make: Callable[[Path], object]) -> Path:
    """The directory `<run's temporary directory>/once-<name>` as `make(directory)` filled
    it: the first process of the run to ask makes it, the others wait on a lock and use
    it. A `make` that failed is tried again by the next one to ask."""
    root = Path(run_root(config))
    made = root / f"once-{name}"
    with open(root / f"once-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (made / ".made").exists():
            shutil.rmtree(made, ignore_errors=True)
            made.mkdir()
            make(made)
            (made / ".made").touch()
    return made

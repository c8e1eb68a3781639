"""Cross-process locks on a repo: flock on a file inside it.

flock locks belong to an open file description, so two threads of one process that each
open the file exclude each other just as two processes do, and a killed holder releases
the lock with its last descriptor.
"""

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def locked(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on `path` (created if missing); yields False if not blocking
    and the lock is taken elsewhere."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def transition_lock(repo_dir: Path) -> Path:
    """Held briefly around every read-check-write of an approval's tags."""
    return repo_dir / "hyperhive-transition.lock"


def build_lock(repo_dir: Path) -> Path:
    """Held for a whole build: builds of one agent run one at a time."""
    return repo_dir / "hyperhive-build.lock"


def check_lock(repo_dir: Path) -> Path:
    """Held by a process that checks the agent's proposals itself (no daemon runs them):
    such checks of one agent run one at a time, each proposal's once."""
    return repo_dir / "hyperhive-check.lock"

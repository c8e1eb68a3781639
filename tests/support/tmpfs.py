"""The run's temporary files on a RAM file system when the machine has one.

Every hive a test builds writes git objects and refs through dulwich, which fsyncs each
file it closes, and sqlite, which syncs its journal: on a disk shared with other work an
fsync can wait hundreds of ms, and a test that makes a hive pays dozens of them. On tmpfs
an fsync returns at once; what the tests check (the bytes written, the git CLI reading
them back, sqlite's answers) is the same. The durability itself is the kernel's, never
asserted by a test.

The run's base directory there is short (`/dev/shm/pt-root/3`, where pytest's own would
be `/dev/shm/pytest-of-root/pytest-3`): a unix socket's path has at most 107 bytes, and a
test's hive puts its agents' sockets a few levels below a long test name."""

import atexit
import os
import tempfile
from pathlib import Path

import pytest
from _pytest.pathlib import LOCK_TIMEOUT, make_numbered_dir_with_cleanup

SHM = Path("/dev/shm")
# A container's /dev/shm is often 64 MiB: the run's hives, git repos and bench runs need
# more, so a smaller one is left alone (the disk is slower, not full).
MIN_FREE = 2 * 1024**3


def mount_options(path: Path, mounts: str = "/proc/self/mounts") -> tuple[str, list[str]] | None:
    """The file system type and options of the mount at exactly `path`, if it is one."""
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return None
    found = None
    for line in lines:  # the last mount on a path is the one seen
        fields = line.split()
        if len(fields) >= 4 and fields[1] == str(path):
            found = (fields[2], fields[3].split(","))
    return found


def use_tmpfs(environ=os.environ, shm: Path = SHM, mounts: str = "/proc/self/mounts") -> bool:
    """Point TMPDIR (what tempfile and every process the tests start use) at `shm` when
    it is a writable tmpfs that runs programs (tests write scripts there: a fake claude,
    hooks) with MIN_FREE bytes free, and neither TMPDIR nor PYTEST_DEBUG_TEMPROOT is set
    already (the caller's choice wins). Returns whether it did."""
    if environ.get("TMPDIR") or environ.get("PYTEST_DEBUG_TEMPROOT"):
        return False
    mount = mount_options(shm, mounts)
    if mount is None or mount[0] != "tmpfs" or "noexec" in mount[1] or "ro" in mount[1]:
        return False
    if not os.access(shm, os.W_OK | os.X_OK):
        return False
    fs = os.statvfs(shm)
    if fs.f_bavail * fs.f_frsize < MIN_FREE:
        return False
    environ["TMPDIR"] = str(shm)
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    return True


def short_basetemp(config: pytest.Config, shm: Path = SHM) -> Path | None:
    """Give the run a numbered base directory `<shm>/pt-<uid>/<n>`, made, locked and
    pruned (the last few runs kept) by pytest's own machinery, unless the caller chose
    one (--basetemp) or this is an xdist worker (the controller's is handed down).
    Called from pytest_configure, before anything asks for the base directory."""
    factory = config._tmp_path_factory
    if config.option.basetemp or hasattr(config, "workerinput") or factory._basetemp:
        return None
    root = shm / f"pt-{os.getuid()}"
    root.mkdir(mode=0o700, exist_ok=True)
    if root.is_symlink() or root.stat().st_uid != os.getuid():
        return None  # not ours: pytest's default place instead
    keep = 0 if factory._retention_policy == "none" else factory._retention_count
    base = make_numbered_dir_with_cleanup(
        prefix="",
        root=root,
        keep=keep,
        lock_timeout=LOCK_TIMEOUT,
        mode=0o700,
        register=factory._exit_stack.callback,
    )
    atexit.register(factory._exit_stack.close)  # as pytest does for its own
    factory._exit_stack.callback(atexit.unregister, factory._exit_stack.close)
    factory._basetemp = base
    return base

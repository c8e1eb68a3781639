"""The run's temporary files on a RAM file system when the machine has one.

Every hive a test builds writes git objects and refs through dulwich, which fsyncs each
file it closes, and sqlite, which syncs its journal: on a disk shared with other work an
fsync can wait hundreds of ms, and a test that makes a hive pays dozens of them. On tmpfs
an fsync returns at once; what the tests check (the bytes written, the git CLI reading
them back, sqlite's answers) is the same. The durability itself is the kernel's, never
asserted by a test."""

import os
import tempfile
from pathlib import Path

SHM = Path("/dev/shm")


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
    """Point TMPDIR (what pytest's tmp_path, tempfile and every process the tests start
    use) at `shm` when it is a writable tmpfs that runs programs (tests write scripts
    there: a fake claude, hooks), and TMPDIR is not set already (the caller's choice
    wins). Returns whether it did."""
    if environ.get("TMPDIR"):
        return False
    mount = mount_options(shm, mounts)
    if mount is None or mount[0] != "tmpfs" or "noexec" in mount[1] or "ro" in mount[1]:
        return False
    if not os.access(shm, os.W_OK | os.X_OK):
        return False
    environ["TMPDIR"] = str(shm)
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    return True

"""The suite's temporary files go to tmpfs only when it is one the tests can use, and
never over a TMPDIR the caller set."""

import os
import tempfile
from pathlib import Path

from support.tmpfs import mount_options, use_tmpfs


def mounts(tmp_path: Path, line: str) -> str:
    path = tmp_path / "mounts"
    path.write_text(f"/dev/vda / ext4 rw,relatime 0 0\n{line}\n")
    return str(path)


def test_a_usable_tmpfs_becomes_tmpdir(tmp_path, monkeypatch):
    shm = tmp_path / "shm"
    shm.mkdir()
    table = mounts(tmp_path, f"tmpfs {shm} tmpfs rw,nosuid,nodev 0 0")
    assert mount_options(shm, table) == ("tmpfs", ["rw", "nosuid", "nodev"])
    monkeypatch.setattr(tempfile, "tempdir", tempfile.tempdir)  # restored after the test
    env = {}
    assert use_tmpfs(env, shm, table) and env == {"TMPDIR": str(shm)}
    assert tempfile.tempdir is None


def test_no_tmpfs_a_noexec_or_read_only_one_or_a_set_tmpdir_is_left_alone(tmp_path):
    shm = tmp_path / "shm"
    shm.mkdir()
    for line in (
        f"/dev/vdb {shm} ext4 rw 0 0",
        f"tmpfs {shm} tmpfs rw,noexec 0 0",
        f"tmpfs {shm} tmpfs ro,nosuid 0 0",
        f"tmpfs {tmp_path / 'elsewhere'} tmpfs rw 0 0",
    ):
        env = {}
        assert not use_tmpfs(env, shm, mounts(tmp_path, line)) and env == {}, line
    env = {"TMPDIR": "/var/tmp"}
    assert not use_tmpfs(env, shm, mounts(tmp_path, f"tmpfs {shm} tmpfs rw 0 0"))
    assert env == {"TMPDIR": "/var/tmp"}
    assert not use_tmpfs({}, shm, str(tmp_path / "no-such-table"))


def test_a_small_tmpfs_is_left_alone(tmp_path, monkeypatch):
    """A container's 64 MiB /dev/shm would fill up: the disk is used instead."""
    shm = tmp_path / "shm"
    shm.mkdir()
    table = mounts(tmp_path, f"tmpfs {shm} tmpfs rw,nosuid,nodev 0 0")
    real = os.statvfs(shm)
    small = os.statvfs_result((*real[:4], 64 * 1024**2 // real.f_frsize, *real[5:]))
    monkeypatch.setattr(os, "statvfs", lambda path: small)
    env = {}
    assert not use_tmpfs(env, shm, table) and env == {}


def test_this_run_follows_the_rule(tmp_path):
    """Here, on a machine with a usable /dev/shm, the tests' directories are in it, in a
    base short enough for a hive's sockets a few levels below a long test name."""
    if mount_options(Path("/dev/shm")) is None or os.environ.get("TMPDIR") != "/dev/shm":
        return  # the caller chose TMPDIR, or this machine has no /dev/shm tmpfs
    assert tmp_path.is_relative_to("/dev/shm") and tempfile.gettempdir() == "/dev/shm"
    # shorter than pytest's own place on /tmp would have been (there, a hive's socket
    # below a long test name is already within a byte of the 107 a socket's path has)
    base = str(tmp_path.parent.parent if "popen-" in tmp_path.parent.name else tmp_path.parent)
    assert len(base) < len("/tmp/pytest-of-root/pytest-0"), base

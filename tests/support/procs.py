"""Processes and PTYs from outside: read a PTY until a pattern, whether a pid runs, and a
sandboxed process's host pid."""

import os
import re
import select
import time
from pathlib import Path


def read_until(fd: int, pattern: bytes, timeout: float = 30.0) -> re.Match:
    out = b""
    deadline = time.monotonic() + timeout
    while not (m := re.search(pattern, out)):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {pattern!r} in {out!r}")
        if select.select([fd], [], [], left)[0]:
            try:
                out += os.read(fd, 4096)
            except OSError:  # EIO: the shell closed the PTY
                raise AssertionError(f"the PTY closed before {pattern!r}: {out!r}") from None
    return m


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie counts as gone: it has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def proc_stat(pid: int) -> list[str]:
    """/proc/PID/stat fields after the command name: [state, ppid, pgrp, session, tty_nr…]."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


# What a shell says of itself, in its own pid namespace (a sandbox's) and the namespace.
WHOAMI = b"echo PID=$$ NS=$(readlink /proc/$$/ns/pid)\n"
WHOAMI_RE = rb"PID=(\d+) NS=(\S+)\r\n"


def host_pid(pid: int, ns: bytes | str) -> int:
    """The host's pid of the process that is `pid` in pid namespace `ns` (pid:[inode])."""
    ns = ns.decode() if isinstance(ns, bytes) else ns
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if os.readlink(proc / "ns" / "pid") != ns:
                continue
            status = (proc / "status").read_text()
        except OSError:
            continue
        nspids = next(x for x in status.splitlines() if x.startswith("NSpid:")).split()
        if int(nspids[-1]) == pid:
            return int(proc.name)
    raise AssertionError(f"no process {pid} in {ns}")

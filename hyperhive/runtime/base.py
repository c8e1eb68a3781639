"""What every runtime offers. Build output goes to `emit` one line at a time, as produced."""

import contextlib
import errno
import fcntl
import os
import shutil
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hyperhive.home import Home

Emit = Callable[[str], None]


class BuildError(Exception):
    """The build of an agent's config failed; the message says why in one line."""


# The host an agent runs on, as its status names it. Every runtime today runs its agents
# on the daemon's host; a placement across hosts (docs/multi-host.md) names the others.
LOCAL_HOST = "local"


# Runs as the child of `Shell.spawn`, the PTY on 0/1/2: leads a new session (it does
# already, unless a sandbox runs it: bwrap's pid 1 leads that one), takes the PTY as its
# controlling terminal, drops to the given ids, then execs the
# command. argv: uid gid groups path arg0 args... (uid "" = keep the ids). Python ignores
# SIGPIPE and SIGXFSZ and an ignored signal stays ignored across exec: restore them (or
# `yes | head` in the shell reports a broken pipe).
_LAUNCHER = """\
import fcntl, os, signal, sys, termios
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
if os.getsid(0) != os.getpid():
    os.setsid()
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
uid, gid, groups, path, *argv = sys.argv[1:]
if uid:
    os.setgroups([int(g) for g in groups.split(",") if g])
    os.setgid(int(gid))
    os.setuid(int(uid))
try:
    os.execv(path, argv)
except OSError as e:
    sys.exit(f"cannot run {path}: {e.strerror}")
"""


@dataclass
class Shell:
    """An interactive process on a PTY (the terminal): read its output from and write its
    input to `master`; `process` is the child, leader of its own session and process
    group with the PTY as its controlling terminal; `argv` is the command it runs."""

    master: int
    process: subprocess.Popen
    argv: list[str]

    @classmethod
    def spawn(
        cls,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
        user: tuple[int, int, Sequence[int]] | None = None,
        wrap: Sequence[str] = (),
    ) -> "Shell":
        """Start `argv` on a new PTY, in `cwd`, as `user` = (uid, gid, groups) if given
        (the caller must be root then); inside `wrap` if given, a command line that runs
        the rest (a sandbox: the paths, `argv[0]` on the PATH of `env` and this
        interpreter, must be the same inside it).

        Taking a controlling terminal needs setsid() then TIOCSCTTY in the child.
        subprocess does setsid() itself (start_new_session) but the ioctl would need
        `preexec_fn`, which runs Python between fork and exec and can deadlock in a
        threaded process like the daemon. So the child execs a tiny fresh interpreter
        (this one, `-I -S`: no site, no environment) that does the ioctl, drops to `user`
        and execs the command. It runs as the caller until the drop, so the interpreter
        need not be readable by `user` (a virtualenv under /root is not), and the session
        exists from the fork on, so `close` can always signal its process group."""
        argv = list(argv)
        path = shutil.which(argv[0], path=(env if env is not None else os.environ).get("PATH"))
        if path is None:
            raise FileNotFoundError(errno.ENOENT, "not found on PATH", argv[0])
        ids = ["", "", ""]  # the launcher's uid, gid, groups: keep the caller's
        if user is not None:
            ids = [str(user[0]), str(user[1]), ",".join(map(str, user[2]))]
        launcher = [os.path.realpath(sys.executable), "-I", "-S", "-c", _LAUNCHER]
        master, slave = os.openpty()
        try:
            if user is not None:
                os.fchown(slave, user[0], -1)  # as login(1) does: the user owns its tty
            process = subprocess.Popen(
                [*wrap, *launcher, *ids, path, *argv],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        return cls(master, process, argv)

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def exited(self) -> bool:
        """Whether the process ended, without reaping it: until `close` reaps it, its pid
        (and so its session id) cannot be reused, and `close` can still find its session."""
        if self.process.returncode is not None:
            return True
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        try:
            return os.waitid(os.P_PID, self.process.pid, flags) is not None
        except ChildProcessError:
            return True

    def close(self, timeout: float = 5.0) -> int:
        """Hang up: SIGHUP to every process group in the shell's session (background jobs
        are groups of their own, and a shell does not always pass a hang-up on), SIGKILL
        to the shell's group if it has not ended after `timeout`; close the PTY. The exit
        status. A process that left the session (setsid) or ignores SIGHUP (nohup) is
        left alone, as a terminal's hang-up would."""
        if self.process.returncode is None:  # not reaped: the session id is still ours
            for group in session_groups(self.process.pid) | {self.process.pid}:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, signal.SIGHUP)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        with contextlib.suppress(OSError):
            os.close(self.master)
        return self.process.returncode


def session_groups(sid: int) -> set[int]:
    """The process groups of the processes in session `sid`, from /proc."""
    groups = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:  # after the command name, which may hold spaces and parentheses
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended meanwhile
        if int(fields[3]) == sid:
            groups.add(int(fields[2]))
    return groups


class AgentDirs:
    """What the runtimes share: an agent's state directory, and the refusal to deploy an
    agent marked destroyed (its state is kept, it never runs again)."""

    home: Home

    def create(self, name: str) -> None:
        self.home.state_dir(name).mkdir(parents=True, exist_ok=True)

    def begin_update(self, name: str) -> None:
        """The first step of every `update`: BuildError for a destroyed agent, else
        `create` (an update may come before any create, after a crash)."""
        if self.home.is_destroyed(name):
            raise BuildError(
                f"agent {name} was destroyed (its state is kept): it is not deployed again"
            )
        self.create(name)


class Runtime(Protocol):
    # True: the agents are processes of this runtime object (local): the daemon starts
    # them at its start and after each deploy, stops them at its stop, and learns of an
    # unasked exit through `watch`. False (nixos-container): the agents run on their own
    # (containers); the daemon watches their `status`.
    supervised: bool
    # False: the agents run without their isolation (the local runtime with
    # `[local] sandbox = false`); the forge shows a red warning.
    sandboxed: bool

    def create(self, name: str) -> None:
        """Prepare a new agent (directories, container definition). Idempotent.

        Called when the agent's applied repo is created (`agent create`, `spawn`,
        `spawn_commit`), before its first config is even approved: nothing may run yet.
        What needs a deployed config (a container built from `meta#<name>`) is created
        by the first `update` at the latest: an agent exists in the runtime from its
        first successful deploy on."""

    def update(self, name: str, rev: str, emit: Emit) -> None:
        """Build the agent's config at `rev` and switch to it; raise BuildError on failure.
        Must refuse (BuildError) an agent marked destroyed (`Home.is_destroyed`)."""

    def check(self, name: str, rev: str, emit: Emit) -> dict:
        """Everything `update` does for `rev` short of switching to it (evaluation, the
        policy's checks, the build itself where the runtime builds), touching nothing
        deployed; the evaluated policy, or BuildError saying why it would fail. Safe to
        run beside a build and other checks (workflow/checks.py)."""

    def destroy(self, name: str) -> None:
        """Stop the agent and remove what the runtime made for it (container, deployed
        checkout, deployed policy). Never touches its state directory or its repos.
        Idempotent: destroying an agent that was never deployed does nothing."""

    def status(self, name: str) -> dict:
        """`{"state": ..., "revision": ...}` as the runtime sees the agent now, and
        `"host"` where it runs when that is not this host (listings default it to
        LOCAL_HOST)."""

    def start(self, name: str, emit: Emit | None = None) -> None:
        """Run the deployed agent: its harness (local: a `hyperhive harness` subprocess;
        nixos-container: the container, whose harness unit starts with it). A no-op when
        it runs the deployed revision; the local runtime restarts a harness that runs an
        older one. RuntimeCommandError on failure (nothing deployed, cannot start)."""

    def stop(self, name: str, emit: Emit | None = None) -> None:
        """Stop the agent (no-op when it is stopped); RuntimeCommandError on failure. An
        exit asked for this way is never reported as a crash."""

    def log_tail(self, name: str, lines: int = 40) -> list[str]:
        """The last lines of the agent's harness log (local: `logs/<name>/harness.log`;
        nixos-container: the container unit's journal), for crash reports."""

    def shell(self, name: str) -> Shell:
        """An interactive shell in the agent's container on a PTY (the web terminal).
        UnknownAgent for an unknown or destroyed agent, RuntimeCommandError when the shell
        cannot start."""

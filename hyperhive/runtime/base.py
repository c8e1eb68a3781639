"""What every runtime offers. Build output goes to `emit` one line at a time, as produced."""

import contextlib
import fcntl
import os
import signal
import struct
import subprocess
import termios
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from hyperhive.errors import HiveError

Emit = Callable[[str], None]


class BuildError(Exception):
    """The build of an agent's config failed; the message says why in one line."""


class RuntimeCommandError(HiveError):
    """A runtime command outside a build (start, stop, destroy) failed: which one, how."""


def _take_controlling_tty() -> None:  # runs in the child, after setsid, stdin is the PTY
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@dataclass
class Shell:
    """An interactive process on a PTY (the terminal issue): read its output from and
    write its input to `master`; `process` is the child, leader of its own session with
    the PTY as its controlling terminal."""

    master: int
    process: subprocess.Popen

    @classmethod
    def spawn(cls, argv: list[str], env: dict[str, str] | None = None) -> "Shell":
        master, slave = os.openpty()
        try:
            process = subprocess.Popen(
                argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=env,
                start_new_session=True,
                preexec_fn=_take_controlling_tty,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        return cls(master, process)

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def close(self, timeout: float = 5.0) -> int:
        """Hang up (SIGHUP to the session, SIGKILL after `timeout`), close the PTY;
        the exit status."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGHUP)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        with contextlib.suppress(OSError):
            os.close(self.master)
        return self.process.returncode


class Runtime(Protocol):
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

    def destroy(self, name: str) -> None:
        """Stop the agent and remove what the runtime made for it (container, deployed
        checkout, deployed policy). Never touches its state directory or its repos.
        Idempotent: destroying an agent that was never deployed does nothing."""

    def status(self, name: str) -> dict:
        """`{"state": ..., "revision": ...}` as the runtime sees the agent now."""

    def start(self, name: str, emit: Emit | None = None) -> None:
        """Run the deployed agent (no-op when it runs); RuntimeCommandError on failure.
        Not implemented by the local runtime yet (it arrives with the harness issue)."""

    def stop(self, name: str, emit: Emit | None = None) -> None:
        """Stop the agent (no-op when it is stopped); RuntimeCommandError on failure.
        Not implemented by the local runtime yet (it arrives with the harness issue)."""

    def shell(self, name: str) -> Shell:
        """An interactive root shell in the agent's container on a PTY (the terminal).
        Not implemented by the local runtime yet (it arrives with the terminal issue)."""

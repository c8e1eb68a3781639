"""The agent's web terminal: a websocket (flask-sock) attached to the PTY of the
runtime's `shell(name)`; the page side is static/terminal.js (xterm.js).

The protocol, on `/ws/terminal/<name>` (a `/ws/` path: auth.guard checks the operator's
session or token and the Origin on the handshake):

- server → client: binary frames are the PTY's output, raw bytes (xterm.js decodes the
  UTF-8, a character split across two frames included); text frames are JSON:
  `{"exit": code}` when the shell ended (then the socket closes), `{"error": "…"}`.
- client → server: binary frames are input for the PTY; text frames are JSON:
  `{"resize": [rows, cols]}`, `{"ack": n}`.

Flow control: the server reads the PTY only while fewer than WINDOW bytes it sent are
unacknowledged, and the client acknowledges output once xterm.js has drawn it. A flood
(`yes`) then fills the PTY's kernel buffer and its writer blocks: neither this process
nor the browser ever holds more than WINDOW bytes of it, and the page stays responsive
(Ctrl-C goes through at once: input is never held back).

Closing the socket (the tab) or the daemon stopping hangs up the shell: SIGHUP to its
process group, SIGKILL if it lingers (`Shell.close`). So does the end of the session (or
token) that opened it, checked every second (auth.still_allowed): a logout, a
password change or `hyperhive operator logout-all` also ends its open terminals.
"""

import contextlib
import json
import logging
import os
import select
import threading

from flask import Blueprint, g, request
from simple_websocket import ConnectionClosed

from forge_ui import auth
from forge_ui.context import hive
from forge_ui.views import live
from hyperhive.errors import HiveError, UnknownAgent
from hyperhive.runtime.base import Shell

bp = Blueprint("terminal", __name__)
log = logging.getLogger("hyperhive.terminal")

WINDOW = 256 * 1024  # unacknowledged output bytes at most
CHUNK = 64 * 1024  # one read of the PTY, one frame at most
TICK = 1.0  # seconds between checks of the socket and the daemon's shutdown
MAX_SIZE = 4096  # rows or columns a resize may ask for


class BadMessage(ValueError):
    """A control message the terminal does not understand; reported, not fatal."""


@bp.before_request
def known_agent():
    """Refuse an unknown or destroyed agent before the websocket handshake: a 404 the
    client sees, rather than a socket that opens and closes."""
    name = (request.view_args or {}).get("name", "")
    home = hive().home
    home.require_agent(name)
    if home.is_destroyed(name):
        raise UnknownAgent(f"agent {name} was destroyed (its state is kept): it has no shell")


@live.sock.route("/ws/terminal/<name>", bp=bp, endpoint="ws")
def terminal_ws(ws, name: str):
    try:
        shell = hive().runtime.shell(name)
    except (HiveError, OSError) as e:
        ws.send(json.dumps({"error": str(e)}))
        ws.close(1011, "no shell")
        return
    log.info("%s: terminal opened by %s (pid %d)", name, g.actor, shell.process.pid)
    try:
        relay = Relay(ws, shell, auth.still_allowed(), hive().stopping)
    except BaseException:  # no pipe for it (out of fds): the shell must not outlive the page
        shell.close()
        raise
    code = relay.run()
    log.info(
        "%s: terminal of %s closed (%s)",
        name,
        g.actor,
        f"exit {code}" if code is not None else "hung up",
    )


class Relay:
    """Copies the PTY's output to the socket (this thread, flow-controlled) and the
    socket's input to the PTY (a helper thread), until either side ends."""

    def __init__(
        self, ws, shell: Shell, allowed=lambda: True, stopping: threading.Event | None = None
    ):
        self.ws, self.shell = ws, shell
        self.allowed = allowed  # False once the session or token that opened it ended
        self.stopping = stopping or threading.Event()  # the daemon's stop (Hive.stopping)
        self.unacked = 0  # output bytes sent and not yet acknowledged
        self.window = threading.Condition()
        self.send_lock = threading.Lock()  # one frame at a time from our two threads
        self.done = threading.Event()
        self.wake_r, self.wake_w = os.pipe()  # wakes the output loop's select when done
        os.set_blocking(shell.master, False)

    def run(self) -> int | None:
        """Relay until the shell exits or the socket closes; then hang up the shell.
        The shell's exit status (None if it was still running: the client left)."""
        reader = threading.Thread(target=self.input_loop, name="terminal-input", daemon=True)
        reader.start()
        try:
            exited = self.output_loop()
        finally:
            self.stop()
            # The reader first: a write racing close() could land on a reused fd number.
            reader.join(TICK * 5)
            code = self.shell.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
        if exited:
            with contextlib.suppress(ConnectionClosed):
                self.send(json.dumps({"exit": code}))
            return code
        if not self.allowed():
            with contextlib.suppress(ConnectionClosed):
                self.send(json.dumps({"error": "your session ended: log in again"}))
                self.ws.close(1008, "session ended")
        return None

    def stop(self) -> None:
        if not self.done.is_set():
            self.done.set()
            with self.window:
                self.window.notify_all()
            with contextlib.suppress(OSError):
                os.write(self.wake_w, b"x")

    def running(self) -> bool:
        return (
            not self.done.is_set()
            and self.ws.connected
            and not self.stopping.is_set()
            and self.allowed()
        )

    def send(self, data: bytes | str) -> None:
        with self.send_lock:
            self.ws.send(data)

    # -- PTY → socket ---------------------------------------------------------------------

    def output_loop(self) -> bool:
        """True when the shell ended (its PTY hung up, or it exited), False when the
        socket or the daemon did."""
        master = self.shell.master
        while self.running():
            with self.window:
                if self.unacked >= WINDOW:
                    self.window.wait(TICK)
                    continue
                room = WINDOW - self.unacked
            readable = select.select([master, self.wake_r], [], [], TICK)[0]
            if master not in readable:
                if self.shell.exited():
                    return True  # exited; what it printed was read (the PTY is quiet)
                continue
            data, ended = self.read(min(room, CHUNK))
            if not data:
                if ended:
                    return True
                continue
            with self.window:
                self.unacked += len(data)
            try:
                self.send(data)
            except ConnectionClosed:
                return False
        return False

    def read(self, limit: int) -> tuple[bytes, bool]:
        """Up to `limit` bytes the PTY has ready (a PTY read gives at most a few KiB:
        gathering them makes fewer frames and acks); and whether the PTY hung up (EIO:
        every process on its side closed it)."""
        parts, size = [], 0
        while size < limit:
            try:
                part = os.read(self.shell.master, limit - size)
            except BlockingIOError:
                break
            except OSError:
                return b"".join(parts), True
            if not part:
                return b"".join(parts), True
            parts.append(part)
            size += len(part)
        return b"".join(parts), False

    # -- socket → PTY ---------------------------------------------------------------------

    def input_loop(self) -> None:
        try:
            while self.running():
                message = self.ws.receive(timeout=TICK)
                if message is None:
                    continue
                if isinstance(message, bytes):
                    self.write(message)
                    continue
                try:
                    self.control(message)
                except BadMessage as e:
                    self.send(json.dumps({"error": str(e)}))
        except ConnectionClosed:
            pass
        except OSError as e:  # the PTY went away under a write: the output loop ends too
            log.info("terminal input stopped: %s", e)
        finally:
            self.stop()

    def write(self, data: bytes) -> None:
        """All of `data` to the PTY, waiting while its input buffer is full (a shell that
        does not read) without ever blocking past the end of the session."""
        view = memoryview(data)
        while view and not self.done.is_set():
            try:
                view = view[os.write(self.shell.master, view) :]
            except BlockingIOError:
                select.select([], [self.shell.master], [], TICK)

    def control(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            raise BadMessage(f"not JSON: {text[:80]!r}") from None
        if not isinstance(message, dict) or len(message) != 1:
            raise BadMessage('expected {"resize": [rows, cols]} or {"ack": bytes}')
        if "ack" in message:
            n = message["ack"]
            if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
                raise BadMessage(f"ack must be a positive byte count, not {n!r}")
            with self.window:
                over = n > self.unacked
                self.unacked = max(0, self.unacked - n)
                self.window.notify_all()
            if over:
                raise BadMessage(f"ack of {n} bytes: more than was sent and not yet acknowledged")
        elif "resize" in message:
            size = message["resize"]
            if not (
                isinstance(size, list)
                and len(size) == 2
                and all(type(v) is int and 1 <= v <= MAX_SIZE for v in size)
            ):
                raise BadMessage(f"resize must be [rows, cols], each 1 to {MAX_SIZE}: {size!r}")
            self.shell.resize(*size)
        else:
            raise BadMessage(f"unknown message {next(iter(message))!r}")

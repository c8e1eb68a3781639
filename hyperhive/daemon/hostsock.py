"""`run/host.sock`: the operator/CLI socket. One JSON object per line each way.

Only the hive's owner (and the admin group, mode 0660) can connect, so a request on this
socket is the operator's. Requests: `{"op": "ping"}`, `{"op": "deploy", "agent", "id"}`.
"""

import json
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path

from hyperhive.errors import HiveError

log = logging.getLogger("hyperhive.daemon")

Handler = Callable[[dict], dict]
MAX_LINE = 1 << 20


class DaemonUnavailable(Exception):
    """No daemon answers on the socket (none running, or a stale socket file)."""


def call(path: Path, request: dict, timeout: float = 10.0) -> dict:
    """Send one request and return the reply; raise HiveError if the daemon refused it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError) as e:
        sock.close()
        raise DaemonUnavailable(str(e)) from e
    with sock, sock.makefile("rwb") as f:
        f.write(json.dumps(request).encode() + b"\n")
        f.flush()
        line = f.readline(MAX_LINE)
    if not line:
        raise DaemonUnavailable("the daemon closed the connection without a reply")
    reply = json.loads(line)
    if not reply.get("ok"):
        raise HiveError(reply.get("error", "the daemon refused the request"))
    return reply


def _answer(handler: Handler, line: bytes) -> dict:
    try:
        request = json.loads(line)
        if not isinstance(request, dict):
            raise ValueError("a request is a JSON object")
    except ValueError as e:
        return {"ok": False, "error": f"malformed request: {e}"}
    try:
        return {"ok": True, **handler(request)}
    except HiveError as e:
        return {"ok": False, "error": str(e)}
    except Exception as e:  # one bad request must not take the socket down
        log.exception("host socket request %r failed", request)
        return {"ok": False, "error": f"internal error: {e}"}


class HostSocket:
    def __init__(self, path: Path, handler: Handler):
        self.path = path
        self.handler = handler
        self.server: socketserver.ThreadingUnixStreamServer | None = None

    def check_free(self) -> None:
        """Refuse if a live daemon answers on the path; remove a dead one's socket file."""
        if self.path.exists():
            try:
                call(self.path, {"op": "ping"}, timeout=2)
            except (DaemonUnavailable, OSError):
                self.path.unlink()  # left behind by a daemon that died
            else:
                raise HiveError(f"a daemon is already running on {self.path}")

    def start(self) -> None:
        self.check_free()
        handler = self.handler

        class Session(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while line := self.rfile.readline(MAX_LINE):
                    reply = _answer(handler, line)
                    self.wfile.write(json.dumps(reply).encode() + b"\n")

        self.path.parent.mkdir(parents=True, exist_ok=True)
        old_umask = os.umask(0o117)  # the socket is created 0660
        try:
            self.server = socketserver.ThreadingUnixStreamServer(str(self.path), Session)
        finally:
            os.umask(old_umask)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="host.sock", daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.path.unlink(missing_ok=True)

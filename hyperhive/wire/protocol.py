"""The sockets' protocol, client half: one JSON object per line each way, `{"op": …}` out,
`{"ok": true, …}` or `{"ok": false, "error": …}` back. The server half is
hyperhive/daemon/hostsock.py."""

import json
import socket
from pathlib import Path

from hyperhive.errors import HiveError

MAX_LINE = 1 << 20  # a request or reply line, either way


class DaemonUnavailable(Exception):
    """No daemon answers on the socket (none running, or a stale socket file)."""


def call(path: Path | str, request: dict, timeout: float = 10.0) -> dict:
    """Send one request and return the reply; raise HiveError if the daemon refused it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError) as e:
        sock.close()
        raise DaemonUnavailable(str(e)) from e
    # The request goes out with sendall, not through a buffered writer: closing one flushes
    # it again, and an exception raised by a signal handler while the reply was awaited
    # (the harness's SIGTERM) came out as that flush's BrokenPipeError, the stop lost.
    with sock:
        sock.sendall(json.dumps(request).encode() + b"\n")
        with sock.makefile("rb") as f:
            line = f.readline(MAX_LINE)
    if not line:
        raise DaemonUnavailable("the daemon closed the connection without a reply")
    reply = json.loads(line)
    if not reply.get("ok"):
        raise HiveError(reply.get("error", "the daemon refused the request"))
    return reply

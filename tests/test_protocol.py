"""The sockets' client half (wire/protocol.py) against a real unix socket server."""

import contextlib
import os
import signal
import socket
import threading
from pathlib import Path

import pytest

from hyperhive.wire.protocol import DaemonUnavailable, call


class Stop(BaseException):
    """What the harness's SIGTERM handler raises (harness/loop.py)."""


def test_a_signal_while_the_reply_is_awaited_comes_out_as_its_own_exception(tmp_path: Path):
    # The server signals the caller after reading its request, then answers and hangs up:
    # the handler's exception must leave call() as itself. Through a buffered writer, about
    # one call in four ended as BrokenPipeError (its close flushed again) and the harness
    # went on waiting until its SIGKILL 10 s later.
    path = tmp_path / "s.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                if conn.makefile("rb").readline():
                    os.kill(os.getpid(), signal.SIGTERM)
                    with contextlib.suppress(OSError):  # the caller may be gone
                        conn.sendall(b'{"ok": true}\n')

    def stop(signum, frame):
        raise Stop

    threading.Thread(target=serve, daemon=True).start()
    previous = signal.signal(signal.SIGTERM, stop)
    outcomes = []
    try:
        for _ in range(40):
            try:
                try:
                    call(path, {"op": "turn_report", "report": {"x": "y" * 1000}})
                    outcomes.append("answered")
                except Stop:
                    outcomes.append("stop")
                except Exception as e:  # noqa: BLE001 - what the harness would swallow
                    outcomes.append(type(e).__name__)
                # a signal not yet handled lands by the next bytecode: wait for it
                threading.Event().wait(0.001)
            except Stop:
                outcomes.append("stop")
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.close()
    assert all(o in ("stop", "answered") for o in outcomes), outcomes
    assert outcomes.count("stop") >= 40, outcomes


def test_no_server_is_daemon_unavailable(tmp_path: Path):
    with pytest.raises(DaemonUnavailable):
        call(tmp_path / "none.sock", {"op": "ping"})

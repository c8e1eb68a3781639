"""The daemon's listener under slow and idle clients (hyperhive/daemon/httpworker.py): they
wait in its event loop, not in the threads that serve requests, and are cut at deadlines."""

import contextlib
import socket
import urllib.request

import pytest
import simple_websocket
from support.daemon import Daemon, bearer

from hyperhive.daemon import up
from hyperhive.settings import Http

HALF_HEAD = b"GET /login HTTP/1.1\r\nHost: x\r\n"  # and never the empty line that ends it


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("slow") / "hive"
    root.mkdir()
    (root / "hyperhive.toml").write_text(
        "[http]\nheader_seconds = 2\nbody_seconds = 2\nwebsockets = 2\n"
    )
    d = Daemon(root).start()
    yield d
    d.kill()


def connect(daemon, data: bytes = b"") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", daemon.port), timeout=15)
    if data:
        s.sendall(data)
    return s


def answer(s: socket.socket) -> bytes:
    """Everything until the daemon closes the connection."""
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def test_slow_clients_take_no_thread_and_are_cut_at_the_deadline(daemon):
    # More half-sent requests than the daemon has threads (requests and websockets).
    slow = [connect(daemon, HALF_HEAD) for _ in range(up.THREADS + 2 + 16)]
    # A request whose body stops short: it waits in the loop too, until its deadline.
    slow.append(connect(daemon, b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx"))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/login", timeout=10) as r:
            assert r.status == 200 and b"password" in r.read()
        assert daemon.get("/api/state")["agents"][0]["name"] == "manager"
        # ... and then each of them is answered 408 and closed at the header deadline.
        for s in (slow[0], slow[-1]):
            assert answer(s).startswith(b"HTTP/1.1 408 ")
    finally:
        for s in slow:
            s.close()


def test_bodies_without_a_length_only_for_git_and_heads_are_bounded(daemon):
    chunked = b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    with connect(daemon, chunked) as s:
        assert answer(s).startswith(b"HTTP/1.1 411 ")
    huge = HALF_HEAD + b"X-Pad: " + b"a" * (70 * 1024) + b"\r\n\r\n"
    with connect(daemon) as s:
        with contextlib.suppress(OSError):  # closed while still sending: the answer says why
            s.sendall(huge)
        assert answer(s).startswith(b"HTTP/1.1 431 ")


def test_websockets_have_their_own_budget(daemon):
    url = f"ws://127.0.0.1:{daemon.port}/ws/dashboard"
    open_ = [simple_websocket.Client.connect(url, headers={"Authorization": bearer(daemon)})]
    try:
        open_.append(
            simple_websocket.Client.connect(url, headers={"Authorization": bearer(daemon)})
        )
        with pytest.raises(simple_websocket.ConnectionError) as refused:
            simple_websocket.Client.connect(url, headers={"Authorization": bearer(daemon)})
        assert refused.value.status_code == 503
        # the budget is the websockets': plain requests still have their threads
        assert daemon.get("/api/state")["errors"] == []
    finally:
        for ws in open_:
            ws.close()


def test_connections_take_at_most_half_the_open_files():
    assert up.limits(Http(), 1024).max_connections == 512
    assert up.limits(Http(max_connections=100), 1 << 20).max_connections == 100
    assert up.limits(Http(), 20).max_connections == 16  # never fewer than that

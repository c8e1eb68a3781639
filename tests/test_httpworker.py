"""The worker's loop and a websocket's own reader share the connection's socket: the
websocket library's thread closes it when the peer's close arrives, at any moment
relative to the loop's graceful close. In-process, on real sockets and a real selector."""

import platform
import selectors
import socket
import threading
import types
from collections import OrderedDict, deque
from concurrent.futures import Future

from support.wait import wait_for

from hyperhive.daemon.httpworker import GuardedWorker
from hyperhive.settings import Http


def loop_worker() -> GuardedWorker:
    """A GuardedWorker with only what its loop's accept and close paths use."""
    worker = object.__new__(GuardedWorker)
    worker.cfg = types.SimpleNamespace(is_ssl=False)
    worker.limits = Http()
    worker.poller = selectors.DefaultSelector()
    worker.heads, worker.bodies, worker.closing = OrderedDict(), OrderedDict(), OrderedDict()
    worker.pending_conns = deque()
    worker.nr_conns, worker.buffered, worker.websockets = 0, 0, 0
    worker.alive = True
    return worker


def test_a_websocket_closed_by_its_reader_after_the_loop_lingers_frees_its_fd():
    worker = loop_worker()
    listener = socket.create_server(("127.0.0.1", 0))
    clients = [socket.create_connection(listener.getsockname()) for _ in range(2)]
    try:
        worker.accept(listener)
        (conn,) = worker.heads
        worker.heads.clear()
        worker.poller.unregister(conn.sock)  # the loop hands a finished head to a thread
        conn.websocket = True
        worker.websockets = 1
        fd = conn.sock.fileno()

        served = Future()
        served.set_result(False)  # no keep-alive: gthread closes it gracefully
        worker.finish_request(conn, served)
        assert worker.websockets == 0 and conn in worker.closing
        conn.sock.close()  # simple_websocket's reader, on the peer's close frame

        # The kernel hands the freed number to the next connection: the loop must take it.
        worker.accept(listener)
        (new,) = worker.heads
        assert new.sock.fileno() == fd
        assert worker.poller.get_key(new.sock).data.args == (new,)

        # The lingering websocket ends at its deadline without touching the new one.
        worker.closing[conn] = 0.0
        worker.murder_pending()
        assert not worker.closing
        assert worker.poller.get_key(new.sock).data.args == (new,)
        assert worker.nr_conns == 1
        clients[1].sendall(b"GET / HTTP/1.1\r\n")  # half a head
        worker.poller.select(5)
        worker.on_request_data(new, new.sock)  # read by the loop as any head is
        assert bytes(new.buf) == b"GET / HTTP/1.1\r\n"
    finally:
        for c in clients:
            c.close()
        listener.close()
        worker.poller.close()


RECVFROM = {"x86_64": 45, "aarch64": 207}[platform.machine()]


def in_recv(thread: threading.Thread) -> bool:
    """Whether the thread is blocked in the recvfrom system call."""
    with open(f"/proc/self/task/{thread.native_id}/syscall") as f:
        return f.read().split()[0] == str(RECVFROM)


def test_a_websocket_whose_peer_never_closes_wakes_its_reader_at_the_deadline():
    worker = loop_worker()
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())  # never closes
    try:
        worker.accept(listener)
        (conn,) = worker.heads
        worker.heads.clear()
        worker.poller.unregister(conn.sock)
        conn.websocket = True
        worker.websockets = 1
        conn.sock.setblocking(True)  # as the thread left it
        got = []
        reader = threading.Thread(target=lambda: got.append(conn.sock.recv(4096)))
        reader.start()  # simple_websocket's reader, waiting for the peer's close frame
        wait_for(lambda: in_recv(reader), what="the reader to block in recv")

        served = Future()
        served.set_result(False)
        worker.finish_request(conn, served)
        assert client.recv(1) == b""  # the loop's FIN reached the peer
        assert reader.is_alive()
        worker.closing[conn] = 0.0
        worker.murder_pending()
        reader.join(30)
        assert got == [b""] and worker.nr_conns == 0
    finally:
        client.close()
        listener.close()
        worker.poller.close()

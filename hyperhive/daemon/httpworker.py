"""The daemon's gunicorn worker: gunicorn's `gthread` worker, changed so that a connection
gets one of its threads only once its whole request head (and a small body) has arrived.

gunicorn's own gthread hands a connection to a thread at accept; the thread waits up to 5 s
for a first byte and then reads the head with no limit, so 64 clients that send half a
head hold all 64 threads for as long as they like. Here every connection is read in the
worker's event loop (the selector gthread already runs for kept-alive connections):

The limits are the `[http]` settings (hyperhive/settings.py):

- the request line and headers must arrive within `header_seconds` and fit `MAX_HEAD`
  bytes (else 408 / 431 and the connection is closed);
- a body declared with `Content-Length` up to `PREREAD_BYTES` (the forge's
  MAX_CONTENT_LENGTH too) must then arrive within `body_seconds`, read in the loop as well;
- a larger body (a git push) is read by the thread, which only /git/ requests stream
  (`Transfer-Encoding` elsewhere is a 411): the git remote checks the token before it
  reads a byte, so only a token holder can send one;
- in a thread, a read or a write that waits over `io_seconds` ends the connection, so a
  client that stops reading its answer frees the thread too;
- websockets hold their thread for their whole life, so they have their own budget
  (`websockets`; the next handshake is a 503): the rest of the threads always serve
  plain requests;
- at `max_connections` the oldest connection still sending its head is dropped for a new
  one, and the oldest unfinished requests are dropped while those in the loop hold over
  `MAX_BUFFERED` bytes;
- connections close in the loop too (gthread's graceful close lingers up to 2 s on the
  loop's thread, which one client that never closes would stall).

Every response closes its connection (no keep-alive): each request is read this way, and
on the loopback a new connection costs nothing; a TLS proxy in front keeps its own.
"""

import contextlib
import errno
import logging
import selectors
import socket
import time
from collections import OrderedDict
from functools import partial
from urllib.parse import urlsplit

from gunicorn.workers.gthread import TConn, ThreadWorker

from hyperhive.settings import Http

log = logging.getLogger("hyperhive.daemon")

MAX_HEAD = 64 * 1024  # the request line and headers, at most
PREREAD_BYTES = 64 * 1024  # bodies up to this are read before a thread is taken
RECV_BYTES = 64 * 1024
MAX_BUFFERED = 64 * 1024 * 1024  # of unfinished requests in the loop, all together
LINGER_SECONDS = 2.0  # a closed connection's unread input is drained this long at most
STREAMED_PREFIXES = ("/git/",)  # the only paths that may send a body without a length


class Conn(TConn):
    """A connection and what the loop has read of its request so far."""

    def __init__(self, worker: "GuardedWorker", sock, client, server):
        super().__init__(worker.cfg, sock, client, server)
        self.worker = worker
        self.buf = bytearray()
        self.held = 0  # of buf, counted in the worker's `buffered`
        self.need: int | None = None  # bytes of head + body, once the head is in
        self.websocket = False

    def init(self) -> None:
        first = not self.initialized
        super().init()  # in the thread: blocking socket, gunicorn's parser
        if first:
            self.parser.unreader.unread(bytes(self.buf))
            self.buf = bytearray()
            self.sock.settimeout(self.worker.limits.io_seconds)

    def close(self, graceful: bool = False) -> None:
        if graceful:
            self.worker.linger(self)
        else:
            super().close()


def _head_fields(head: bytes) -> tuple[str, dict[str, list[str]]]:
    """The request target's path and the header fields (lower-case names) of a head."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    path = urlsplit(parts[1]).path if len(parts) == 3 else ""
    fields: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            fields.setdefault(name.strip().lower(), []).append(value.strip())
    return path, fields


class GuardedWorker(ThreadWorker):
    """gthread whose loop reads each request before a thread serves it (module doc)."""

    limits = Http()

    @classmethod
    def with_limits(cls, limits: Http) -> type["GuardedWorker"]:
        return type(cls.__name__, (cls,), {"limits": limits})

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Each in the order of its deadline (the same delay for every entry).
        self.heads: OrderedDict[Conn, float] = OrderedDict()
        self.bodies: OrderedDict[Conn, float] = OrderedDict()
        self.closing: OrderedDict[Conn, float] = OrderedDict()
        self.websockets = 0
        self.buffered = 0  # bytes in the buffers of the connections the loop reads
        self.warned = -60.0  # when running out of file descriptors was last logged

    # -- reading a request in the loop ---------------------------------------------------

    def accept(self, listener) -> None:
        try:
            sock, client = listener.accept()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):
                now = time.monotonic()
                if now - self.warned > 60:
                    log.warning("out of file descriptors: dropping unfinished requests")
                    self.warned = now
                if not self._drop_oldest():
                    time.sleep(0.05)  # nothing of ours to free: do not spin on accept
            elif e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = Conn(self, sock, client, listener.getsockname())
        self.heads[conn] = time.monotonic() + self.limits.header_seconds
        self.poller.register(sock, selectors.EVENT_READ, partial(self.on_request_data, conn))
        if self.nr_conns >= self.limits.max_connections:
            self._drop_oldest()

    def _drop_oldest(self) -> bool:
        """Close the oldest connection still sending its head; whether there was one."""
        if not self.heads:
            return False
        self._discard(next(iter(self.heads)))
        return True

    def on_request_data(self, conn: Conn, sock) -> None:
        self._read(conn, sock)
        while self.buffered > MAX_BUFFERED and (self.heads or self.bodies):
            self._discard(next(iter(self.heads or self.bodies)))

    def _read(self, conn: Conn, sock) -> None:
        want = RECV_BYTES if conn.need is None else min(RECV_BYTES, conn.need - len(conn.buf))
        try:
            data = sock.recv(want)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # gone before its request was complete
            self._discard(conn)
            return
        conn.buf += data
        conn.held += len(data)
        self.buffered += len(data)
        if conn.need is None:
            # Empty lines before a request line are allowed (and skipped by gunicorn).
            lead = len(conn.buf) - len(conn.buf.lstrip(b"\r\n"))
            end = conn.buf.find(b"\r\n\r\n", max(lead, len(conn.buf) - len(data) - 3))
            if end < 0 or end + 4 > MAX_HEAD:
                if len(conn.buf) > MAX_HEAD:
                    self._refuse(conn, 431, "Request Header Fields Too Large")
                return
            if not self._head_done(conn, lead, end + 4):
                return
        if len(conn.buf) >= conn.need:
            self._dispatch(conn)

    def _head_done(self, conn: Conn, start: int, head_end: int) -> bool:
        """Decide what else to read; False if the request was answered here."""
        path, fields = _head_fields(bytes(conn.buf[start:head_end]))
        conn.need = head_end
        self.heads.pop(conn, None)
        if "transfer-encoding" in fields:
            if not path.startswith(STREAMED_PREFIXES):
                self._refuse(conn, 411, "Length Required")
                return False
        elif (
            len(lengths := fields.get("content-length", [])) == 1
            and lengths[0].isdigit()
            and int(lengths[0]) <= PREREAD_BYTES
        ):  # anything else is gunicorn's to refuse, or a large body the thread reads
            conn.need += int(lengths[0])
        if "websocket" in ",".join(fields.get("upgrade", [])).lower():
            if self.websockets >= self.limits.websockets:
                self._refuse(conn, 503, "Service Unavailable", "too many open websockets")
                return False
            conn.websocket = True
        if len(conn.buf) < conn.need:
            self.bodies[conn] = time.monotonic() + self.limits.body_seconds
            if "100-continue" in ",".join(fields.get("expect", [])).lower():
                with contextlib.suppress(OSError):  # the client waits for it to send
                    conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _dispatch(self, conn: Conn) -> None:
        self._release(conn)
        self.bodies.pop(conn, None)
        self.poller.unregister(conn.sock)
        if conn.websocket:
            self.websockets += 1
        conn.data_ready = True  # gthread's handle must not wait for data again
        self.enqueue_req(conn)

    def finish_request(self, conn: Conn, fs) -> None:
        if conn.websocket:  # called once: no keep-alive
            self.websockets -= 1
        super().finish_request(conn, fs)

    def _refuse(self, conn: Conn, status: int, reason: str, text: str | None = None) -> None:
        body = f"{text or reason}\n".encode()
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(OSError):  # best effort: the socket is non-blocking
            conn.sock.send(head.encode() + body)
        self._discard(conn)

    def _discard(self, conn: Conn) -> None:
        """Close a connection the loop holds (not one a thread has)."""
        self._release(conn)
        for waiting in (self.heads, self.bodies, self.closing):
            waiting.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)
        self.nr_conns -= 1
        with contextlib.suppress(OSError):
            if conn.websocket:  # wakes its reader if still blocked in recv (see linger)
                conn.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _release(self, conn: Conn) -> None:
        self.buffered -= conn.held
        conn.held = 0

    # -- closing in the loop -------------------------------------------------------------

    def linger(self, conn: Conn) -> None:
        """gunicorn's graceful close (FIN, then drain what the client still sends until it
        closes), without blocking the loop: the drain is the poller's.

        A websocket's socket is also its reader thread's (simple_websocket), which drains
        it and closes it when the peer's close arrives, at any moment: registered here, its
        number could be freed and given to the next connection while the selector still
        holds it, and that accept would fail. So the loop only waits for its deadline."""
        self.nr_conns += 1  # finish_request counted it out already; it still holds an fd
        try:
            conn.sock.shutdown(socket.SHUT_WR)
            if not conn.websocket:
                conn.sock.setblocking(False)
                self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._drain, conn))
        except (OSError, ValueError, KeyError):
            self._discard(conn)
            return
        self.closing[conn] = time.monotonic() + LINGER_SECONDS

    def _drain(self, conn: Conn, sock) -> None:
        try:
            if sock.recv(RECV_BYTES):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._discard(conn)

    # -- deadlines -----------------------------------------------------------------------

    def murder_pending(self) -> None:
        """gthread calls this once per loop turn: end whoever is past its deadline."""
        super().murder_pending()
        now = time.monotonic()
        stopping = not self.alive  # a stopping worker starts no new request
        while self.heads and (stopping or next(iter(self.heads.values())) <= now):
            self._refuse(next(iter(self.heads)), 408, "Request Timeout")
        while self.bodies and (stopping or next(iter(self.bodies.values())) <= now):
            self._refuse(next(iter(self.bodies)), 408, "Request Timeout")
        while self.closing and next(iter(self.closing.values())) <= now:
            self._discard(next(iter(self.closing)))

    # -- in the thread ------------------------------------------------------------------

    def handle_request(self, req, conn: Conn):
        try:
            return super().handle_request(req, conn)
        except TimeoutError:  # a read or write of this request waited over io_seconds
            log.info("%s: waited over %ss for the client", conn.client, self.limits.io_seconds)
            return False

"""`run/host.sock`: the operator/CLI socket. One JSON object per line each way.

Only the hive's owner (and the admin group, mode 0660) can connect to host.sock, so a
request there is the operator's; each agent's socket (0600) speaks for that agent alone.
The ops are in hyperhive/daemon/ops.py; the client half of the protocol (`call`) is
hyperhive/wire/protocol.py.

Bounded: each socket serves at most `max_connections` at once (one thread each; one more
is answered `{"ok": false}` and closed), and a connection that sends no complete line for
`IDLE_SECONDS`, or does not read its reply for as long, is closed.
"""

import contextlib
import json
import logging
import os
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from hyperhive.errors import HiveError
from hyperhive.wire.protocol import MAX_LINE, DaemonUnavailable, call

log = logging.getLogger("hyperhive.daemon")

Handler = Callable[[dict], dict]
# Pipelined requests answered together: a result each, in order (the reply's fields, or
# the error raised), so that sends can share a commit (daemon/ops.py Ops.pipelined). It
# yields them in pieces (lists), each written at once in one write: a batch of large
# replies (recvs) is never held whole, a reply never waits for a later request (a
# long-poll), and what follows a failed write is not run.
Many = Callable[[list[dict]], Iterable[list]]
MAX_PIPELINE = 256  # requests answered together at most (broker/group.MAX_GROUP)
IDLE_SECONDS = 60.0  # every client sends its line at once; a long-poll waits in the op
HOST_CONNECTIONS = 64  # the CLI and the hooks
AGENT_CONNECTIONS = 16  # a harness and its claude's MCP server; a recv holds one each


class _Refused(dict):
    """The reply refusing a line that is no request (told apart by its type: a request
    may carry any key)."""


def _parse(line: bytes) -> dict:
    """The request on `line`, or a _Refused reply."""
    try:
        request = json.loads(line)
        if not isinstance(request, dict):
            raise ValueError("a request is a JSON object")
    except ValueError as e:
        return _Refused(ok=False, error=f"malformed request: {e}")
    except RecursionError:
        return _Refused(ok=False, error="malformed request: nested too deeply")
    return request


def _reply(request: dict, result: dict | BaseException) -> dict:
    if not isinstance(result, BaseException):
        return {"ok": True, **result}
    if isinstance(result, HiveError):
        return {"ok": False, "error": str(result)}
    # one bad request must not take the socket down
    log.error("host socket request %r failed", request, exc_info=result)
    return {"ok": False, "error": f"internal error: {result}"}


def _answer(handler: Handler, line: bytes) -> dict:
    request = _parse(line)
    if isinstance(request, _Refused):
        return request
    try:
        return _reply(request, handler(request))
    except Exception as e:
        return _reply(request, e)


def _answers(many: Many, lines: list[bytes]) -> Iterator[list[dict]]:
    """The replies to pipelined `lines`, in order, in pieces as they are known: the
    well-formed requests answered by `many` together (its results in their order), the
    malformed refused in their place. What is known is given out before `many` is asked
    for more (which may wait: a long-poll recv)."""
    parsed = [_parse(line) for line in lines]
    requests = [p for p in parsed if not isinstance(p, _Refused)]
    pieces = iter(many(requests) if requests else ())
    known: deque = deque()
    failed: Exception | None = None
    out: list[dict] = []
    for p in parsed:
        if isinstance(p, _Refused):
            out.append(p)
            continue
        while not known and failed is None:
            if out:
                yield out
                out = []
            try:
                known.extend(next(pieces))
            except StopIteration:
                failed = RuntimeError("the request got no answer")
            except Exception as e:  # the rest get it too: nothing will answer them
                failed = e
        out.append(_reply(p, known.popleft() if known else failed))
    if out:
        yield out


class Lines:
    """A connection's request lines, read from the socket in chunks of up to CHUNK: what a
    client wrote before waiting for replies is then here already, and `ready()` says so
    without a read that could block (a buffered file object cannot tell)."""

    CHUNK = 1 << 16

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()

    def ready(self, limit: int = MAX_LINE + 1) -> bool:
        """A whole line of at most `limit` bytes is buffered."""
        return self.buf.find(b"\n", 0, limit) >= 0

    def readline(self, limit: int) -> bytes:
        """The next line, newline included, of at most `limit` bytes (a longer line comes
        in pieces of `limit`); at the end, what is left, then b"". A read waits at most
        the socket's timeout (TimeoutError)."""
        searched = 0
        while True:
            end = self.buf.find(b"\n", searched, limit)
            if end >= 0:
                size = end + 1
            elif len(self.buf) >= limit:
                size = limit
            else:
                searched = len(self.buf)
                chunk = self.sock.recv(self.CHUNK)
                if chunk:
                    self.buf += chunk
                    continue
                size = len(self.buf)  # the end: what is left, unfinished
            line = bytes(self.buf[:size])
            del self.buf[:size]
            return line


class HostSocket:
    """A JSON-lines server on a Unix socket; `mode` is the socket file's permissions."""

    def __init__(
        self,
        path: Path,
        handler: Handler,
        mode: int = 0o660,
        unsent: Callable[[dict], None] | None = None,
        max_connections: int = HOST_CONNECTIONS,
        idle_seconds: float = IDLE_SECONDS,
        many: Many | None = None,
    ):
        """`unsent(reply)` is told of a reply the client went away before getting (so a
        `recv` can hand its messages back to the inbox). `many`: answers the requests a
        client pipelined (several lines written before reading a reply) together; without
        it each line is answered alone, in order, as they always are."""
        self.path = path
        self.handler, self.many = handler, many
        self.mode = mode
        self.unsent = unsent
        self.max_connections, self.idle_seconds = max_connections, idle_seconds
        self.server: socketserver.ThreadingUnixStreamServer | None = None
        self.sessions: set = set()
        self.sessions_lock = threading.Lock()
        self.closing = threading.Event()
        self.acceptor: threading.Thread | None = None

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
        handler, unsent, many = self.handler, self.unsent, self.many
        sessions, sessions_lock = self.sessions, self.sessions_lock
        max_connections = self.max_connections

        class Session(socketserver.StreamRequestHandler):
            timeout = self.idle_seconds  # each read and write of the connection

            def setup(self) -> None:
                super().setup()
                self.thread = threading.current_thread()
                with sessions_lock:
                    sessions.add(self)

            def finish(self) -> None:
                try:
                    super().finish()
                finally:
                    with sessions_lock:
                        sessions.discard(self)

            def handle(self) -> None:
                with contextlib.suppress(TimeoutError):  # idle: nothing in flight
                    self.serve()

            def serve(self) -> None:
                lines = Lines(self.connection)
                while line := lines.readline(MAX_LINE + 1):
                    if len(line) > MAX_LINE:
                        while line and not line.endswith(b"\n"):  # skip the rest of it
                            line = lines.readline(MAX_LINE)
                        replies = [[{"ok": False, "error": f"request line over {MAX_LINE} bytes"}]]
                    elif many is not None and lines.ready():  # pipelined: more are here
                        batch = [line]
                        while len(batch) < MAX_PIPELINE and lines.ready():
                            batch.append(lines.readline(MAX_LINE + 1))
                        replies = _answers(many, batch)
                    else:
                        replies = [[_answer(handler, line)]]
                    if not self.write(replies):
                        return

            def write(self, pieces: Iterable[list[dict]]) -> bool:
                """Write each piece of replies as it comes, in one write; False (and the
                piece told to `unsent`) if the client is gone."""
                for replies in pieces:
                    try:
                        self.wfile.write(b"".join(json.dumps(r).encode() + b"\n" for r in replies))
                        self.wfile.flush()
                    except OSError:
                        if unsent:
                            for reply in replies:
                                unsent(reply)
                        return False
                return True

        class Server(socketserver.ThreadingUnixStreamServer):
            daemon_threads = True
            request_queue_size = 64  # a burst waits to be served or refused
            active = 0  # connections with a thread, counted before the thread starts

            def process_request(self, request, client_address) -> None:
                with sessions_lock:
                    full = self.active >= max_connections
                    self.active += 0 if full else 1
                if not full:
                    try:
                        super().process_request(request, client_address)
                    except BaseException:
                        self.done()
                        raise
                    return
                busy = {"ok": False, "error": f"over {max_connections} connections open"}
                request.setblocking(False)  # this is the accepting thread: never wait
                with contextlib.suppress(OSError):
                    request.send(json.dumps(busy).encode() + b"\n")
                self.shutdown_request(request)

            def process_request_thread(self, request, client_address) -> None:
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    self.done()

            def done(self) -> None:
                with sessions_lock:
                    self.active -= 1

        self.path.parent.mkdir(parents=True, exist_ok=True)
        old_umask = os.umask(0o777 & ~self.mode)  # created with `mode`, no chmod race
        try:
            self.server = Server(str(self.path), Session)
        finally:
            os.umask(old_umask)
        self.closing.clear()
        # A blocking accept, not serve_forever's poll: that woke every socket's thread 20
        # times a second, and with one socket per agent an idle daemon of 200 agents spent
        # half a core on it (bench/swarm.py). `stop` wakes the accept by shutting it down.
        self.acceptor = threading.Thread(target=self._accept, name=self.path.name, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        server, told = self.server, 0.0
        while not self.closing.is_set():
            try:
                request, address = server.get_request()
            except OSError as e:
                if not self.closing.is_set():  # fds run out, say: try again, slowly
                    if time.monotonic() - told > 60:  # and say so once a minute
                        log.warning("%s: accept failed: %s", self.path, e)
                        told = time.monotonic()
                    self.closing.wait(0.5)
                continue
            try:
                server.process_request(request, address)  # a thread per connection
            except Exception:
                server.handle_error(request, address)
                server.shutdown_request(request)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let every open connection finish the request it is in (its reply
        written, or handed to `unsent`), then close them all."""
        if self.server:
            self.closing.set()
            with contextlib.suppress(OSError):
                self.server.socket.shutdown(socket.SHUT_RDWR)  # wakes the accept
            if self.acceptor is not None:
                self.acceptor.join(timeout)
            self.server.server_close()
            self.path.unlink(missing_ok=True)
            with self.sessions_lock:
                open_sessions = list(self.sessions)
            for s in open_sessions:
                with contextlib.suppress(OSError):
                    s.connection.shutdown(socket.SHUT_RD)  # the next readline is EOF
            deadline = time.monotonic() + timeout
            for s in open_sessions:
                s.thread.join(max(0.0, deadline - time.monotonic()))

"""One git socket per agent, `run/agents/<name>/git.sock` (mode 0600, beside agent.sock, so
a container sees it at /run/hyperhive/git.sock): every connection is copied byte for byte
to the daemon's own HTTP listener. The forge's git remote (forge_ui/git_http.py) answers
with its usual token check; the socket is only transport, for a container whose network
namespace cannot reach the host's loopback (inside, nix/harness-base.nix puts
systemd-socket-proxyd on 127.0.0.1:8420 in front of it).

Bounded: at most `MAX_CONNECTIONS` forwarded connections per agent, each with two threads
and one `CHUNK` buffer per direction; more wait in the listen backlog. When the daemon's
side of a connection ends, the whole connection ends; when the client stops sending, the
daemon is told (a half close) and its answer still goes back. A stop (or the agent going
away) removes the socket and cuts the open connections.
"""

import contextlib
import logging
import os
import socket
import threading
import time
from pathlib import Path

from hyperhive.daemon.agentsock import PerAgentSockets
from hyperhive.home import Home
from hyperhive.runtime.ownership import give

log = logging.getLogger("hyperhive.daemon")

SOCKET_NAME = "git.sock"  # nix/lib.nix gitSocket
MAX_CONNECTIONS = 8  # per agent: one agent cannot take all of gunicorn's threads
BACKLOG = 16
CHUNK = 64 * 1024
CONNECT_SECONDS = 10.0
Address = tuple[str, int]


class Forwarded:
    """The daemon-side (source) addresses of forwarded connections (a field of the Hive):
    the web app refuses them everything but /git/ (forge_ui/git_http.py), so a container
    reaches the git remote through its socket, not the forge's pages, API or login form."""

    def __init__(self):
        self._lock = threading.Lock()
        self._addresses: set[Address] = set()

    def add(self, address: Address) -> None:
        with self._lock:
            self._addresses.add(address)

    def discard(self, address: Address) -> None:
        with self._lock:
            self._addresses.discard(address)

    def __call__(self, host: str | None, port: str | int | None) -> bool:
        """Whether a request from `host`:`port` came through an agent's git socket."""
        try:
            address = (host or "", int(port or 0))
        except ValueError:
            return False
        with self._lock:
            return address in self._addresses


def git_socket(home: Home, name: str) -> Path:
    return home.agent_socket(name).with_name(SOCKET_NAME)


def connect_address(sockname) -> Address:
    """Where to reach a listener bound at `sockname` from this host: an all-addresses
    bind is reached on the loopback of its family."""
    host, port = sockname[:2]
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host), port


def git_url(address: Address) -> str:
    """The git remote's base URL at the daemon's HTTP address (`<url>/NAME/config.git`)."""
    host, port = address
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/git"


class GitSocket:
    """A unix socket at `path` whose connections are forwarded to the TCP `target`; their
    daemon-side addresses are kept in `forwarded` while they are open."""

    def __init__(self, path: Path, target: Address, forwarded: Forwarded | None = None):
        self.path, self.target = path, target
        self.forwarded = forwarded if forwarded is not None else Forwarded()
        self.listener: socket.socket | None = None
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.open: dict[socket.socket, tuple[socket.socket | None, threading.Thread]] = {}
        self.acceptor: threading.Thread | None = None
        self.label = f"{path.name}:{path.parent.name}"  # threads' names: git.sock:<agent>

    def start(self, owner: tuple[int, int] | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Only this daemon serves this home (host.sock says so): a file here is a dead
        # daemon's.
        self.path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.path))
            # Bound but not listening refuses every connect: no window with other modes.
            os.chmod(self.path, 0o600)
            give(self.path, owner)
            listener.listen(BACKLOG)
        except BaseException:
            listener.close()
            self.path.unlink(missing_ok=True)
            raise
        self.listener = listener
        self.acceptor = threading.Thread(target=self._accept, name=self.label, daemon=True)
        self.acceptor.start()

    def connections(self) -> int:
        with self.lock:
            return len(self.open)

    def _accept(self) -> None:
        while not self.stopping.is_set():
            if not self.slots.acquire(timeout=0.5):
                continue  # every slot taken: new clients wait in the backlog
            try:
                client, _ = self.listener.accept()
            except OSError as e:
                self.slots.release()
                if self.stopping.is_set():
                    return
                log.warning("%s: accept failed: %s", self.path, e)
                time.sleep(0.1)  # e.g. out of file descriptors: do not spin
                continue
            if self.stopping.is_set():
                client.close()
                self.slots.release()
                return
            thread = threading.Thread(
                target=self._serve, args=(client,), name=f"{self.label}-conn", daemon=True
            )
            with self.lock:
                self.open[client] = (None, thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        upstream = source = None
        try:
            try:
                upstream = socket.create_connection(self.target, timeout=CONNECT_SECONDS)
                upstream.settimeout(None)
            except OSError as e:
                log.warning("%s: cannot reach the daemon at %s: %s", self.path, self.target, e)
                return
            source = upstream.getsockname()[:2]
            self.forwarded.add(source)  # before the first byte reaches the daemon
            with self.lock:
                if self.stopping.is_set():
                    return
                self.open[client] = (upstream, self.open[client][1])
            back = threading.Thread(
                target=self._pump, args=(upstream, client, False), name=f"{self.label}-back"
            )
            back.daemon = True
            back.start()
            self._pump(client, upstream, True)
            back.join()
        finally:
            with self.lock:
                self.open.pop(client, None)
            if source is not None:
                self.forwarded.discard(source)
            for s in (client, upstream):
                if s is not None:
                    s.close()
            self.slots.release()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        """Copy `src` to `dst` until `src` ends. The client ending its sending is passed
        on as a half close; anything else (the daemon's side ending, an error) ends both."""
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        try:
            while n := src.recv_into(buf):
                dst.sendall(view[:n])
        except OSError:
            from_client = False
        if from_client:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
        else:
            _cut(src, dst)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, remove the socket file, cut the open connections."""
        self.stopping.set()
        if self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept
            if self.acceptor is not None:
                self.acceptor.join(timeout)
            self.listener.close()
            self.listener = None
            self.path.unlink(missing_ok=True)
        with self.lock:
            open_now = list(self.open.items())
        for client, (upstream, _) in open_now:
            _cut(client, upstream)
        deadline = time.monotonic() + timeout
        for _, (_, thread) in open_now:
            thread.join(max(0.0, deadline - time.monotonic()))


def _cut(*socks: socket.socket | None) -> None:
    """End both directions of each socket now: whoever is blocked on one wakes up."""
    for s in socks:
        if s is not None:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


class GitSockets(PerAgentSockets[GitSocket]):
    """A git socket for every agent the hive has, in step with the agents (like
    AgentSockets), each forwarding to the daemon's HTTP listener at `target`."""

    kind = "git socket"

    def __init__(self, home: Home, target: Address, forwarded: Forwarded | None = None):
        super().__init__(home)
        self.target = target
        self.forwarded = forwarded if forwarded is not None else Forwarded()

    def _start(self, name: str, owner: tuple[int, int] | None) -> GitSocket:
        sock = GitSocket(git_socket(self.home, name), self.target, self.forwarded)
        sock.start(owner)
        log.info("%s: git remote on %s", name, sock.path)
        return sock

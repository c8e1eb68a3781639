"""The per-agent git sockets: the forwarder on its own (byte for byte, half close, the
connection bound, stop, ownership), then on a real daemon: the sockets follow the agents,
HTTP through git.sock is the daemon's own git remote with its token check, the stock `git`
clones and pushes a proposal through a TCP port in front of it (as systemd-socket-proxyd
in a container), and the local runtime's harness (and the claude it runs) get the URL."""

import contextlib
import http.client
import os
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from support.claude import claude_script, fake_runs
from support.daemon import Daemon
from support.gitcli import commit, ok_git, run_git
from support.hive import git, run_cli
from support.nix import STUB_LIB, STUB_PKGS, nix_eval, nix_str
from support.wait import wait_for

from hyperhive import operator, tokens
from hyperhive.daemon import gitsock
from hyperhive.daemon.gitsock import GitSocket, GitSockets, connect_address, git_url
from hyperhive.home import Home
from hyperhive.resources import NIX_DIR

PROXYD = shutil.which("systemd-socket-proxyd", path="/lib/systemd:/usr/lib/systemd")


def pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


class Upstream:
    """A TCP server standing in for the daemon's listener: `echo` sends back everything
    it got once the client stops sending; `hold` keeps each connection open, counted."""

    def __init__(self, mode: str):
        accepted = self.accepted = []

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                accepted.append(self.request)
                if mode == "echo":
                    data = bytearray()
                    while chunk := self.request.recv(65536):
                        data += chunk
                    self.request.sendall(data)
                else:
                    while self.request.recv(65536):
                        pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.address = self.server.server_address

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        for s in self.accepted:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def forwarder(tmp_path: Path, mode: str = "echo"):
    upstream = Upstream(mode)
    sock = GitSocket(tmp_path / "run" / "git.sock", upstream.address)
    sock.start()
    try:
        yield sock, upstream
    finally:
        sock.stop()
        upstream.close()


def connect(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(str(path))
    return s


def read_all(s: socket.socket) -> bytes:
    data = bytearray()
    with contextlib.suppress(ConnectionResetError):
        while chunk := s.recv(65536):
            data += chunk
    return bytes(data)


# -- the forwarder on its own ------------------------------------------------------------


def test_bytes_go_through_unchanged_and_a_half_close_gets_the_answer(tmp_path):
    payload = os.urandom(3 * 1024 * 1024 + 17)  # many chunks, both ways at once
    with forwarder(tmp_path) as (sock, _):
        assert sock.path.stat().st_mode & 0o777 == 0o600
        s = connect(sock.path)

        def send():
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)  # the request is complete: the answer still comes

        sender = threading.Thread(target=send)
        sender.start()
        got = read_all(s)
        sender.join()
        s.close()
        assert got == payload
        wait_for(lambda: sock.connections() == 0, what="the connection to end")


def test_connections_are_bounded_and_the_next_waits_its_turn(tmp_path):
    with forwarder(tmp_path, "hold") as (sock, upstream):
        clients = [connect(sock.path) for _ in range(gitsock.MAX_CONNECTIONS + 1)]
        wait_for(lambda: len(upstream.accepted) == gitsock.MAX_CONNECTIONS, what="the first")
        assert sock.connections() == gitsock.MAX_CONNECTIONS
        assert len(upstream.accepted) == gitsock.MAX_CONNECTIONS  # the last one waits
        clients[0].close()
        wait_for(lambda: len(upstream.accepted) == len(clients), what="the waiting one")
        for c in clients[1:]:
            c.close()


def test_stop_cuts_open_connections_and_removes_the_socket(tmp_path):
    with forwarder(tmp_path, "hold") as (sock, upstream):
        clients = [connect(sock.path) for _ in range(3)]
        wait_for(lambda: len(upstream.accepted) == 3, what="the connections")
        threads = {t for t in threading.enumerate() if t.name.startswith("git.sock")}
        sock.stop()
        assert not sock.path.exists()
        for c in clients:
            assert read_all(c) == b""  # cut: EOF, not a hang
            c.close()
        assert sock.connections() == 0
        assert not any(t.is_alive() for t in threads)
        with pytest.raises((FileNotFoundError, ConnectionRefusedError)):
            connect(sock.path)


def test_a_daemon_that_does_not_answer_closes_the_connection(tmp_path):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = unused.getsockname()  # bound, never listening: connections are refused
        sock = GitSocket(tmp_path / "git.sock", dead)
        sock.start()
        try:
            s = connect(sock.path)
            assert read_all(s) == b""
            s.close()
            wait_for(lambda: sock.connections() == 0, what="the slot back")
        finally:
            sock.stop()


def test_a_stale_socket_file_is_replaced(tmp_path):
    path = tmp_path / "git.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # what a killed daemon leaves
    sock = GitSocket(path, ("127.0.0.1", 9))
    sock.start()
    assert path.exists() and path.stat().st_mode & 0o777 == 0o600
    sock.stop()
    assert not path.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_sockets_follow_the_agents_and_the_owner_of_their_state(home):
    sockets = GitSockets(home, ("127.0.0.1", 9))
    try:
        sockets.sync()
        path = gitsock.git_socket(home, "manager")
        assert path == home.run_dir / "agents" / "manager" / "git.sock"
        assert (path.stat().st_uid, path.stat().st_gid) == (0, 0)
        # a user-namespaced runtime chowned the state to the container's agent user
        base = 524288
        os.chown(home.state_dir("manager"), base + 1000, base + 100)
        sockets.sync()
        assert (path.stat().st_uid, path.stat().st_gid) == (base + 1000, base + 100)
        assert path.stat().st_mode & 0o777 == 0o600
        (home.agent_dir("manager") / "destroyed").touch()
        sockets.sync()
        assert not path.exists() and sockets.open == {}
    finally:
        sockets.stop()


def test_addresses_and_urls():
    assert connect_address(("0.0.0.0", 8420)) == ("127.0.0.1", 8420)
    assert connect_address(("::", 8420, 0, 0)) == ("::1", 8420)
    assert connect_address(("10.0.0.5", 80)) == ("10.0.0.5", 80)
    assert git_url(("127.0.0.1", 8420)) == "http://127.0.0.1:8420/git"
    assert git_url(("::1", 8420)) == "http://[::1]:8420/git"


# -- the container side: harness-base.nix with the stub lib --------------------------------


def test_the_container_serves_the_git_socket_on_its_loopback():
    cfg = {
        "name": "manager",
        "package": "/nix/store/stub-hyperhive",
        "claudePackage": "/nix/store/stub-claude-code",
    }
    expr = f"""
let
  lib = {STUB_LIB};
  pkgs = {STUB_PKGS};
  config = {{
    hyperhive = {nix_str(cfg)};
    programs.git.package = "/nix/store/stub-git";
    systemd.package = "/nix/store/stub-systemd";
  }};
  m = import {NIX_DIR / "harness-base.nix"} {{ inherit config lib pkgs; }};
  l = import {NIX_DIR / "lib.nix"};
in {{
  socket = m.config.systemd.sockets.hyperhive-git;
  proxy = m.config.systemd.services.hyperhive-git;
  harness = m.config.systemd.services.hyperhive-harness;
  facts = {{ inherit (l) gitSocket gitListen gitUrl tokenFile agentSocket; }};
}}
"""
    got = nix_eval(expr)
    facts = got["facts"]
    # the paths the daemon serves and writes (hyperhive/daemon/gitsock.py, tokens.py)
    assert Path(facts["gitSocket"]) == Path(facts["agentSocket"]).with_name(gitsock.SOCKET_NAME)
    assert facts["tokenFile"] == f"/state/{tokens.STATE_FILE}"
    assert facts["gitUrl"] == f"http://{facts['gitListen']}/git"
    assert got["socket"]["listenStreams"] == ["127.0.0.1:8420"]
    assert got["socket"]["wantedBy"] == ["sockets.target"]
    proxy = got["proxy"]
    assert proxy["requires"] == ["hyperhive-git.socket"]
    assert proxy["serviceConfig"]["ExecStart"] == (
        "'/nix/store/stub-systemd/lib/systemd/systemd-socket-proxyd' '/run/hyperhive/git.sock'"
    )
    assert proxy["serviceConfig"]["User"] == "agent"  # the owner the daemon gives git.sock
    assert proxy["serviceConfig"]["PrivateNetwork"] is True
    env = got["harness"]["environment"]
    assert env["HYPERHIVE_GIT_URL"] == "http://127.0.0.1:8420/git"
    assert env["HYPERHIVE_TOKEN_FILE"] == "/state/hyperhive-token"
    assert "hyperhive-git.socket" in got["harness"]["after"]


# -- on a real daemon ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def hive(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("gitsock") / "hive").start()
    d.home = Home(d.root)
    d.manager = tokens.state_file(d.home, "manager").read_text().strip()
    yield d
    d.kill()


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path):
        super().__init__("localhost", timeout=30)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self.unix_path))


def get(path: Path, url: str, token: str | None = None) -> tuple[int, dict, bytes]:
    conn = UnixHTTPConnection(path)
    try:
        conn.request("GET", url, headers={"Authorization": f"Bearer {token}"} if token else {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def test_every_agent_has_a_git_socket_and_a_destroyed_one_loses_it(hive):
    manager = gitsock.git_socket(hive.home, "manager")
    wait_for(manager.exists, what="the manager's git.sock")
    assert manager.stat().st_mode & 0o777 == 0o600
    run_cli(hive.root, "agent", "create", "doomed", check=True)
    doomed = gitsock.git_socket(hive.home, "doomed")
    wait_for(doomed.exists, what="doomed's git.sock")
    run_cli(hive.root, "agent", "destroy", "doomed", check=True)
    wait_for(lambda: not doomed.exists(), what="doomed's git.sock to go")
    assert manager.exists()


def test_http_through_git_sock_is_the_git_remote_with_its_token_check(hive):
    path = gitsock.git_socket(hive.home, "manager")
    wait_for(path.exists, what="the manager's git.sock")
    refs = "/git/manager/config.git/info/refs?service=git-upload-pack"
    status, headers, body = get(path, refs, hive.manager)
    assert status == 200
    assert headers["Content-Type"] == "application/x-git-upload-pack-advertisement"
    assert b"refs/heads/main" in body
    status, _, body = get(path, refs)
    assert status == 401 and b"a token is needed" in body
    status, _, _ = get(path, refs, "hht_not-a-token")
    assert status == 401


def test_git_sock_serves_the_git_remote_only(hive):
    """A container must not reach the forge's pages, API or login form through it; the
    same requests over TCP are served as usual."""
    path = gitsock.git_socket(hive.home, "manager")
    wait_for(path.exists, what="the manager's git.sock")
    operator_token = operator.token(hive.home)
    for url in ["/login", "/api/state", "/", "/ws/state"]:
        status, _, body = get(path, url, operator_token)
        assert status == 403 and b"serves the git remote only" in body, url
    status, _, _ = get(
        path, "/git/manager/config.git/info/refs?service=git-upload-pack", hive.manager
    )
    assert status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{hive.port}/login", timeout=10) as r:
        assert r.status == 200


class TcpToUnix:
    """127.0.0.1:<port> → a unix socket, as systemd-socket-proxyd runs in a container:
    `python` is a few lines here, `systemd-socket-proxyd` the real program given the
    listening socket the way systemd passes it (LISTEN_FDS)."""

    def __init__(self, kind: str, target: Path):
        self.proc = self.server = None
        if kind == "python":

            class Handler(socketserver.BaseRequestHandler):
                def handle(self):
                    with socket.socket(socket.AF_UNIX) as up:
                        up.connect(str(target))
                        back = threading.Thread(target=pump, args=(up, self.request))
                        back.start()
                        pump(self.request, up)
                        back.join()

            self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
            self.server.daemon_threads = True
            threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
            self.port = self.server.server_address[1]
            return
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        launch = (  # the socket as fd 3, LISTEN_PID = the pid that runs the proxy
            "import os, sys; os.dup2(int(sys.argv[1]), 3); "
            "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); "
            "os.execv(sys.argv[2], sys.argv[2:])"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", launch, str(listener.fileno()), PROXYD, str(target)],
            pass_fds=[listener.fileno()],
        )
        listener.close()

    def close(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.mark.parametrize(
    "proxy",
    [
        "python",
        pytest.param(
            "systemd-socket-proxyd",
            marks=pytest.mark.skipif(PROXYD is None, reason="no systemd-socket-proxyd here"),
        ),
    ],
)
def test_git_clones_and_pushes_a_proposal_through_the_socket(hive, tmp_path, proxy):
    name = f"via-{proxy[:6]}"
    run_cli(hive.root, "agent", "create", name, check=True)
    (hive.home.applied_dir(name) / "hooks" / "post-receive").unlink()  # no deploys here
    path = gitsock.git_socket(hive.home, "manager")  # the manager's container does this
    wait_for(path.exists, what="the manager's git.sock")
    front = TcpToUnix(proxy, path)
    try:
        remote = f"http://127.0.0.1:{front.port}/git"  # $HYPERHIVE_GIT_URL in the container
        auth = ["-c", f"http.extraHeader=Authorization: Bearer {hive.manager}"]
        work = tmp_path / "config"
        ok_git(tmp_path, *auth, "clone", "-q", f"{remote}/{name}/config.git", str(work))
        sha = commit(work, {"notes.md": "through the socket\n"}, "a change")
        out = ok_git(work, *auth, "push", "origin", "HEAD:refs/for/main")
        review = f"http://127.0.0.1:{front.port}/review/{name}/2"
        assert f"remote: proposal {name}#2: {review}" in out
        applied = hive.home.applied_dir(name)
        assert git(applied, "rev-parse", "proposal/2^{commit}").strip() == sha
        assert "Actor: manager" in git(applied, "cat-file", "-p", "proposal/2")
        ok_git(work, *auth, "push", "-q", "origin", "HEAD:main")  # the working branch
        assert git(hive.home.config_dir(name), "rev-parse", "main").strip() == sha
        # the token is still what decides: without one, git is asked for credentials (401)
        refused = run_git(tmp_path, "clone", "-q", f"{remote}/{name}/config.git", "nope")
        assert refused.returncode != 0 and "could not read Username" in refused.stderr
    finally:
        front.close()


# -- the local runtime: the harness and its claude get the URL ----------------------------


def harness_env(home: Home, other_than: int | None = None) -> tuple[int, dict[str, str]]:
    """The running harness of the manager (a new one when `other_than` is given): its pid
    and the HYPERHIVE_GIT_URL / HYPERHIVE_TOKEN_FILE of its environment."""

    def running():
        try:
            pid = int((home.agent_dir("manager") / "harness.pid").read_text())
            raw = Path(f"/proc/{pid}/environ").read_bytes()
        except (OSError, ValueError):
            return None
        return pid != other_than and (pid, raw)

    pid, raw = wait_for(running, what="the manager's harness")
    env = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
    return pid, {k: env.get(k) for k in ("HYPERHIVE_GIT_URL", "HYPERHIVE_TOKEN_FILE")}


def test_the_local_harness_and_its_claude_get_the_git_remote(home, tmp_path, monkeypatch):
    # its MCP servers are not what is tested (in the script: the sandbox drops FAKE_*)
    claude = claude_script(tmp_path / "bin", env={"FAKE_CLAUDE_MCP": "lazy"})
    monkeypatch.setenv("PATH", f"{claude.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_CLAUDE_HOME", str(tmp_path / "fake-claude"))
    root = home.root  # initialized in this process (the `home` fixture)
    daemons = [Daemon(root).start()]
    try:
        run_cli(root, "approve", "manager#1", check=True)
        pid, env = harness_env(home)
        # in its sandbox the state is at /state, as in a container
        state = home.state_dir("manager")
        token_file = tokens.state_file(home, "manager")
        expected = {
            "HYPERHIVE_GIT_URL": f"http://127.0.0.1:{daemons[0].port}/git",
            "HYPERHIVE_TOKEN_FILE": str(Path("/state") / token_file.relative_to(state)),
        }
        assert env == expected

        # a turn: the harness passes its environment on to claude (and its Bash tool);
        # the fake's records are in its HOME, the state (FAKE_CLAUDE_HOME stays outside)
        run_cli(root, "send", "operator", "manager", "hello", check=True)
        (run,) = wait_for(lambda: fake_runs(state / ".fake-claude"), what="a turn")
        assert {k: run["env"].get(k) for k in expected} == expected
        assert run["cwd"] == "/state"

        # what the manager's prompt says to do with them works
        token = token_file.read_text().strip()
        work = tmp_path / "clone"
        auth = f"http.extraHeader=Authorization: Bearer {token}"
        url = f"{env['HYPERHIVE_GIT_URL']}/manager/config.git"
        ok_git(tmp_path, "-c", auth, "clone", "-q", url, str(work))
        assert (work / "agent.nix").is_file()

        # a deployed agent's harness starts with the daemon: it has the new address
        daemons[0].stop()
        daemons.append(Daemon(root).start())
        _, env = harness_env(home, other_than=pid)
        assert env["HYPERHIVE_GIT_URL"] == f"http://127.0.0.1:{daemons[1].port}/git"
    finally:
        for d in daemons:
            if d.proc.poll() is None:
                d.stop()

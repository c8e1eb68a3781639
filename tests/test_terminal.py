"""The web terminal: the local runtime's shell on a real PTY, and `/ws/terminal/<name>`
on a real daemon over real sockets (auth, origin, protocol, hang-up, flow control), and
the vendored front-end files. The browser side is tests/test_terminal_browser.py."""

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import tarfile
import time
from pathlib import Path

import pytest
import simple_websocket
from support.daemon import Daemon, ws
from support.hive import fake_program, run_cli
from support.procs import WHOAMI, WHOAMI_RE, alive, host_pid, proc_stat, read_until
from support.wait import wait_for

from forge_ui.views.live import MAX_MESSAGE
from forge_ui.views.terminal import WINDOW
from hyperhive import operator
from hyperhive.errors import InvalidName, UnknownAgent
from hyperhive.home import Home
from hyperhive.runtime.base import Shell
from hyperhive.runtime.local import LocalRuntime

# scripts/vendor.py is a development tool outside the shipped package: load it by path.
_spec = importlib.util.spec_from_file_location(
    "vendor", Path(__file__).parent.parent / "scripts" / "vendor.py"
)
vendor = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vendor)

# -- the local runtime's shell -------------------------------------------------------------


def open_hive(home: Home) -> None:
    """`[local] sandbox = false`: the agents run open (a test of what only that does)."""
    (home.root / "hyperhive.toml").write_text("[local]\nsandbox = false\n")


@pytest.mark.parametrize("sandboxed", [True, False], ids=["sandbox", "open"])
def test_local_shell_is_a_login_shell_in_the_state_dir(
    home: Home, runtime: LocalRuntime, sandboxed: bool
):
    if not sandboxed:
        open_hive(home)
    shell = runtime.shell("manager")
    try:
        assert shell.argv[0] == shutil.which("bash") and shell.argv[1:] == ["-l"]
        os.write(shell.master, b'echo "T=$TERM A=$HYPERHIVE_AGENT L=$LANG"; pwd; echo $((6*7))\n')
        m = read_until(shell.master, rb"T=(\S+) A=(\S+) L=(\S+)\r\n(.*)\r\n42\r\n")
        assert m.group(1, 2) == (b"xterm-256color", b"manager")
        assert b"utf-8" in m.group(3).lower().replace(b"utf8", b"utf-8")
        state_dir = Path("/state") if sandboxed else home.state_dir("manager")
        assert Path(m.group(4).decode()) == state_dir
        # UTF-8 both ways: a two-byte character typed in is one character to the shell.
        os.write(shell.master, "printf %s é | wc -m\n".encode())
        read_until(shell.master, rb"\r\s*1\r\n")
        # A session of its own with the PTY as its controlling terminal, so job control
        # works and a hang-up reaches everything it started.
        os.write(shell.master, WHOAMI)
        m = read_until(shell.master, WHOAMI_RE)
        pid = host_pid(int(m.group(1)), m.group(2))
        state, _, pgrp, session, tty_nr = proc_stat(pid)[:5]  # the host's pids
        assert int(pgrp) == int(session) == pid and int(tty_nr) != 0
        assert (pid == shell.process.pid) is not sandboxed  # a sandbox: bwrap's grandchild
        # Signals are as a fresh login has them: a pipe's writer dies quietly of SIGPIPE.
        os.write(shell.master, b"yes | head -n 1; echo PIPE=${PIPESTATUS[0]}\n")
        assert read_until(shell.master, rb"PIPE=(\d+)\r\n").group(1) == b"141"
        shell.resize(33, 111)
        os.write(shell.master, b"stty size\n")
        read_until(shell.master, rb"\r33 111\r\n")
    finally:
        shell.close()


def test_closing_the_shell_ends_its_background_jobs(runtime: LocalRuntime):
    shell = runtime.shell("manager")
    os.write(shell.master, b"sleep 600 & echo BG=$! NS=$(readlink /proc/$$/ns/pid)\n")
    m = read_until(shell.master, rb"BG=(\d+) NS=(\S+)\r\n")  # all its digits
    bg = host_pid(int(m.group(1)), m.group(2))
    assert alive(bg)
    assert shell.close() != 0  # SIGHUP
    assert not alive(shell.process.pid)
    wait_for(lambda: not alive(bg), timeout=30, what="the background job to end")


def test_local_shell_refuses_unknown_and_destroyed_agents(home: Home, runtime: LocalRuntime):
    with pytest.raises(UnknownAgent, match="unknown agent 'ghost'"):
        runtime.shell("ghost")
    with pytest.raises(InvalidName):
        runtime.shell("../etc")
    run_cli(home.root, "agent", "create", "gone", check=True)
    run_cli(home.root, "agent", "destroy", "gone", check=True)
    with pytest.raises(UnknownAgent, match="agent gone was destroyed"):
        runtime.shell("gone")


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_local_shell_runs_as_the_owner_of_the_state_dir(home: Home, runtime: LocalRuntime):
    """As root, an agent whose state directory belongs to a user gets a shell as that
    user (here `nobody`, whose home does not exist: HOME is the state directory). Open
    only: a sandboxed shell is its harness's identity (test_sandbox.py)."""
    open_hive(home)
    state = home.state_dir("manager")
    os.chown(state, 65534, 65534)
    shell = runtime.shell("manager")
    try:
        os.write(shell.master, b'echo "U=$(id -u) G=$(id -G) H=$HOME"\n')
        m = read_until(shell.master, rb"U=(\d+) G=([\d ]+) H=(\S+)\r\n")
        assert m.group(1, 2) == (b"65534", b"65534")  # root's groups are gone
        assert Path(m.group(3).decode()) == state
        tty = os.readlink(f"/proc/{shell.process.pid}/fd/0")
        assert os.stat(tty).st_uid == 65534  # its own tty, as after a login
    finally:
        shell.close()
    os.chown(state, 0, 0)
    shell = runtime.shell("manager")  # root's again: root's HOME, never the agent's dotfiles
    try:
        os.write(shell.master, b'echo "U=$(id -u) H=$HOME"\n')
        m = read_until(shell.master, rb"U=(\d+) H=(\S+)\r\n")
        assert m.group(1) == b"0" and Path(m.group(2).decode()) != state
    finally:
        shell.close()


def test_a_relay_that_cannot_start_hangs_the_shell_up(
    home: Home, runtime: LocalRuntime, monkeypatch
):
    """Out of file descriptors for the relay's pipe: the shell must not outlive the page."""
    from flask import g

    from forge_ui import create_app
    from forge_ui.views import terminal
    from hyperhive.hive import Hive

    shells = []
    real_shell = runtime.shell

    def no_pipe():
        raise OSError(24, "Too many open files")

    def shell_then_no_more_fds(name):
        shells.append(real_shell(name))
        monkeypatch.setattr(terminal.os, "pipe", no_pipe)
        return shells[-1]

    monkeypatch.setattr(runtime, "shell", shell_then_no_more_fds)
    app = create_app(Hive(home, runtime))
    with app.test_request_context("/ws/terminal/manager"):
        g.actor = "operator"
        with pytest.raises(OSError, match="Too many open files"):
            app.view_functions[f"{terminal.bp.name}.ws"].__wrapped__(None, "manager")
    (shell,) = shells
    assert shell.process.poll() is not None  # hung up and reaped
    assert not alive(shell.process.pid)


def test_spawn_refuses_a_missing_program_in_the_caller():
    with pytest.raises(FileNotFoundError, match="no-such-shell"):
        Shell.spawn(["no-such-shell"])


# -- the websocket, on a real daemon -------------------------------------------------------


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("terminal") / "hive").start()
    try:
        d.token = operator.token(Home(d.root))
        yield d
    finally:
        d.kill()


class Term:
    """A client of /ws/terminal/<name> speaking the protocol of forge_ui/views/terminal.py."""

    def __init__(self, daemon, name="manager", headers=None, ack=True):
        headers = {"Authorization": f"Bearer {daemon.token}"} if headers is None else headers
        for attempt in range(3):
            try:
                self.ws = simple_websocket.Client.connect(
                    f"ws://127.0.0.1:{daemon.port}/ws/terminal/{name}",
                    headers=headers,
                    receive_bytes=1 << 20,
                )
                break
            except ConnectionResetError:
                # Seen twice in full runs on a loaded machine, cause not found yet (the
                # daemon reset the handshake): retried so it cannot hide a refusal.
                if attempt == 2:
                    raise
        self.ack = ack
        self.out = b""
        self.control: list[dict] = []

    def send(self, text: str) -> None:
        self.ws.send(text.encode())

    def message(self, timeout: float = 10.0):
        """The next frame (output is acknowledged if `ack`), None on timeout or when
        the socket closed."""
        try:
            m = self.ws.receive(timeout=timeout)
        except simple_websocket.ConnectionClosed:
            return None
        if isinstance(m, bytes):
            self.out += m
            if self.ack:
                # closing now: the client's reader thread closes the socket on the server's
                # close frame, between send's check of `connected` and its write (EBADF)
                with contextlib.suppress(simple_websocket.ConnectionClosed, OSError):
                    self.ws.send(json.dumps({"ack": len(m)}))
        elif m is not None:
            self.control.append(json.loads(m))
        return m

    def until(self, pattern: bytes, timeout: float = 30.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while not (m := re.search(pattern, self.out)):
            left = deadline - time.monotonic()
            if left <= 0 or self.message(left) is None:
                raise AssertionError(f"no {pattern!r} in {self.out[-2000:]!r}")
        return m

    def pid(self) -> int:
        """The shell's pid on the host (in a sandbox it has its own pid namespace)."""
        self.send(WHOAMI.decode())
        m = self.until(WHOAMI_RE)
        self.ns = m.group(2)
        return host_pid(int(m.group(1)), self.ns)

    def close(self):
        self.ws.close()


def refused(daemon, **kw) -> int:
    with pytest.raises(simple_websocket.ConnectionError) as e:
        Term(daemon, **kw)
    return e.value.status_code


def test_the_handshake_needs_the_operator_and_this_origin(daemon):
    assert refused(daemon, headers={}) == 401
    assert refused(daemon, headers={"Authorization": "Bearer wrong"}) == 401
    foreign = {"Authorization": f"Bearer {daemon.token}", "Origin": "http://evil.example"}
    assert refused(daemon, headers=foreign) == 403
    # simple_websocket sends `Host: 127.0.0.1`, without the port (a browser's is tested
    # in test_terminal_browser.py).
    same = {"Authorization": f"Bearer {daemon.token}", "Origin": "http://127.0.0.1"}
    Term(daemon, headers=same).close()


def test_an_open_terminal_ends_with_the_credentials_that_opened_it(daemon):
    home = Home(daemon.root)
    operator.add(home, "tess")
    term = Term(daemon, headers={"Authorization": f"Bearer {operator.token(home, account='tess')}"})
    pid = term.pid()
    out = run_cli(daemon.root, "operator", "token", "--account", "tess", "--rotate")
    assert out.returncode == 0, out.stderr
    while term.message() is not None:  # until the daemon closes it (or 10 s pass)
        pass
    assert {"error": "your session ended: log in again"} in term.control
    wait_for(lambda: not alive(pid), what="the shell to end")


def test_read_only_sockets_end_with_the_credentials_that_opened_them(daemon):
    """The dashboard, charts, review, build, harness and check sockets follow the same
    rule as a terminal: a rotated token (or a logout) closes them with 1008."""
    home = Home(daemon.root)
    operator.add(home, "rita")
    bearer = {"Authorization": f"Bearer {operator.token(home, account='rita')}"}
    paths = [
        "/ws/dashboard",
        "/ws/stats?agent=manager",
        "/ws/approval/manager/1",
        "/ws/build/manager/1",
        "/ws/harness/manager",
        "/ws/check/manager/1",
    ]
    sockets = {path: ws(daemon, path, **bearer) for path in paths}
    run_cli(daemon.root, "operator", "token", "--account", "rita", "--rotate", check=True)
    for path, s in sockets.items():
        wait_for(lambda s=s: not s.connected, timeout=30, what=f"{path} to be closed")
        assert s.close_reason == 1008, path


def test_unknown_and_destroyed_agents_are_refused_before_the_handshake(daemon):
    assert refused(daemon, name="ghost") == 404
    assert refused(daemon, name="Bad_Name") == 400
    run_cli(daemon.root, "agent", "create", "gone", check=True)
    run_cli(daemon.root, "agent", "destroy", "gone", check=True)
    assert refused(daemon, name="gone") == 404


def test_input_resize_and_exit(daemon):
    t = Term(daemon)
    t.ws.send(json.dumps({"resize": [40, 132]}))
    t.send("stty size; echo $((6*7)); printf 'caf\\303\\251\\n'; exit 7\n")
    t.until(rb"\r40 132\r\n42\r\ncaf\xc3\xa9\r\n")
    while t.message() is not None and {"exit": 7} not in t.control:
        pass
    assert {"exit": 7} in t.control
    wait_for(lambda: not t.ws.connected, timeout=30, what="the server to close the socket")


def test_bad_control_messages_are_reported_and_the_terminal_goes_on(daemon):
    t = Term(daemon)
    try:
        for bad, says in (
            ("{not json", "not JSON"),
            ('{"resize": [0, 80]}', "resize must be [rows, cols]"),
            ('{"resize": "big"}', "resize must be [rows, cols]"),
            ('{"ack": -5}', "ack must be a positive byte count"),
            ('{"ack": 999999999}', "more than was sent"),
            ('{"paste": "x"}', "unknown message 'paste'"),
            ("[1, 2]", "expected"),
        ):
            t.ws.send(bad)
            wait_for(lambda: t.message(0.2) or t.control, timeout=30, what=bad)
            assert says in t.control.pop()["error"]
        t.send("echo still $((1+1))\n")
        t.until(rb"still 2")
    finally:
        t.close()


def test_a_message_over_the_limit_closes_the_socket_and_hangs_up(daemon):
    """No client message is held in memory past MAX_MESSAGE (terminal.js sends input in
    pieces well below it)."""
    t = Term(daemon)
    pid = t.pid()
    # a text frame, read whole before it is looked at; the daemon may close the socket
    # while this client still sends it
    with contextlib.suppress(simple_websocket.ConnectionClosed):
        t.ws.send("x" * (MAX_MESSAGE + 1))
    while t.message() is not None:
        pass
    assert t.ws.close_reason == 1009  # message too big
    assert not t.control  # never parsed as a control message
    wait_for(lambda: not alive(pid), what="the shell to be hung up")


def test_closing_the_socket_hangs_up_the_shell_and_its_jobs(daemon):
    t = Term(daemon)
    pid = t.pid()
    t.send("sleep 600 & echo BG=$!\n")
    bg = host_pid(int(t.until(rb"BG=(\d+)\r\n").group(1)), t.ns)
    assert alive(pid) and alive(bg)
    t.close()
    wait_for(lambda: not alive(pid) and not alive(bg), what="the shell and its job to end")


def test_stopping_the_daemon_hangs_up_open_terminals(tmp_path: Path):
    d = Daemon(tmp_path / "hive").start()
    try:
        d.token = operator.token(Home(d.root))
        t = Term(d)
        pid = t.pid()
        assert d.stop() == 0  # the terminal ended with the daemon, its shell too
        assert not alive(pid)
    finally:
        d.kill()


def gunicorn_worker(daemon, pid: int) -> int:
    """The ancestor of `pid` that is the daemon's worker (a sandbox's bwraps between)."""
    while (parent := int(proc_stat(pid)[1])) != daemon.proc.pid:
        assert parent > 1, "not a process of the daemon"
        pid = parent
    return pid


def rss_kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M).group(1))


def test_a_flood_is_held_to_the_window_until_acknowledged(daemon):
    """`yes | head -c 50000000` through the socket. While the client acknowledges
    nothing, the server sends exactly WINDOW bytes and then reads no more (the flood
    waits in the kernel, blocked on the PTY); once the client acknowledges, all of it
    arrives. The daemon's peak RSS over the flood stays far below the flood's size."""
    t = Term(daemon)
    worker = gunicorn_worker(daemon, t.pid())
    # Reset the worker's peak RSS (VmHWM) to its current RSS, so the peak is the flood's.
    Path(f"/proc/{worker}/clear_refs").write_text("5")
    before = rss_kib(worker, "VmRSS")
    # The kernel's newline translation (onlcr) runs at a few MB/s; with output
    # post-processing off the 50 MB pass in about a second. \123 is S, \105 is E: the
    # typed line's echo holds no START or END, only the output does.
    t.send("stty -opost; printf '\\123TART\\n'; yes | head -c 50000000; printf '\\105ND\\n'\n")
    t.until(rb"START\n")
    received = len(t.out) - t.out.index(b"START\n") - len(b"START\n")  # of the flood, acked

    def frame() -> bytes:
        while not isinstance(m := t.ws.receive(timeout=30), bytes):
            assert m is not None, "the flood stalled"
        return m

    unacked = 0  # everything received so far was acknowledged
    while unacked < WINDOW:
        unacked += len(frame())
    assert unacked == WINDOW
    assert t.ws.receive(timeout=0.5) is None  # paused: nothing more until an ack
    t.ws.send(json.dumps({"ack": unacked}))
    received += unacked
    tail, flood = b"", None
    while flood is None:
        m = frame()
        t.ws.send(json.dumps({"ack": len(m)}))
        if (at := (tail + m).find(b"END\n")) >= 0:
            flood = received - len(tail) + at
        else:
            assert not m.translate(None, b"y\n"), m[:100]  # nothing but y and newlines
        received += len(m)
        tail = m[-3:]
    assert flood == 50_000_000
    peak = rss_kib(worker, "VmHWM")
    assert peak - before < 16 * 1024, f"the worker's RSS grew by {peak - before} KiB"
    t.close()


# -- the vendored front end ------------------------------------------------------------------


def test_vendored_files_match_the_pins_and_the_manifest(tmp_path: Path):
    assert vendor.check() == []
    copy = tmp_path / "vendor"
    shutil.copytree(vendor.VENDOR, copy)
    (copy / "xterm" / "xterm.js").write_text("tampered")
    (copy / "uplot" / "LICENSE").unlink()
    (copy / "extra.js").write_text("")
    assert vendor.check(copy) == [
        "xterm/xterm.js: sha256 differs from the manifest",
        "uplot/LICENSE: missing",
        "extra.js: not in the manifest",
    ]
    manifest = json.loads((copy / "MANIFEST.json").read_text())
    manifest["packages"]["uplot"]["version"] = "0.0.1"
    (copy / "MANIFEST.json").write_text(json.dumps(manifest))
    assert "uplot: the manifest is not pinned 1.6.32 (make vendor)" in vendor.check(copy)


def fake_tarball(path: Path, files: dict[str, bytes]) -> bytes:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path.read_bytes()


def test_make_vendor_checks_the_pinned_integrity(tmp_path: Path, monkeypatch):
    """`vendor()` against a fake `npm`: what it packs is vendored only when it matches the
    pinned integrity, and a failure leaves the vendored files as they were."""
    tgz = fake_tarball(tmp_path / "pkg.tgz", {"dist/a.js": b"a()", "LICENSE": b"MIT", "x": b""})
    fake_program(
        tmp_path / "bin",
        "npm",
        'cp "$FAKE_TGZ" "$5/pkg-1.0.0.tgz"; echo \'[{"filename": "pkg-1.0.0.tgz"}]\'\n',
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_TGZ", str(tmp_path / "pkg.tgz"))
    pkg = vendor.Package("pkg", "1.0.0", vendor.integrity(tgz), "pkg", {"dist/a.js": "a.js"})
    monkeypatch.setattr(vendor, "PACKAGES", (pkg,))
    target = tmp_path / "vendor"
    manifest = vendor.vendor(target)
    assert (target / "pkg" / "a.js").read_bytes() == b"a()"
    assert sorted(p.name for p in target.rglob("*")) == ["MANIFEST.json", "a.js", "pkg"]
    assert manifest["packages"]["pkg"]["files"] == {"pkg/a.js": hashlib.sha256(b"a()").hexdigest()}
    assert vendor.check(target) == []

    bad = vendor.Package("pkg", "1.0.0", "sha512-AAAA", "pkg", {"dist/a.js": "a.js"})
    monkeypatch.setattr(vendor, "PACKAGES", (bad,))
    with pytest.raises(
        vendor.VendorError, match="pkg@1.0.0: integrity sha512-.* is not the pinned"
    ):
        vendor.vendor(target)
    missing = vendor.Package("pkg", "1.0.0", vendor.integrity(tgz), "pkg", {"dist/b.js": "b.js"})
    monkeypatch.setattr(vendor, "PACKAGES", (missing,))
    with pytest.raises(vendor.VendorError, match="pkg@1.0.0 has no file dist/b.js"):
        vendor.vendor(target)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(vendor.VendorError, match="npm is not on PATH"):
        vendor.vendor(target)
    monkeypatch.setattr(vendor, "PACKAGES", (pkg,))
    assert vendor.check(target) == []  # untouched by the failed runs

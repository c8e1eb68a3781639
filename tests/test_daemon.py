"""`hyperhive up` as a real process: the host socket, the build worker, /api/state,
recovery at start and a clean stop. Tests that change nothing share one daemon."""

import contextlib
import json
import os
import signal
import socket
import subprocess

import pytest
import simple_websocket
from support.daemon import Daemon, bearer, ws
from support.hive import HYPERHIVE, fresh_commit, git, run_cli
from support.inprocess import never_serve, run_main
from support.wait import wait_for

from hyperhive.daemon import hostsock
from hyperhive.errors import HiveError
from hyperhive.home import Home
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.states import State


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path / "hive").start()
    yield d
    d.kill()


@pytest.fixture(scope="module")
def untouched(tmp_path_factory):
    """A daemon for the tests that only read and are refused: none changes the hive."""
    d = Daemon(tmp_path_factory.mktemp("untouched") / "hive").start()
    yield d
    d.kill()


def test_up_initializes_a_new_home_and_serves_state(untouched):
    daemon = untouched
    state = daemon.get("/api/state")
    assert [a["name"] for a in state["agents"]] == ["manager"]
    assert [a["target"] for a in state["approvals"]] == ["manager#1"]
    assert (state["agents"][0]["build"], state["agents"][0]["queued"]) == (None, [])
    assert state["recent"] == [] and state["errors"] == []
    assert (daemon.root / "run" / "host.sock").stat().st_mode & 0o777 == 0o660


def test_approve_hands_the_build_to_the_daemon(daemon):
    applied = daemon.root / "applied" / "manager.git"
    wait_for(  # the daemon checks the proposal it finds at its start
        lambda: "checked/1" in git(applied, "tag", "--list", "checked/*").split(),
        what="the daemon to check manager#1",
    )
    proc = run_cli(daemon.root, "approve", "manager#1")
    assert proc.returncode == 0, proc.stderr
    assert "queued manager#1 on the daemon" in proc.stderr
    applied = daemon.root / "applied" / "manager.git"
    wait_for(
        lambda: "refs/tags/deployed/1" in git(applied, "for-each-ref", "--format=%(refname)"),
        what="the daemon to deploy manager#1",
    )
    state = daemon.get("/api/state")
    assert state["agents"][0]["deployed_approval"] == 1
    assert state["approvals"] == []
    assert "manager#1: build manager#1" in daemon.log.read_text()


def test_host_socket_refuses_bad_requests_and_keeps_serving(untouched):
    path = untouched.root / "run" / "host.sock"
    with socket.socket(socket.AF_UNIX) as s, s.makefile("rwb") as f:
        s.connect(str(path))
        for line in (b"{not json\n", b"[1, 2]\n", b'{"op": "launch"}\n'):
            f.write(line)
            f.flush()
            reply = json.loads(f.readline())
            assert reply["ok"] is False and reply["error"]
    with pytest.raises(HiveError, match="integer id"):
        hostsock.call(path, {"op": "deploy", "agent": "manager", "id": "1"})
    with pytest.raises(HiveError, match="invalid agent name"):
        hostsock.call(path, {"op": "deploy", "agent": "../x", "id": 1})
    with pytest.raises(HiveError, match="it is proposal"):
        hostsock.call(path, {"op": "deploy", "agent": "manager", "id": 1})
    with pytest.raises(HiveError, match="unknown approval"):
        hostsock.call(path, {"op": "deploy", "agent": "manager", "id": 7})
    assert hostsock.call(path, {"op": "ping"}) == {"ok": True}


def test_second_daemon_on_the_same_home_is_refused(untouched):
    daemon = untouched
    second = subprocess.run(
        [HYPERHIVE, "up", "--home", str(daemon.root), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert "already running" in second.stderr
    assert daemon.get("/api/state")["agents"]


@pytest.mark.parametrize(
    "toml, env, message",
    [
        ('[retention]\nprune_at = "4:00"\n', {}, "hyperhive.toml: retention.prune_at must be"),
        ("[retention\n", {}, "hyperhive.toml: Expected ']'"),
        ("", {"HYPERHIVE_TELEMETRY_STUCK_MINUTES": "0"}, "HYPERHIVE_TELEMETRY_STUCK_MINUTES: "),
    ],
)
def test_bad_settings_stop_up_before_it_touches_the_home(tmp_path, toml, env, message, monkeypatch):
    """The NixOS way: the home and its settings exist before the first start. (`up`'s
    main in this process: a real `up` refused is test_second_daemon_on_the_same_home.)"""
    never_serve(monkeypatch)
    root = tmp_path / "hive"
    root.mkdir()
    (root / "hyperhive.toml").write_text(toml)
    proc = run_main(root, "up", "--port", "0", env=env)
    assert proc.returncode == 1
    assert proc.stderr.startswith("hyperhive: ") and message in proc.stderr
    assert [p.name for p in root.iterdir()] == ["hyperhive.toml"]  # no hive was made


def test_sigterm_stops_cleanly(daemon):
    assert daemon.stop(signal.SIGTERM) == 0
    assert not (daemon.root / "run" / "host.sock").exists()
    assert "stopped" in daemon.log.read_text()


def test_sigint_stops_cleanly(daemon):
    assert daemon.stop(signal.SIGINT) == 0


def test_start_recovers_interrupted_builds_and_resumes_queued_ones(tmp_path):
    root = tmp_path / "hive"
    run_main(root, "init", check=True)
    home = Home(root)
    approvals = Approvals(home, "manager")
    (home.applied_dir("manager") / "hooks" / "post-receive").unlink()
    # manager#1: approved and building when its builder died.
    approvals.approve(1, "operator")
    approvals.transition(1, State.BUILDING, "hyperhive")
    # manager#2: approved but never started (the daemon stopped with it queued).
    approvals.propose(fresh_commit(home, "manager"), "operator")
    approvals.approve(2, "operator")

    daemon = Daemon(root).start()
    try:
        applied = home.applied_dir("manager")
        failed = git(applied, "cat-file", "-p", "failed/1")
        assert "Reason: interrupted" in failed
        wait_for(
            lambda: "deployed/2" in git(applied, "tag", "--list"),
            what="the queued build to resume",
        )
        assert "resuming a build queued before the last stop" in daemon.log.read_text()
    finally:
        assert daemon.stop() == 0
    # A stale socket left by a killed daemon does not stop the next start.
    daemon = Daemon(root).start()
    os.killpg(daemon.proc.pid, signal.SIGKILL)  # the master and its worker, no cleanup
    daemon.proc.wait()
    assert (root / "run" / "host.sock").exists()
    daemon = Daemon(root).start()
    assert daemon.stop() == 0


def test_deploy_without_daemon_builds_in_process(tmp_path):
    root = tmp_path / "hive"
    run_main(root, "init", check=True)
    (Home(root).applied_dir("manager") / "hooks" / "post-receive").unlink()
    run_main(root, "approve", "manager#1", check=True)
    # A socket file nobody listens on (a daemon killed earlier) is not a daemon.
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(root / "run" / "host.sock"))
    proc = run_cli(root, "deploy", "manager#1")  # a real process builds
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("deployed manager#1 ")


def test_websockets_need_auth_and_the_same_origin(untouched):
    daemon = untouched
    with pytest.raises(simple_websocket.ConnectionError) as refused:
        ws(daemon, "/ws/dashboard")
    assert refused.value.status_code == 401
    with pytest.raises(simple_websocket.ConnectionError) as refused:
        ws(daemon, "/ws/dashboard", Authorization=bearer(daemon), Origin="http://evil.example")
    assert refused.value.status_code == 403
    for have in ("[1]", "%7B%22agents%22%3A1%7D", "x" * 3000):  # not {"section": "version"}
        with pytest.raises(simple_websocket.ConnectionError) as refused:
            ws(daemon, f"/ws/dashboard?have={have}", Authorization=bearer(daemon))
        assert refused.value.status_code == 400


def test_dashboard_socket_pushes_a_proposal_made_by_another_process(daemon):
    client = ws(daemon, "/ws/dashboard", Authorization=bearer(daemon))
    try:
        first = json.loads(client.receive(timeout=30))
        assert 'data-target="manager#1"' in first["sections"]["approvals"]
        assert "manager#2" not in first["sections"]["approvals"]
        assert set(first["versions"]) == set(first["sections"]) >= {"agents", "errors"}
        fresh = fresh_commit(Home(daemon.root), "manager")  # something new to propose
        run_cli(daemon.root, "propose", "manager", fresh, "--reason", "again", check=True)
        # other updates may come first (manager#1's policy diff, evaluated in the background)
        seen = ""
        while 'data-target="manager#2"' not in seen:
            message = client.receive(timeout=30)
            assert message is not None, "no update with manager#2"
            seen = json.loads(message)["sections"].get("approvals", "")
    finally:
        client.close()


def test_build_socket_streams_the_log_and_ends(daemon):
    run_main(daemon.root, "approve", "manager#1", check=True)
    client = ws(daemon, "/ws/build/manager/1", Authorization=bearer(daemon))
    text, last = "", None
    try:
        while not (last and last["done"]):
            last = json.loads(client.receive(timeout=20))
            text += last["text"]
    finally:  # after `done` either side may close first
        with contextlib.suppress(simple_websocket.ConnectionClosed):
            client.close()
    assert last["state"] == "deployed"
    assert text == (daemon.root / "logs" / "manager" / "1.log").read_text()

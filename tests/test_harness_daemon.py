"""The whole chain on a real daemon with the local runtime: a deploy starts the agent's
harness, a message to it runs a turn in which the fake claude (on PATH) calls `send`
through the real `hyperhive mcp` and socket, the broker delivers it, the turn's telemetry
lands in hive.db; a redeploy restarts the harness, a killed harness is reported to the
manager and restarted, a stop or a destroy is no crash."""

import json
import os
import signal
import sqlite3
import threading
from pathlib import Path

import pytest
from support.claude import claude_script, fake_runs
from support.daemon import Daemon, bearer, ws
from support.hive import commit_config, git, run_cli
from support.wait import wait_for

from hyperhive.agents import create_agent
from hyperhive.daemon import hostsock
from hyperhive.errors import HiveError, RuntimeCommandError
from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime
from hyperhive.runtime.local_harness import _alive
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.deploy import deploy


def pid_of(home: Home, name: str) -> int | None:
    try:
        return int((home.agent_dir(name) / "harness.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None


def inbox(root, name) -> list[dict]:
    return json.loads(run_cli(root, "inbox", name, "--json", check=True).stdout)


def crash_reports(root) -> list[dict]:
    found = inbox(root, "manager")  # (a check's result is a message from system too)
    return [m for m in found if m["from"] == "system" and m["body"].startswith("container_crash")]


def queued(root, name: str, prefix: str = "") -> int:
    """Messages waiting for `name` whose body starts with `prefix`: a query, to poll on
    before `inbox` (a CLI process) is run once to read them."""
    with sqlite3.connect(root / "hive.db") as db:
        query = "SELECT count(*) FROM messages WHERE recipient = ? AND delivered_at IS NULL"
        query += " AND substr(body, 1, ?) = ?"
        return db.execute(query, (name, len(prefix), prefix)).fetchone()[0]


def deployed(root, name, approval_id) -> bool:
    tags = git(Home(root).applied_dir(name), "tag", "--list")
    return f"deployed/{approval_id}" in tags.split()


@pytest.fixture
def hive(home, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{claude_script(tmp_path / 'bin').parent}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_CLAUDE_HOME", str(tmp_path / "fake-claude"))
    root = home.root  # initialized in this process: the CLI's init is not what is tested
    create_agent(home, "alice", LocalRuntime(home), "operator")
    create_agent(home, "bob", LocalRuntime(home), "operator")  # never deployed: its inbox stays
    daemons = []

    def start() -> Daemon:
        daemons.append(Daemon(root).start())
        return daemons[-1]

    yield root, start
    for d in daemons:
        d.kill()


def test_a_message_runs_a_turn_that_reaches_bob_and_is_recorded(hive):
    root, start = hive
    home = Home(root)
    daemon = start()
    run_cli(root, "approve", "alice#1", check=True)
    harness_log = home.log_dir("alice") / "harness.log"
    wait_for(lambda: harness_log.exists() and "ready on" in harness_log.read_text(), what="alice")
    first = pid_of(home, "alice")
    agents = json.loads(run_cli(root, "agent", "list", "--json", check=True).stdout)
    assert {a["name"]: a["runtime"]["state"] for a in agents} == {
        "alice": "running",
        "bob": "not deployed",
        "manager": "not deployed",
    }
    assert json.loads((home.agent_dir("alice") / "etc" / "policy.json").read_text()) == {
        "allowedBash": None,
        "allowedRecipients": None,
        "model": None,
        "claude": None,  # `claude` on the daemon's PATH: the fake
        "notesCompactBytes": None,
        "allowSubagents": None,  # not set: the harness reads it as false
    }

    # turn_report is the harness's op, no MCP tool; a bad report is refused whole
    sock = home.agent_socket("alice")
    assert "turn_report" not in hostsock.call(sock, {"op": "whoami"})["tools"]
    for bad in (None, {"exit": "meh"}, {"exit": "ok", "duration": -1}):
        with pytest.raises(HiveError, match="turn report|report"):
            hostsock.call(sock, {"op": "turn_report", "report": bad})

    # harness → fake claude → hyperhive mcp → alice's socket → daemon → broker → bob
    run_cli(root, "send", "operator", "alice", 'fake: call send {"to": "bob", "body": "hi bob"}')
    wait_for(lambda: queued(root, "bob"), what="bob's message")
    (got,) = inbox(root, "bob")
    assert (got["from"], got["body"]) == ("alice", "hi bob")

    def rows():
        with sqlite3.connect(root / "hive.db") as db:
            return dict(db.execute("SELECT key, value FROM stats WHERE agent = 'alice'"))

    stats = wait_for(lambda: "turn" in rows() and rows(), what="the turn report")
    assert {k: v for k, v in stats.items() if k != "turn.duration"} == {
        "turn": 1,
        "turn.exit.ok": 1,
        "turn.tool_calls": 1,
        "tool.mcp__hyperhive__send": 1,
        "turn.sent": 1,
        "sent.peer": 1,
        "turn.received": 1,
        "received.operator": 1,
        "inbox.depth": 0,
        "notes.bytes": 0,
        "turn.cost_usd": 0.0123,
        "turn.denials": 0,
    }
    assert stats["turn.duration"] > 0
    with sqlite3.connect(root / "hive.db") as db:  # the harness acknowledged what it ran
        alice = "SELECT delivered_at IS NOT NULL, leased FROM messages WHERE recipient = 'alice'"
        assert db.execute(alice).fetchall() == [(1, 0)]

    # a new deploy restarts the harness at the new revision
    commit = commit_config(home, "alice", {"notes/readme.md": "v2\n"}, "second config")
    run_cli(root, "propose", "alice", check=True)
    run_cli(root, "approve", "alice#2", check=True)
    wait_for(lambda: deployed(root, "alice", 2), what="alice#2")
    wait_for(lambda: pid_of(home, "alice") not in (None, first), what="the restart")
    wait_for(lambda: f"starts at {commit}" in harness_log.read_text(), what="the new revision")
    assert not _alive(first)

    # killed: the manager hears of it with the log tail, the harness comes back
    second = pid_of(home, "alice")
    os.kill(second, signal.SIGKILL)
    wait_for(lambda: queued(root, "manager", "container_crash"), what="the crash report")
    (report,) = crash_reports(root)
    lines = report["body"].splitlines()
    assert lines[0] == "container_crash: alice"
    assert "exited unexpectedly (killed by SIGKILL); it is restarted in 0.2 s" in lines[1]
    assert any("ready on" in line for line in lines[2:])
    wait_for(lambda: pid_of(home, "alice") not in (None, second), what="the restart", timeout=30)

    # the daemon's stop stops the harness; its start starts it again; no crash either time
    third = pid_of(home, "alice")
    assert daemon.stop() == 0
    assert not _alive(third) and pid_of(home, "alice") is None
    start()
    wait_for(lambda: pid_of(home, "alice") not in (None, third), what="the start")
    fourth = pid_of(home, "alice")

    # a destroy from the CLI stops the daemon's harness: no crash
    run_cli(root, "agent", "destroy", "alice", check=True)
    wait_for(lambda: not _alive(fourth), what="alice's harness to end")
    assert pid_of(home, "alice") is None
    assert len(crash_reports(root)) == 1
    assert not (home.agent_dir("alice") / "etc").exists()


def test_local_runtime_start_stop_and_crash_without_a_daemon(home, runtime):
    """The local runtime's harness processes on their own (no daemon answers: the
    harnesses wait for one): start once, find a stray, stop from another process's view,
    report only an unasked exit."""
    with pytest.raises(RuntimeCommandError, match="not deployed"):
        runtime.start("manager")
    (home.applied_dir("manager") / "hooks" / "post-receive").unlink()
    Approvals(home, "manager").approve(1, "operator")
    deploy(home, "manager", 1, runtime)
    exits = []
    runtime.watch(lambda name, status: exits.append((name, status)))
    # the first harness's reaper is held until another runtime has started a new one
    gate, reap = threading.Event(), runtime.harnesses._reap
    runtime.harnesses._reap = lambda name, proc: (gate.wait(30), reap(name, proc))
    try:
        runtime.start("manager")
        runtime.harnesses._reap = reap
        first = pid_of(home, "manager")
        runtime.start("manager")  # runs the deployed revision already: nothing to do
        assert pid_of(home, "manager") == first and _alive(first)
        assert runtime.status("manager")["state"] == "running"

        # a daemon started anew finds the harness of the one before and replaces it
        other = LocalRuntime(home)
        # (once it runs the harness: between fork and exec a process is not one yet)
        wait_for(lambda: other.harnesses.recorded_pid("manager") == first, what="exec")
        other.start("manager")
        second = pid_of(home, "manager")
        assert second != first and not _alive(first)
        # the first runtime's reaper of its harness, through: it spares the new one
        gate.set()
        wait_for(lambda: "manager" not in runtime.harnesses.running, what="the reaper")
        assert _alive(second) and LocalRuntime(home).status("manager")["state"] == "running"

        # stopped through the pid file (as a CLI destroy does): no crash for its parent
        other.watch(lambda name, status: exits.append((name, status)))
        LocalRuntime(home).stop("manager")
        assert not _alive(second) and runtime.status("manager")["state"] == "stopped"

        runtime.start("manager")
        third = pid_of(home, "manager")
        os.kill(third, signal.SIGKILL)
        wait_for(lambda: exits, what="the exit report")
        assert exits == [("manager", -signal.SIGKILL)]
        assert pid_of(home, "manager") is None
        assert any("harness of manager starts at" in x for x in runtime.log_tail("manager"))
    finally:
        runtime.stop("manager")


def test_an_exit_not_yet_reaped_is_reported_not_overtaken_by_a_start(home, runtime, monkeypatch):
    """A sync's start that comes between a harness's exit and its reaper neither restarts
    it at once nor swallows the crash report: the reaper tells, the backoff restarts."""
    import threading

    from hyperhive.runtime.local_harness import Harnesses

    gate, reaped = threading.Event(), threading.Event()
    reap = Harnesses._reap

    def held(self, name, proc):
        gate.wait(30)
        reap(self, name, proc)
        reaped.set()

    monkeypatch.setattr(Harnesses, "_reap", held)
    (home.applied_dir("manager") / "hooks" / "post-receive").unlink()
    Approvals(home, "manager").approve(1, "operator")
    deploy(home, "manager", 1, runtime)
    exits = []
    runtime.watch(lambda name, status: exits.append((name, status)))
    try:
        runtime.start("manager")
        proc = runtime.harnesses.running["manager"].proc
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        runtime.start("manager")  # the supervisor's sync, before the reaper ran
        gate.set()
        assert reaped.wait(30)
        assert exits == [("manager", -signal.SIGKILL)]
        assert pid_of(home, "manager") is None and "manager" not in runtime.harnesses.running
    finally:
        gate.set()
        runtime.stop("manager")


def test_a_harness_log_past_its_limit_is_rotated_at_the_next_start(home, runtime, monkeypatch):
    from hyperhive.runtime import local_harness

    monkeypatch.setattr(local_harness, "MAX_LOG_BYTES", 1000)
    (home.applied_dir("manager") / "hooks" / "post-receive").unlink()
    Approvals(home, "manager").approve(1, "operator")
    deploy(home, "manager", 1, runtime)
    log = runtime.harnesses.log_file("manager")
    log.parent.mkdir(parents=True, exist_ok=True)
    old = "an old line\n" * 100
    log.write_text(old)
    try:
        runtime.start("manager")
        assert log.with_name("harness.log.1").read_text() == old  # kept once, not grown
        assert log.read_text().startswith("--- ") and "an old line" not in log.read_text()
    finally:
        runtime.stop("manager")


def test_an_agent_whose_claude_cannot_start_is_failing_and_loses_no_message(hive):
    """The case an operator could not see: no `claude` on the daemon's PATH. `up` says so
    at its start (its log, the dashboard's banner); the agent is `failing` with the cause
    in the Agents table, /api/state and `agent list` alike; the harness log follows live;
    the message its turns failed on is a dead letter, requeued once claude is installed.
    And a daemon worker killed outright takes its harness with it (the lifeline)."""
    root, start = hive
    home = Home(root)
    claude = root.parent / "bin" / "claude"
    hidden = claude.rename(root.parent / "claude.hidden")  # nothing on PATH
    run_cli(root, "approve", "alice#1", check=True)
    daemon = start()
    harness_log = home.log_dir("alice") / "harness.log"
    wait_for(lambda: harness_log.exists() and "ready on" in harness_log.read_text(), what="alice")
    missing = "its claude cannot be found: `claude` is not on the daemon's PATH"
    assert f"alice: {missing}: its turns fail until it can" in daemon.log.read_text()
    assert daemon.get("/api/state")["alerts"]["claude"][0]["agent"] == "alice"

    def alice() -> tuple | None:
        """alice's (state, error) when the CLI and the forge say the same (None while a
        change lands between the two reads)."""
        listed = json.loads(run_cli(root, "agent", "list", "--json", check=True).stdout)
        from_api = {a["name"]: a["runtime"] for a in daemon.get("/api/state")["agents"]}
        from_cli = {a["name"]: a["runtime"] for a in listed}
        return (
            (from_cli["alice"]["state"], from_cli["alice"]["error"])
            if (from_cli == from_api)
            else None
        )

    def forge_says(expected: tuple) -> bool:
        runtime = {a["name"]: a["runtime"] for a in daemon.get("/api/state")["agents"]}["alice"]
        return (runtime["state"], runtime["error"]) == expected

    def agreed(expected: tuple, timeout: float = 30.0) -> None:
        # the forge first (an HTTP call, where each `agent list` is a process), then both
        wait_for(lambda: forge_says(expected), timeout, what=f"the forge: alice {expected}")
        wait_for(lambda: alice() == expected, timeout, what=f"alice {expected}")

    agreed(("failing", missing))

    follow = ws(daemon, f"/ws/harness/alice?offset={harness_log.stat().st_size}",
                Authorization=bearer(daemon))  # fmt: skip
    try:
        # three messages, a turn each (each new one wakes the harness): the first has
        # then failed three turns and is given up
        for n in range(3):
            run_cli(root, "send", "operator", "alice", f"hello {n}", check=True)
            wait_for(lambda n=n: failures(root) == n + 1, what=f"failed turn {n + 1}")
        followed = ""
        while "giving up on message" not in followed:
            followed += json.loads(follow.receive(timeout=20))["text"]
        assert "cannot run claude: [Errno 2] No such file or directory: 'claude'" in followed
    finally:
        follow.close()
    (dead,) = json.loads(run_cli(root, "inbox", "alice", "--dead", "--json").stdout)["messages"]
    assert dead["body"] == "hello 0" and dead["reason"].startswith(
        "given up after 3 failed turns: cannot run claude: [Errno 2] No such file"
    )
    assert daemon.get("/api/state")["dead"]["counts"] == {"alice": 1}

    hidden.rename(claude)  # installed: the supervisor's next sync sees it
    wait_for(lambda: not daemon.get("/api/state")["alerts"]["claude"], what="the banner to go")
    # alice's sandbox is made anew with that claude in it, and the batch still pending
    # (hello 1 and 2, not yet given up) runs at once: a whole turn that works makes alice
    # running (on a loaded machine too); the dead letter waits for the operator
    agreed(("running", None), timeout=60)
    # sandboxed, the fake keeps its records in its HOME, the agent's state
    records = root / "agents" / "alice" / "state" / ".fake-claude"

    def ran(body: str) -> bool:
        return any(body in r["prompt"] for r in fake_runs(records))

    assert ran("hello 1") and ran("hello 2") and not ran("hello 0")
    run_cli(root, "requeue", "alice", str(dead["id"]), check=True)
    wait_for(lambda: ran("hello 0"), 60, what="the dead letter's turn")
    agreed(("running", None))
    assert json.loads(run_cli(root, "inbox", "alice", "--dead", "--json").stdout) == {
        "messages": [],
        "next": None,
    }

    # the daemon's worker killed outright: its harness does not outlive it
    harness = pid_of(home, "alice")
    worker = int(Path(f"/proc/{harness}/stat").read_text().rpartition(")")[2].split()[1])
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: not _alive(harness), what="the harness of the killed worker to end")


def failures(root) -> int:
    with sqlite3.connect(root / "hive.db") as db:
        query = "SELECT count(*) FROM stats WHERE agent = 'alice' AND key = 'turn.exit.failure'"
        return db.execute(query).fetchone()[0]

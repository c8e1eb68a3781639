"""The harness: its claude config and allow-list, its prompt, notes compaction, and the
turn loop as a real `hyperhive harness` process driving the fake claude
(tests/fake_claude.py), which starts the real `hyperhive mcp` against a socket.

Here the socket is served in this process (`FakeDaemon`: scripted inbox, recorded sends
and turn reports; `BrokerDaemon`: the daemon's own ops on a real hive.db, for the leased
recv); tests/test_harness_daemon.py runs the same chain on a real daemon."""

import contextlib
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from support.claude import claude_script, fake_runs
from support.hive import HYPERHIVE, run_cli
from support.wait import wait_for

from hyperhive.daemon.hostsock import HostSocket
from hyperhive.errors import HiveError
from hyperhive.harness.claude_config import (
    CLAUDE_TOOLS,
    allowed_mcp_tools,
    allowed_tools,
    bash_tools,
    claude_env,
    edit_rule,
    load_extras,
    permission_args,
    render_claude_config,
)
from hyperhive.harness.events import Run
from hyperhive.harness.loop import MAX_ATTEMPTS, Config, Harness, PolicyUnreadable
from hyperhive.harness.notes import DEFAULT_COMPACT_BYTES
from hyperhive.harness.prompt import system_prompt, turn_prompt
from hyperhive.wire.ops import tools_for

SOCKET = "/run/hyperhive/agent.sock"
CMD = ["hyperhive"]
AGENT_TOOLS, MANAGER_TOOLS = tools_for("agent"), tools_for("manager")  # the operation table
HYPERHIVE_TOOLS = [f"mcp__hyperhive__{t}" for t in AGENT_TOOLS]
STATE = Path("/state")


# -- --mcp-config and --allowedTools ------------------------------------------------------


def write_extras(etc: Path, value) -> Path:
    etc.mkdir(parents=True, exist_ok=True)
    path = etc / "extra-mcp.json"
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return path


def test_no_extras(tmp_path, caplog):
    extras = load_extras(tmp_path / "extra-mcp.json")  # missing: no extras, no warning
    assert extras == {} and caplog.records == []
    assert render_claude_config(SOCKET, extras, CMD) == {
        "mcpServers": {
            "hyperhive": {"command": "hyperhive", "args": ["mcp", "--socket", SOCKET], "env": {}}
        }
    }
    assert allowed_mcp_tools("agent", extras) == HYPERHIVE_TOOLS
    assert allowed_tools("agent", extras, {"allowedBash": None}, STATE) == [
        *CLAUDE_TOOLS,
        "Edit(//state/**)",
        "Bash",
        *HYPERHIVE_TOOLS,
    ]
    manager = allowed_mcp_tools("manager", extras)
    assert manager == [f"mcp__hyperhive__{t}" for t in MANAGER_TOOLS]
    assert "mcp__hyperhive__request_spawn" in manager
    with pytest.raises(ValueError, match="unknown flavour"):
        allowed_mcp_tools("root", extras)


def test_two_extras_one_wildcard_one_list(tmp_path):
    path = write_extras(
        tmp_path,
        {
            "fetch": {"command": "/bin/fetch-mcp", "args": ["--safe"], "allowedTools": ["*"]},
            "git": {
                "command": "git-mcp",
                "env": {"GIT_DIR": "/state/repo"},
                "allowedTools": ["log", "diff"],
            },
        },
    )
    extras = load_extras(path)
    config = render_claude_config(SOCKET, extras, ["/nix/store/x/bin/hyperhive"])
    assert config["mcpServers"] == {
        "fetch": {"command": "/bin/fetch-mcp", "args": ["--safe"], "env": {}},
        "git": {"command": "git-mcp", "args": [], "env": {"GIT_DIR": "/state/repo"}},
        "hyperhive": {
            "command": "/nix/store/x/bin/hyperhive",
            "args": ["mcp", "--socket", SOCKET],
            "env": {},
        },
    }
    assert allowed_mcp_tools("agent", extras) == [
        *HYPERHIVE_TOOLS,
        "mcp__fetch__*",
        "mcp__git__log",
        "mcp__git__diff",
    ]
    # allowedTools defaults to every tool of the server
    extras = load_extras(write_extras(tmp_path, {"fetch": {"command": "f"}}))
    assert allowed_mcp_tools("agent", extras)[-1] == "mcp__fetch__*"


def test_an_extra_keyed_hyperhive_is_dropped_with_a_warning(tmp_path, caplog):
    path = write_extras(
        tmp_path,
        {
            "hyperhive": {"command": "/tmp/evil", "args": ["--pretend"]},
            "fetch": {"command": "fetch-mcp"},
        },
    )
    with caplog.at_level(logging.WARNING, "hyperhive.harness"):
        extras = load_extras(path)
    assert list(extras) == ["fetch"]
    assert "dropping the extra MCP server 'hyperhive'" in caplog.text
    config = render_claude_config(SOCKET, extras, CMD)
    assert config["mcpServers"]["hyperhive"]["command"] == "hyperhive"
    assert "mcp__hyperhive__*" not in allowed_mcp_tools("agent", extras)
    # even handed one directly, the built-in entry wins
    forged = {"hyperhive": {"command": "/tmp/evil", "args": [], "env": {}, "allowedTools": ["*"]}}
    assert render_claude_config(SOCKET, forged, CMD)["mcpServers"]["hyperhive"]["command"] == (
        "hyperhive"
    )
    assert allowed_mcp_tools("agent", forged) == HYPERHIVE_TOOLS


@pytest.mark.parametrize(
    "text, said",
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"ok": {"command": "x"}, "bad": {"args": []}}), "bad: needs a `command`"),
        (json.dumps({"ok": {"command": "x", "allowedTools": "log"}}), "ok.allowedTools"),
        (json.dumps({"ok": {"command": "x", "env": {"A": 1}}}), "ok.env"),
        (json.dumps({"has space": {"command": "x"}}), "server key 'has space'"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_a_malformed_extras_file_means_no_extras_and_a_warning(tmp_path, caplog, text, said):
    path = tmp_path / "extra-mcp.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with caplog.at_level(logging.WARNING, "hyperhive.harness"):
        extras = load_extras(path)
    assert extras == {}  # never half of the map
    assert said in caplog.text
    assert list(render_claude_config(SOCKET, extras, CMD)["mcpServers"]) == ["hyperhive"]


def test_bash_patterns_replace_the_blanket_permission():
    assert bash_tools(None) == ["Bash"]
    assert bash_tools(["git *", "nix build .*"]) == ["Bash(git *)", "Bash(nix build .*)"]
    assert bash_tools([]) == []
    tools = allowed_tools("agent", {}, {"allowedBash": ["git *", "nix build .*"]}, STATE)
    assert "Bash" not in tools
    n = len(CLAUDE_TOOLS) + 1
    assert tools[n : n + 2] == ["Bash(git *)", "Bash(nix build .*)"]
    assert "Bash" in allowed_tools("agent", {}, {}, STATE)  # no allowedBash key: back-compatible


def test_permissions_deny_by_default_and_scope_the_editors_to_the_state():
    assert edit_rule(Path("/var/lib/hyperhive/agents/a/state")) == (
        "Edit(//var/lib/hyperhive/agents/a/state/**)"  # `//`: an absolute path
    )
    args = permission_args("agent", {}, {"allowedBash": []}, STATE)
    assert args[:3] == ["--permission-mode", "dontAsk", "--setting-sources="]
    allowed = args[args.index("--allowedTools") + 1 : args.index("--disallowedTools")]
    assert allowed == [*CLAUDE_TOOLS, "Edit(//state/**)", *HYPERHIVE_TOOLS]
    assert not {"Write", "Edit", "NotebookEdit", "Agent"} & set(allowed)  # no blanket editor
    assert args[args.index("--disallowedTools") + 1 :] == ["Agent", "Workflow"]
    # sub-agents only when the policy allows them
    args = permission_args("agent", {}, {"allowSubagents": True}, STATE)
    assert "--disallowedTools" not in args and "Agent" in args
    env = claude_env(STATE, {"PATH": "/bin"})
    assert env == {"PATH": "/bin", "CLAUDE_CONFIG_DIR": "/state/.claude",
                   "ENABLE_TOOL_SEARCH": "false"}  # fmt: skip


# -- reading the CLI's events ---------------------------------------------------------------


def fold(*events: dict) -> Run:
    run = Run()
    for e in events:
        run.feed(json.dumps(e))
    return run


def use(use_id: str, name: str, parent: str | None = None, **args) -> dict:
    block = {"type": "tool_use", "id": use_id, "name": name, "input": args}
    message = {"role": "assistant", "content": [block]}
    return {"type": "assistant", "message": message, "parent_tool_use_id": parent,
            "session_id": "s1"}  # fmt: skip


def result_event(cost: float | None, total: float, **more) -> dict:
    usage = {"m": {"costUSD": cost}} if cost is not None else None
    event = {"type": "result", "subtype": "success", "is_error": False, "result": "Done.",
             "session_id": "s1", "total_cost_usd": total,
             "terminal_reason": "completed"}  # fmt: skip
    if usage is not None:
        event["model_usage_since_last_result"] = usage
    return {**event, **more}


def test_sub_agent_events_and_a_second_result_are_counted_apart():
    """Events with a parent_tool_use_id are the sub-agent's; a background task may add
    a second init and result: each result's own cost counts once."""
    run = fold(
        {"type": "system", "subtype": "init", "session_id": "s1", "tools": []},
        use("t1", "Agent"),
        use("t2", "Bash", parent="t1", command="ls"),
        use("t3", "Bash", command="rm -rf /"),
        {
            "type": "system",
            "subtype": "permission_denied",
            "tool_name": "Bash",
            "tool_use_id": "t3",
            "message": "denied",
        },  # fmt: skip
        result_event(0.01, 0.05, permission_denials=[{"tool_name": "Bash", "tool_use_id": "t3"}]),
        {"type": "system", "subtype": "init", "session_id": "s2-background", "tools": []},
        result_event(0.02, 0.07),
    )
    assert run.session_id == "s1" and len(run.inits) == 2 and len(run.results) == 2
    assert run.tools == {"Agent": 1} and run.subagent_tools == {"Bash": 1}
    assert run.denials == {"Bash": 1}  # told twice, one denial
    assert run.cost() == pytest.approx(0.03)  # not the session's cumulative 0.07


def test_cost_without_usage_since_the_last_result_is_the_growth_of_the_total():
    assert fold(result_event(None, 0.5)).cost(0.3) == pytest.approx(0.2)
    assert fold(result_event(None, 0.5)).cost() == pytest.approx(0.5)  # a new session


def test_compaction_and_failure_signals():
    failed = fold(
        {"type": "system", "subtype": "status", "status": "compacting"},
        {
            "type": "system",
            "subtype": "status",
            "compact_result": "failed",
            "compact_error": "exhausted",
        },  # fmt: skip
        result_event(
            None,
            0.0,
            is_error=True,
            result="Prompt is too long",
            terminal_reason="prompt_too_long",
            api_error_status=400,
        ),  # fmt: skip
    )
    assert not failed.succeeded(1) and failed.context_full()
    assert failed.compacted() is False and not failed.auto_compacted()
    assert failed.failure_reason() == "prompt_too_long, API 400: Prompt is too long"
    auto = fold(
        {"type": "system", "subtype": "status", "compact_result": "success"},
        {
            "type": "system",
            "subtype": "compact_boundary",
            "compact_metadata": {"trigger": "auto"},
        },  # fmt: skip
        result_event(0.01, 0.02),
    )
    assert auto.succeeded(0) and auto.auto_compacted() and auto.compacted()
    # "Not enough messages to compact": no compaction event, so no compaction
    assert fold(result_event(0.0, 0.0, result="")).compacted() is None


# -- the prompt ---------------------------------------------------------------------------


def test_the_extra_tools_note_only_for_agents_with_extras(tmp_path):
    notes = tmp_path / "notes.md"
    plain = system_prompt("agent", "", notes, [])
    assert "You are a hyperhive agent" in plain and "mcp__<server>__<tool>" not in plain
    assert "It is empty so far" in plain
    extra = system_prompt("agent", "- the build needs nix", notes, ["fetch", "git"])
    assert "mcp__<server>__<tool>" in extra and "`fetch`, `git`" in extra
    assert "agent.nix" in extra and "- the build needs nix" in extra
    assert "You are the hyperhive manager" in system_prompt("manager", "", notes, [])
    huge = system_prompt("agent", "n" * 200_000, notes, [])
    assert len(huge.encode()) < 100_000 and "read the file for the rest" in huge


def test_turn_prompt_lists_every_message():
    text = turn_prompt(
        [
            {"id": 3, "from": "operator", "body": "first", "time": 0},
            {"id": 4, "from": "bob", "body": "second\nline", "time": 60},
        ],
        retried={3},
    )
    assert "You have 2 new messages" in text
    assert "--- message #3 from operator at 1970-01-01 00:00:00 UTC (handed to you" in text
    assert "--- message #4 from bob at 1970-01-01 00:01:00 UTC\nsecond\nline" in text


# -- notes compaction --------------------------------------------------------------------


@pytest.fixture
def fake_env(tmp_path, monkeypatch):
    """The fake claude's home (its sessions and run log), for this test only."""
    home = tmp_path / "fake-claude"
    monkeypatch.setenv("FAKE_CLAUDE_HOME", str(home))
    return home


def harness_dirs(tmp_path, policy=None, extras=None) -> tuple[Path, Path]:
    state, etc = tmp_path / "state", tmp_path / "etc"
    state.mkdir(parents=True, exist_ok=True)
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "policy.json").write_text(json.dumps(policy or {"allowedBash": None, "model": None}))
    if extras is not None:
        (etc / "extra-mcp.json").write_text(json.dumps(extras))
    return state, etc


def notes_harness(tmp_path, **policy) -> Harness:
    claude = claude_script(tmp_path / "bin")
    state, etc = harness_dirs(tmp_path, {"model": "claude-small", "claude": str(claude), **policy})
    return Harness(Config(socket=tmp_path / "none.sock", state=state, etc=etc))


def test_notes_over_the_threshold_are_compacted_with_a_backup(tmp_path, fake_env):
    h = notes_harness(tmp_path)
    original = "".join(f"- fact {i % 50}: something worth keeping\n" for i in range(1500))
    assert len(original) > DEFAULT_COMPACT_BYTES  # the threshold when the policy sets none
    h.notes_path.write_text(original)
    h.maybe_compact_notes(h.policy())
    (backup,) = h.notes_path.parent.glob("notes.md.*.bak")
    assert backup.read_text() == original  # nothing is lost
    compacted = h.notes_path.read_text()
    assert compacted.startswith("# compacted\n") and len(compacted) < 4096
    assert "- fact 49: something worth keeping" in compacted
    (run,) = fake_runs(fake_env)
    assert "<notes>\n- fact 0" in run["prompt"] and "keep every fact" in run["prompt"]
    assert run["argv"][run["argv"].index("--model") + 1] == "claude-small"
    assert json.loads(run["argv"][run["argv"].index("--mcp-config") + 1]) == {"mcpServers": {}}


@pytest.mark.parametrize("mode", ["fail", "empty"])
def test_a_failed_compaction_leaves_the_notes_untouched(tmp_path, fake_env, monkeypatch, mode):
    monkeypatch.setenv("FAKE_CLAUDE_COMPACT", mode)
    h = notes_harness(tmp_path)
    original = "y" * 40_000
    h.notes_path.write_text(original)
    h.maybe_compact_notes(h.policy())
    assert h.notes_path.read_text() == original
    assert list(h.notes_path.parent.glob("*.bak")) == []
    assert len(fake_runs(fake_env)) == 1


def test_a_compaction_the_disk_refuses_leaves_the_notes_and_the_harness_alive(
    tmp_path, fake_env, caplog
):
    h = notes_harness(tmp_path)
    original = "- a fact\n" * 5000
    h.notes_path.write_text(original)
    (h.notes_path.parent / "notes.md.new").mkdir()  # the swap cannot write its file
    h.maybe_compact_notes(h.policy())
    assert h.notes_path.read_text() == original
    assert "notes compaction failed" in caplog.text


def test_notes_under_the_threshold_are_left_alone(tmp_path, fake_env):
    h = notes_harness(tmp_path)
    h.notes_path.write_text("short\n")
    h.maybe_compact_notes(h.policy())
    assert fake_runs(fake_env) == [] and h.notes_path.read_text() == "short\n"


def test_the_notes_threshold_is_the_policys(tmp_path, fake_env):
    notes = "- a fact\n" * 250  # 2250 bytes: far under the default threshold
    h = notes_harness(tmp_path, notesCompactBytes=None)
    h.notes_path.write_text(notes)
    h.maybe_compact_notes(h.policy())
    assert fake_runs(fake_env) == [] and h.notes_path.read_text() == notes
    h = notes_harness(tmp_path, notesCompactBytes=len(notes))  # at the threshold: kept
    h.maybe_compact_notes(h.policy())
    assert fake_runs(fake_env) == []
    h = notes_harness(tmp_path, notesCompactBytes=2048)
    h.maybe_compact_notes(h.policy())
    assert len(fake_runs(fake_env)) == 1
    assert h.notes_path.read_text().startswith("# compacted\n")
    (backup,) = h.notes_path.parent.glob("notes.md.*.bak")
    assert backup.read_text() == notes


@pytest.mark.parametrize(
    "policy, said",
    [
        ({"claude": "bin/claude"}, "hyperhive.claude must be null or an absolute path"),
        ({"claude": ["/bin/claude"]}, "hyperhive.claude must be null or an absolute path"),
        ({"notesCompactBytes": 0}, "notesCompactBytes must be a positive integer (bytes), not 0"),
        ({"notesCompactBytes": "32k"}, 'must be a positive integer (bytes), not "32k"'),
        ({"notesCompactBytes": 1.5}, "must be a positive integer (bytes), not 1.5"),
        ({"notesCompactBytes": True}, "must be a positive integer (bytes), not true"),
    ],
)
def test_an_invalid_policy_value_is_refused(tmp_path, policy, said):
    h = notes_harness(tmp_path, **policy)
    with pytest.raises(PolicyUnreadable) as e:
        h.policy()
    assert "policy.json is invalid: " in str(e.value) and said in str(e.value)


def test_a_batch_given_up_at_the_start_is_dropped_and_told_once(tmp_path, caplog, fake_daemon):
    """A batch whose last allowed turn was cut short (a stop) is given up when the harness
    starts again: the daemon gets it as dead letters, then its file is emptied, so it is
    not told again at every loop."""
    state, etc = harness_dirs(tmp_path)
    h = Harness(Config(socket=fake_daemon.sock.path, state=state, etc=etc))
    message = {"id": 7, "from": "bob", "body": "hi", "time": 1.0}
    h.save_inflight([{"message": message, "attempts": MAX_ATTEMPTS, "error": "boom\nbang"}])
    assert h.load_inflight() == [] and h.load_inflight() == []
    assert caplog.text.count("giving up on message #7") == 1
    assert json.loads((state / ".hyperhive" / "inflight.json").read_text()) == []
    assert fake_daemon.dead == [([7], f"given up after {MAX_ATTEMPTS} failed turns: boom\nbang")]


def test_dead_letters_wait_for_a_daemon_that_does_not_answer(tmp_path, short_dir):
    """Given-up messages leave inflight.json only once the daemon has them: while it does
    not answer they stay, and a stop then leaves them for the next start."""
    state, etc = harness_dirs(tmp_path)
    h = Harness(Config(socket=short_dir / "agent.sock", state=state, etc=etc))
    item = {"message": {"id": 7, "from": "bob", "body": "hi", "time": 1.0}, "attempts": 3}
    h.save_inflight([item])
    daemon = FakeDaemon(short_dir / "agent.sock")
    tries = []
    real_call = h.call

    def call(request, timeout=30.0):
        tries.append(request["op"])
        if len(tries) == 2:  # the daemon comes up after a first try that found none
            daemon.sock.start()
        return real_call(request, timeout)

    h.call = call
    try:
        assert h.load_inflight() == []
    finally:
        daemon.stop()
    assert tries == ["give_up", "give_up"] and daemon.dead == [
        ([7], "given up after 3 failed turns")
    ]
    assert json.loads((state / ".hyperhive" / "inflight.json").read_text()) == []


LINGERING = """#!/bin/sh
sleep 300 &
echo $! > child.pid
echo '{"type": "system", "subtype": "init", "session_id": "s1", "mcp_servers": []}'
%s
exec sleep 300
"""
RESULT = (
    '{"type": "result", "subtype": "success", "is_error": false, "result": "done", '
    '"session_id": "s1", "total_cost_usd": 0.5}'
)


def run_lingering(tmp_path, result: bool, **config) -> tuple[int, object, int]:
    """Run a `claude` that never exits and leaves a child holding its stdout (as a real
    one does with an MCP server or a background job that does not end)."""
    script = tmp_path / "claude"
    script.write_text(LINGERING % (f"echo '{RESULT}'" if result else ""))
    script.chmod(0o755)
    state = tmp_path / "state"
    state.mkdir()
    h = Harness(Config(socket=tmp_path / "none.sock", state=state, **config))
    done = {}
    t = threading.Thread(target=lambda: done.update(r=h.run_claude([str(script)], "hi")))
    t.daemon = True
    t.start()
    t.join(30)
    child = int((state / "child.pid").read_text())
    try:
        assert "r" in done, "run_claude did not come back"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    code, run = done["r"]
    return code, run, child


def test_a_claude_lingering_after_its_result_is_stopped_and_its_turn_counts(tmp_path):
    code, run, _ = run_lingering(tmp_path, result=True, linger_seconds=0.2)
    assert code == -signal.SIGKILL and run.succeeded(code)  # done: no rerun of the batch
    assert run.session_id == "s1" and run.cost() == 0.5


def test_a_turn_over_its_time_is_stopped_even_when_its_output_stays_open(tmp_path):
    code, run, _ = run_lingering(tmp_path, result=False, turn_timeout=0.5)
    assert code == -signal.SIGKILL and not run.succeeded(code)


# -- the turn loop, against a socket served here ----------------------------------------


class FakeDaemon:
    """An agent socket served in this process: whoami, a scripted inbox for recv, sends,
    acks and turn reports recorded (nothing is ever leased, so nothing is released)."""

    def __init__(self, path: Path, name="alice", role="agent", tools=AGENT_TOOLS):
        self.me = {"name": name, "role": role, "policy": {}, "tools": tools}
        self.cond = threading.Condition()
        self.inbox: list[list[dict]] = []
        self.sent: list[dict] = []
        self.refuse: set[str] = set()  # bodies whose send is refused
        self.acked: list[list[int]] = []
        self.reports: list[dict] = []
        self.dead: list[tuple[list[int], str]] = []
        self.next_id = 1
        self.closing = False
        self.sock = HostSocket(path, self.handle, mode=0o600)

    def stop(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify_all()
        self.sock.stop()

    def deliver(self, *bodies: str, sender: str = "operator") -> None:
        with self.cond:
            batch = []
            for body in bodies:
                batch.append({"id": self.next_id, "from": sender, "to": self.me["name"],
                              "body": body, "time": 1.0})  # fmt: skip
                self.next_id += 1
            self.inbox.append(batch)
            self.cond.notify_all()

    def handle(self, request: dict) -> dict:
        op = request.get("op")
        if op == "whoami":
            return self.me
        if op == "recv":
            assert request["lease"] is True
            with self.cond:
                wait = min(request["wait_seconds"], 5)
                self.cond.wait_for(lambda: self.inbox or self.closing, timeout=wait)
                return {"messages": self.inbox.pop(0) if self.inbox else []}
        if op == "ack":
            with self.cond:
                self.acked.append(request["ids"])
            return {"acked": len(request["ids"])}
        if op == "release":
            return {"released": 0}
        if op == "give_up":
            with self.cond:
                self.dead.append((request["ids"], request["reason"]))
                self.cond.notify_all()
            return {"dead": len(request["ids"])}
        if op == "send":
            if request["body"] in self.refuse:  # as the broker refuses one under a policy
                raise HiveError(f"{self.me['name']} may not send to {request['to']}")
            with self.cond:
                self.sent.append({"to": request["to"], "body": request["body"]})
                return {"id": 1000 + len(self.sent)}
        if op == "turn_report":
            with self.cond:
                self.reports.append(request["report"])
                self.cond.notify_all()
            return {"rows": 1}
        if op == "list_peers":
            return {"peers": []}
        raise ValueError(f"unexpected op {op!r}")

    def wait_reports(self, n: int, timeout: float = 120) -> list[dict]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.reports) >= n, timeout), self.reports
            return list(self.reports)


@pytest.fixture
def short_dir():
    """A directory with a short path: a Unix socket path has at most 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="hh-") as d:
        yield Path(d)


@pytest.fixture
def fake_daemon(short_dir):
    d = FakeDaemon(short_dir / "agent.sock")
    d.sock.start()
    yield d
    d.stop()


def start_harness(tmp_path, daemon: FakeDaemon, *extra: str, policy=None, extras=None, env=None):
    """A harness whose policy runs the fake claude (unless `policy` names another)."""
    claude = claude_script(tmp_path / "bin")
    policy = {"allowedBash": None, "model": None, "claude": str(claude), **(policy or {})}
    state, etc = harness_dirs(tmp_path, policy, extras)
    log = (tmp_path / "harness.log").open("wb")
    proc = subprocess.Popen(
        [HYPERHIVE, "harness", "--socket", str(daemon.sock.path), "--state", str(state),
         "--etc", str(etc), *extra],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
    )  # fmt: skip
    return proc, state


@contextlib.contextmanager
def harnesses(tmp_path, daemon):
    """Start `hyperhive harness` processes on `daemon` (stopped at the end). The fake
    claude starts the MCP servers only for a tool call unless `mcp=True` (every run, as
    the real one)."""
    procs = []

    def start(*extra, mcp=False, env=None, **kw):
        env = {**os.environ, "FAKE_CLAUDE_MCP": "always" if mcp else "lazy", **(env or {})}
        proc, state = start_harness(tmp_path, daemon, *extra, env=env, **kw)
        procs.append(proc)
        return proc, state

    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)


@pytest.fixture
def harness(tmp_path, fake_daemon, fake_env):
    with harnesses(tmp_path, fake_daemon) as start:
        yield start


def harness_log(tmp_path) -> str:
    return (tmp_path / "harness.log").read_text()


def test_a_turn_sends_through_the_real_mcp_server_and_is_reported(
    tmp_path, fake_daemon, fake_env, harness
):
    proc, state = harness(policy={"allowedBash": ["git *"], "model": "claude-x"}, mcp=True)
    fake_daemon.deliver('fake: call send {"to": "bob", "body": "hi bob"}')
    (report,) = fake_daemon.wait_reports(1)
    assert fake_daemon.sent == [{"to": "bob", "body": "hi bob"}]
    assert report["exit"] == "ok" and report["exit_code"] == 0
    assert report["tools"] == {"mcp__hyperhive__send": 1}
    assert report["sent"] == {"peer": 1} and report["received"] == {"operator": 1}
    assert report["cost_usd"] == 0.0123 and report["duration"] > 0
    assert report["notes_bytes"] == 0
    (run,) = fake_runs(fake_env)
    argv = run["argv"]
    assert argv[:5] == ["-p", "--output-format", "stream-json", "--verbose", "--model"]
    config = json.loads(Path(argv[argv.index("--mcp-config") + 1]).read_text())
    assert config["mcpServers"]["hyperhive"]["args"][-3:] == [
        "mcp",
        "--socket",
        str(fake_daemon.sock.path),
    ]
    tools = argv[argv.index("--allowedTools") + 1 : argv.index("--disallowedTools")]
    assert tools == [*CLAUDE_TOOLS, f"Edit(//{str(state).strip('/')}/**)", "Bash(git *)",
                     *HYPERHIVE_TOOLS]  # fmt: skip
    assert argv[argv.index("--permission-mode") + 1] == "dontAsk"
    assert run["env"]["CLAUDE_CONFIG_DIR"] == str(state / ".claude")
    assert run["env"]["ENABLE_TOOL_SEARCH"] == "false"
    assert "--resume" not in argv and run["cwd"] == str(state)
    assert "message #1 from operator" in run["prompt"]
    # the session goes on in the next turn
    fake_daemon.deliver("fake: call whoami {}")
    reports = fake_daemon.wait_reports(2)
    assert reports[1]["exit"] == "ok" and reports[1]["tools"] == {"mcp__hyperhive__whoami": 1}
    second = fake_runs(fake_env)[1]
    assert second["argv"][second["argv"].index("--resume") + 1] == run["session"]
    assert (state / ".hyperhive" / "session").read_text().strip() == run["session"]
    assert json.loads((state / ".hyperhive" / "inflight.json").read_text()) == []
    assert fake_daemon.acked == [[1], [2]]


def test_a_tool_outside_the_allow_list_is_refused(tmp_path, fake_daemon, fake_env, harness):
    harness(extras={"other": {"command": "true", "allowedTools": ["read"]}}, mcp=True)
    fake_daemon.deliver("fake: call other.write {}")
    (report,) = fake_daemon.wait_reports(1)
    # a denied call is a denial, not a tool call
    assert report["exit"] == "ok" and report["tools"] == {}
    assert report["denials"] == {"mcp__other__write": 1}
    assert "denied mcp__other__write: Permission to use" in harness_log(tmp_path)
    assert "MCP server other is failed" in harness_log(tmp_path)  # `true` is no server


def test_a_failure_is_recorded_and_the_loop_goes_on(tmp_path, fake_daemon, fake_env, harness):
    harness("--retry-seconds", "60")
    fake_daemon.deliver("fake: fail-once t1 3")
    first = fake_daemon.wait_reports(1)[0]
    assert (first["exit"], first["exit_code"]) == ("failure", 3)
    assert first["received"] == {"operator": 1}
    fake_daemon.deliver("and now this", sender="bob")
    second = fake_daemon.wait_reports(2)[1]
    assert (second["exit"], second["exit_code"]) == ("ok", 0)
    assert second["received"] == {"peer": 1}  # the retried message was counted once
    prompt = fake_runs(fake_env)[1]["prompt"]
    assert "message #1 from operator at" in prompt and "(handed to you before" in prompt
    assert "message #2 from bob" in prompt


def test_a_batch_is_given_up_after_repeated_failures(tmp_path, fake_daemon, fake_env, harness):
    harness("--retry-seconds", "0.1")
    fake_daemon.deliver("fake: fail 2")
    reports = fake_daemon.wait_reports(MAX_ATTEMPTS)
    assert [r["exit_code"] for r in reports] == [2] * MAX_ATTEMPTS
    wait_for(lambda: "giving up on message #1" in harness_log(tmp_path), what="giving up")
    assert all(r["error"] for r in reports)  # the daemon's `failing`: why, in a line
    (dead,) = wait_for(lambda: fake_daemon.dead, what="the dead letter")
    assert dead[0] == [1] and dead[1].startswith(f"given up after {MAX_ATTEMPTS} failed turns: ")
    fake_daemon.deliver("fine now")
    last = fake_daemon.wait_reports(MAX_ATTEMPTS + 1)[-1]
    assert last["exit"] == "ok"
    assert "fake: fail" not in fake_runs(fake_env)[-1]["prompt"]


def test_the_clis_own_compaction_is_a_compact_retry(tmp_path, fake_daemon, fake_env, harness):
    """The CLI compacts by itself after a "prompt is too long" and goes on: the turn is a
    compact-retry, and the harness compacts nothing more."""
    harness()
    fake_daemon.deliver("remember this")
    fake_daemon.wait_reports(1)
    fake_daemon.deliver("fake: context-full")
    report = fake_daemon.wait_reports(2)[1]
    assert (report["exit"], report["exit_code"]) == ("compact-retry", 0)
    runs = fake_runs(fake_env)
    assert len(runs) == 2 and runs[1]["prompt"] != "/compact"
    assert "claude compacted the conversation" in harness_log(tmp_path)


def test_context_full_without_the_clis_compaction_compacts_and_retries_once(
    tmp_path, fake_daemon, fake_env, harness
):
    harness()
    fake_daemon.deliver("remember this")
    fake_daemon.wait_reports(1)
    fake_daemon.deliver("fake: context-full-manual")
    report = fake_daemon.wait_reports(2)[1]
    assert (report["exit"], report["exit_code"]) == ("compact-retry", 0)
    runs = fake_runs(fake_env)
    session = runs[0]["session"]
    assert [(r["prompt"] == "/compact", r["exit"]) for r in runs[1:]] == [
        (False, 1),  # prompt is too long
        (True, 0),  # /compact on the session
        (False, 0),  # the retry
    ]
    assert all(r["argv"][r["argv"].index("--resume") + 1] == session for r in runs[1:])
    compact = runs[2]["argv"]  # no MCP server, no settings file, no tool
    assert "--strict-mcp-config" in compact and "--allowedTools" not in compact
    assert json.loads(compact[compact.index("--mcp-config") + 1]) == {"mcpServers": {}}
    assert compact[compact.index("--permission-mode") + 1] == "dontAsk"
    assert "the context is full: compacting" in harness_log(tmp_path)
    assert f"session {session} compacted" in harness_log(tmp_path)


def test_a_failed_compact_is_read_from_its_events_and_the_retry_starts_afresh(
    tmp_path, fake_daemon, fake_env, harness
):
    """A failed `/compact` ends 0 with is_error false ("Compaction failed · …"): its
    `compact_result` tells, and the retry runs in a new session."""
    harness(env={"FAKE_CLAUDE_SESSION_COMPACT": "fail"})
    fake_daemon.deliver("remember this")
    fake_daemon.wait_reports(1)
    fake_daemon.deliver("fake: context-full-manual")
    report = fake_daemon.wait_reports(2)[1]
    assert (report["exit"], report["exit_code"]) == ("compact-retry", 0)
    runs = fake_runs(fake_env)
    assert [(r["prompt"] == "/compact", r["exit"]) for r in runs[1:]] == [
        (False, 1),
        (True, 0),  # it "succeeded" ...
        (False, 0),  # ... but the retry is a fresh session
    ]
    assert "--resume" not in runs[3]["argv"]
    assert "could not compact the session: Compaction failed" in harness_log(tmp_path)
    assert f"session {runs[0]['session']} compacted" not in harness_log(tmp_path)


def test_context_still_full_after_compaction_is_a_failure(tmp_path, fake_daemon, fake_env, harness):
    harness("--retry-seconds", "60")
    fake_daemon.deliver("fake: context-full-always")
    (report,) = fake_daemon.wait_reports(1)
    assert (report["exit"], report["exit_code"]) == ("failure", 1)
    runs = fake_runs(fake_env)
    # the CLI tried its own compaction: never compacted twice, the retry is a new session
    assert [(r["prompt"] == "/compact", r["exit"]) for r in runs] == [(False, 1), (False, 1)]
    assert all("--resume" not in r["argv"] for r in runs)
    log = harness_log(tmp_path)
    assert "claude's own compaction did not help" in log
    assert "claude: prompt_too_long, API 400: Prompt is too long" in log


def test_a_session_the_cli_cannot_compact_is_left_for_a_new_one(
    tmp_path, fake_daemon, fake_env, harness
):
    """A resumed session too long for the CLI's own compaction is not resumed again:
    the turn's retry starts a new session instead of failing forever."""
    harness("--retry-seconds", "0.1")
    fake_daemon.deliver("remember this")
    fake_daemon.wait_reports(1)
    fake_daemon.deliver("fake: context-full-resumed")
    reports = fake_daemon.wait_reports(2)
    assert [(r["exit"], r["exit_code"]) for r in reports] == [("ok", 0), ("compact-retry", 0)]
    runs = fake_runs(fake_env)
    assert [r["exit"] for r in runs] == [0, 1, 0]
    assert "--resume" not in runs[-1]["argv"] and runs[-1]["session"] != runs[0]["session"]


def test_a_session_claude_lost_is_started_afresh(tmp_path, fake_daemon, fake_env, harness):
    proc, state = harness()
    (state / ".hyperhive").mkdir()
    (state / ".hyperhive" / "session").write_text("gone-session\n")
    fake_daemon.deliver("hello")
    (report,) = fake_daemon.wait_reports(1)
    assert report["exit"] == "ok"
    runs = fake_runs(fake_env)
    assert [r["exit"] for r in runs] == [1, 0] and "--resume" not in runs[1]["argv"]
    assert (state / ".hyperhive" / "session").read_text().strip() == runs[1]["session"]


@pytest.mark.parametrize(
    "text, said",
    [
        ("{broken", "cannot read the agent's policy"),
        ('{"claude": "claude"}', "is invalid: hyperhive.claude must be null or an absolute path"),
    ],
)
def test_an_unreadable_policy_runs_no_turn(tmp_path, fake_daemon, fake_env, harness, text, said):
    proc, state = harness("--retry-seconds", "60")
    (tmp_path / "etc" / "policy.json").write_text(text)
    fake_daemon.deliver("hello")
    (report,) = fake_daemon.wait_reports(1)
    assert (report["exit"], report["exit_code"]) == ("failure", None)
    assert fake_runs(fake_env) == []
    assert said in harness_log(tmp_path)


def test_the_policy_names_the_claude_that_runs(tmp_path, fake_daemon, fake_env, harness):
    ran = tmp_path / "ran"
    custom = claude_script(
        tmp_path / "opt" / "claude-2" / "bin",
        before=f'[ "$1" = --version ] || echo "$0" >> {ran}\n',
    )
    harness(policy={"claude": str(custom)})
    fake_daemon.deliver("hello")
    (report,) = fake_daemon.wait_reports(1)
    assert report["exit"] == "ok" and len(fake_runs(fake_env)) == 1
    assert ran.read_text().splitlines() == [str(custom)]


def test_without_a_claude_in_the_policy_the_one_on_path_runs(
    tmp_path, fake_daemon, fake_env, harness
):
    ran = tmp_path / "ran"
    on_path = claude_script(
        tmp_path / "path-bin", before=f'[ "$1" = --version ] || echo "$0" >> {ran}\n'
    )
    harness(policy={"claude": None}, env={"PATH": f"{on_path.parent}:{os.environ['PATH']}"})
    fake_daemon.deliver("hello")
    (report,) = fake_daemon.wait_reports(1)
    assert report["exit"] == "ok"
    assert ran.read_text().splitlines() == [str(on_path)]


def test_a_harness_stopped_mid_turn_hands_the_batch_to_the_next(
    tmp_path, fake_daemon, fake_env, harness
):
    proc, state = harness()
    fake_daemon.deliver("fake: sleep-once slow 60")
    wait_for(lambda: (fake_env / "once-slow").exists(), what="the turn to start")
    os.killpg(proc.pid, signal.SIGTERM)  # as the runtime stops it: the whole group
    assert proc.wait(20) == 0
    assert "stopping (SIGTERM)" in harness_log(tmp_path)
    assert fake_daemon.reports == []
    harness()
    (report,) = fake_daemon.wait_reports(1)
    assert report["exit"] == "ok" and report["received"] == {"operator": 1}
    prompt = fake_runs(fake_env)[-1]["prompt"]
    assert "message #1 from operator" in prompt and "did not finish" in prompt


def test_stops_mid_turn_are_not_attempts(tmp_path, fake_daemon, fake_env, harness):
    """A redeploy (or the daemon stopping) is no fault of the batch: a turn cut short by
    it does not count towards giving the batch up, however often it happens."""
    from hyperhive.harness.loop import MAX_ATTEMPTS

    marker = fake_env / "once-slow"
    fake_daemon.deliver("fake: sleep-once slow 60")
    for n in range(MAX_ATTEMPTS + 1):
        proc, _ = harness()
        wait_for(marker.exists, what=f"turn {n + 1} to start")
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(20) == 0
        if n < MAX_ATTEMPTS:
            marker.unlink()  # the next run sleeps (and is stopped) again
    harness()
    (report,) = fake_daemon.wait_reports(1)
    assert report["exit"] == "ok" and report["received"] == {"operator": 1}
    assert "giving up" not in harness_log(tmp_path)
    assert "did not finish" in fake_runs(fake_env)[-1]["prompt"]


@pytest.mark.parametrize(
    "args, said",
    [
        (["--retry-seconds", "0"], "expected a positive number, not '0'"),
        (["--retry-seconds", "nan"], "expected a positive number, not 'nan'"),
    ],
)
def test_harness_flags_are_checked(tmp_path, args, said):
    proc = run_cli(tmp_path / "hive", "harness", *args)
    assert proc.returncode == 2 and said in proc.stderr


# -- nothing is lost between a recv and the harness's record of it ------------------------


class BrokerDaemon(FakeDaemon):
    """The manager's socket served in this process by the daemon's own ops (real broker,
    real hive.db), turn reports recorded. `intercept(request, handle)`, when set, answers
    instead: a test's stand-in for a harness dying or a reply lost at a chosen op."""

    def __init__(self, path: Path, home):
        from hyperhive.broker.messages import Broker
        from hyperhive.daemon.ops import Ops
        from hyperhive.hive import Hive

        super().__init__(path, name="manager")
        self.broker = Broker(home)
        self.ops = Ops(Hive(home, runtime=None), self.broker, None)
        self.sock.unsent = self.ops.unsent
        self.intercept = None

    def handle(self, request: dict) -> dict:
        serve = self.ops.for_agent("manager")
        reply = self.intercept(request, serve) if self.intercept else serve(request)
        if request.get("op") == "turn_report":
            with self.cond:
                self.reports.append(request["report"])
                self.cond.notify_all()
        return reply

    def stop(self) -> None:
        self.broker.close()  # a waiting recv returns now
        super().stop()

    def rows(self) -> list[tuple]:
        conn = sqlite3.connect(self.broker.home.root / "hive.db")
        try:
            return conn.execute(
                "SELECT id, delivered_at IS NOT NULL, leased FROM messages ORDER BY id"
            ).fetchall()
        finally:
            conn.close()


@pytest.fixture
def broker_daemon(short_dir, home):
    d = BrokerDaemon(short_dir / "agent.sock", home)
    d.sock.start()
    yield d
    d.stop()


@pytest.mark.parametrize("death", ["killed-before-ack", "crashed-before-save"])
def test_a_harness_dead_between_recv_and_ack_gets_its_messages_again_once(
    tmp_path, broker_daemon, fake_env, death
):
    """The daemon wrote the recv's reply (the messages are delivered) and the harness died
    before acknowledging them: SIGKILLed at its ack (inflight.json already holds them), or
    crashed writing inflight.json. Its next start releases them; one turn runs them, once."""
    d = broker_daemon
    inflight = tmp_path / "state" / ".hyperhive" / "inflight.json"
    ids = [d.broker.send("operator", "manager", body) for body in ("one", "two")]
    with harnesses(tmp_path, d) as start:
        if death == "killed-before-ack":
            killed = []

            def kill_at_ack(request, handle):
                if request["op"] == "ack":
                    os.killpg(killed[0].pid, signal.SIGKILL)
                    killed[0].wait(20)
                    raise HiveError("the harness is gone")
                return handle(request)

            d.intercept = kill_at_ack
            killed.append(start()[0])
            assert killed[0].wait(30) == -signal.SIGKILL
            assert [i["message"]["id"] for i in json.loads(inflight.read_text())] == ids
        else:
            inflight.with_name("inflight.json.new").mkdir(parents=True)  # the write fails
            proc, _ = start()
            assert proc.wait(30) != 0
            assert "IsADirectoryError" in harness_log(tmp_path)
            assert not inflight.exists()
            inflight.with_name("inflight.json.new").rmdir()
        assert fake_runs(fake_env) == []
        assert d.rows() == [(i, 1, 1) for i in ids]  # delivered, leased, never acknowledged

        d.intercept = None
        start()
        (report,) = d.wait_reports(1)
        assert report["exit"] == "ok" and report["received"] == {"operator": 2}
        assert "2 messages handed out, never acknowledged: back in the inbox" in harness_log(
            tmp_path
        )
        (run,) = fake_runs(fake_env)
        for i in ids:
            assert run["prompt"].count(f"message #{i} from operator") == 1
        assert "handed to you before" not in run["prompt"]  # no turn saw them before
        assert d.rows() == [(i, 1, 0) for i in ids]
        assert json.loads(inflight.read_text()) == []

        # the next message is a turn of its own: neither of the first two comes again
        third = d.broker.send("operator", "manager", "three")
        d.wait_reports(2)
        runs = fake_runs(fake_env)
        assert len(runs) == 2 and f"message #{third} from" in runs[1]["prompt"]
        assert not any(f"message #{i} " in runs[1]["prompt"] for i in ids)


def test_a_recv_reply_lost_is_released_before_the_next_recv(tmp_path, broker_daemon, fake_env):
    """A leased recv whose reply never came (as from a daemon that died after taking the
    messages) leaves them leased to a harness that lives on: it releases them before it
    asks again, instead of leaving them until its next start."""
    d = broker_daemon
    lost = []

    def lose_a_reply(request, handle):
        reply = handle(request)
        if request["op"] == "recv" and reply["messages"] and not lost:
            lost.append(reply)
            raise HiveError("internal error: the reply was lost")
        return reply

    d.intercept = lose_a_reply
    mid = d.broker.send("operator", "manager", "hello")
    with harnesses(tmp_path, d) as start:
        start()
        (report,) = d.wait_reports(1)
    assert [m["id"] for m in lost[0]["messages"]] == [mid]
    assert "recv failed (internal error: the reply was lost)" in harness_log(tmp_path)
    assert "1 messages handed out, never acknowledged" in harness_log(tmp_path)
    (run,) = fake_runs(fake_env)
    assert f"message #{mid} from operator" in run["prompt"]
    assert d.rows() == [(mid, 1, 0)]


def test_a_claude_older_than_supported_is_refused_at_the_start(
    tmp_path, fake_daemon, fake_env, harness
):
    proc, _ = harness(env={"FAKE_CLAUDE_VERSION": "1.0.128"})
    assert proc.wait(30) == 3
    log = harness_log(tmp_path)
    assert "refusing to start: " in log
    assert "is Claude Code 1.0.128; the harness needs 2.1.0 or newer" in log
    assert fake_runs(fake_env) == [] and fake_daemon.reports == []


def test_a_policy_that_names_an_old_claude_later_runs_no_turn(
    tmp_path, fake_daemon, fake_env, harness
):
    old = claude_script(
        tmp_path / "old" / "bin", before="FAKE_CLAUDE_VERSION=1.9.0; export FAKE_CLAUDE_VERSION\n"
    )
    harness("--retry-seconds", "60")
    wait_for(lambda: "is Claude Code 2.1.328" in harness_log(tmp_path), what="the start check")
    policy = json.loads((tmp_path / "etc" / "policy.json").read_text())
    (tmp_path / "etc" / "policy.json").write_text(json.dumps({**policy, "claude": str(old)}))
    fake_daemon.deliver("hello")
    (report,) = fake_daemon.wait_reports(1)
    assert (report["exit"], report["exit_code"]) == ("failure", None)
    assert fake_runs(fake_env) == []
    assert f"{old} is Claude Code 1.9.0; the harness needs 2.1.0" in harness_log(tmp_path)


def test_the_vm_tests_fake_claude_answers_through_the_harness(
    tmp_path, fake_daemon, fake_env, harness
):
    """nix/tests/fake-claude.py (the claude of the NixOS VM test) against the real harness
    and the real `hyperhive mcp`: a pong to the operator per ping, the refusal to the
    manager when the policy forbids it, and a turn the harness reports as ok."""
    vm_fake = Path(__file__).resolve().parent.parent / "nix" / "tests" / "fake-claude.py"
    claude = tmp_path / "vm-bin" / "claude"
    claude.parent.mkdir()
    claude.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{vm_fake}" "$@"\n')
    claude.chmod(0o755)
    harness(policy={"claude": str(claude)})
    fake_daemon.refuse.add("pong-2")
    fake_daemon.deliver("ping-1 and ping-2")
    (report,) = fake_daemon.wait_reports(1)
    assert report["exit"] == "ok"
    pong, refusal = fake_daemon.sent
    assert pong == {"to": "operator", "body": "pong-1"}
    assert refusal["to"] == "manager"
    assert refusal["body"].startswith("refused pong-2: ")
    assert "may not send to operator" in refusal["body"]
    assert "is Claude Code 2.1.328" in harness_log(tmp_path)

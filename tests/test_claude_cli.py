"""The real-CLI tier: the pinned Claude Code CLI (tests/claude-cli/, installed by `make
claude-cli` into .cache/claude-code) against the scripted stand-in for the Messages API
(tests/anthropic_standin.py), offline.

First the CLI alone with the argv the harness builds: the tool names the harness uses
exist in its `system/init`, MCP tools are offered up front, and every permission rule
fires (rules that parse but never match are the trap). Then whole turns of an agent
deployed on a real daemon (local runtime): its harness runs the real CLI, which runs the
real `hyperhive mcp`; recv/send, Bash allowed and denied, a Write outside the state, an
extra MCP server's tools allowed and denied, resume, a vanished session, overflow with
and without a working compaction, per-turn cost and the denials in /api/stats.
"""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from anthropic_standin import StandIn
from support.daemon import Daemon
from support.hive import commit_config, run_cli
from support.wait import wait_for

from hyperhive.agents import create_agent
from hyperhive.harness.claude_config import (
    CLAUDE_TOOLS,
    SUBAGENT_TOOLS,
    claude_env,
    permission_args,
)
from hyperhive.harness.events import Run
from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime

pytestmark = pytest.mark.claude_cli

ROOT = Path(__file__).resolve().parent.parent
CLAUDE = ROOT / ".cache" / "claude-code" / "node_modules" / ".bin" / "claude"
ECHO_MCP = Path(__file__).parent / "echo_mcp.py"
COST_PER_REQUEST = (
    0.006  # the stand-in's usage (1000 in, 100 out) at the CLI's default model's prices
)


@pytest.fixture(scope="module")
def claude() -> Path:
    if not CLAUDE.exists():
        pytest.fail(f"{CLAUDE} is missing: `make claude-cli` installs the pinned Claude Code CLI")
    return CLAUDE


@pytest.fixture
def standin():
    with StandIn() as s:
        yield s


def api_env(standin: StandIn, home: Path) -> dict:
    """What the CLI needs to run offline against the stand-in, with a private HOME."""
    return {
        "ANTHROPIC_BASE_URL": standin.url,
        "ANTHROPIC_API_KEY": "sk-standin",
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "HOME": str(home),
    }


def run_cli_turn(claude: Path, state: Path, standin: StandIn, prompt: str, policy: dict,
                 extras: dict) -> tuple[list[dict], Run]:  # fmt: skip
    """One `claude -p` run in `state` with the harness's permission flags and
    environment; its events and their fold."""
    mcp = {"mcpServers": {k: {"command": v["command"], "args": v["args"], "env": {}}
                          for k, v in extras.items()}}  # fmt: skip
    args = [str(claude), "-p", "--output-format", "stream-json", "--verbose",
            *permission_args("agent", extras, policy, state),
            "--mcp-config", json.dumps(mcp), "--strict-mcp-config"]  # fmt: skip
    env = claude_env(state, {"PATH": os.environ["PATH"], **api_env(standin, state)})
    proc = subprocess.run(args, input=prompt, capture_output=True, text=True, env=env,
                          cwd=state, timeout=120)  # fmt: skip
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    run = Run()
    for line in proc.stdout.splitlines():
        run.feed(line)
    assert proc.returncode == 0 and run.succeeded(0), (proc.stdout[-2000:], proc.stderr)
    return events, run


ECHO = {"command": sys.executable, "args": ["-I", str(ECHO_MCP)], "allowedTools": ["echo"]}


def test_the_tools_the_harness_names_exist_and_mcp_tools_come_up_front(claude, standin, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    prompt = 'go\napi: call mcp__echo__echo {"text": "hi"}\n'
    events, run = run_cli_turn(claude, state, standin, prompt, {"allowSubagents": True},
                               {"echo": ECHO})  # fmt: skip
    (init,) = [e for e in events if e["type"] == "system" and e["subtype"] == "init"]
    assert init["claude_code_version"].startswith("2.1.328")
    assert init["permissionMode"] == "dontAsk"
    tools = set(init["tools"])
    # every built-in the allow-list names, the editors Edit(//state/**) covers, Bash and
    # the sub-agent tools (`Agent` is `Task` in this list)
    assert set(CLAUDE_TOOLS) | {"Write", "Edit", "NotebookEdit", "Bash", "Task"} <= tools
    assert set(SUBAGENT_TOOLS) - {"Agent"} <= tools
    assert not {"MultiEdit", "LS", "TodoWrite", "Glob", "Grep"} & tools  # gone
    assert {"mcp__echo__echo", "mcp__echo__touch"} <= tools
    # offered up front: the first request carries the MCP tools, no ToolSearch
    first = standin.messages_requests()[0]
    offered = {t["name"] for t in first["tools"]}
    assert "mcp__echo__echo" in offered and "ToolSearch" not in offered
    assert run.tools == {"mcp__echo__echo": 1} and not run.denials
    assert (state / ".claude").is_dir()  # CLAUDE_CONFIG_DIR: its config in its state
    assert run.cost() == pytest.approx(2 * COST_PER_REQUEST)

    # tests/fake_claude.py, run the same way, emits what the real CLI does (a subset)
    fake_args = [
        sys.executable,
        str(Path(__file__).parent / "fake_claude.py"),
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        *permission_args("agent", {"echo": ECHO}, {"allowSubagents": True}, state),
        "--mcp-config",
        json.dumps({"mcpServers": {"echo": {**ECHO, "env": {}}}}),
    ]
    env = {**os.environ, "FAKE_CLAUDE_HOME": str(tmp_path / "fake")}
    prompt = 'go\nfake: call echo.echo {"text": "hi"}\n'
    out = subprocess.run(fake_args, input=prompt, capture_output=True, text=True, env=env,
                         timeout=60, check=True)  # fmt: skip
    fake = [json.loads(line) for line in out.stdout.splitlines()]

    def one(evs: list[dict], kind: str, subtype: str | None = None) -> dict:
        found = [e for e in evs if e["type"] == kind and e.get("subtype", subtype) == subtype]
        return found[0] if kind == "system" else found[-1]

    for kind, subtype in (("system", "init"), ("result", "success"), ("assistant", None)):
        real, faked = one(events, kind, subtype), one(fake, kind, subtype)
        assert set(faked) <= set(real), (kind, set(faked) - set(real))
    harness_reads = {"terminal_reason", "api_error_status", "model_usage_since_last_result",
                     "permission_denials", "total_cost_usd", "is_error", "session_id"}  # fmt: skip
    assert harness_reads <= set(one(fake, "result", "success")) & set(
        one(events, "result", "success")
    )
    assert set(one(fake, "system", "init")["tools"]) <= tools


def test_every_permission_rule_fires(claude, standin, tmp_path):
    state = tmp_path / "state"
    outside = tmp_path / "outside"
    (state / ".claude").mkdir(parents=True)
    outside.mkdir()
    kept = tmp_path / "kept.txt"
    kept.write_text("a")
    # a settings file in the state that would widen everything: never read
    wide = {"permissions": {"allow": ["Bash", "Write", "Edit", "Agent"],
                            "defaultMode": "bypassPermissions"}}  # fmt: skip
    (state / ".claude" / "settings.json").write_text(json.dumps(wide))
    (state / ".claude" / "settings.local.json").write_text(json.dumps(wide))

    def call(tool: str, **args) -> str:
        return f"api: call {tool} {json.dumps(args)}"

    prompt = "\n".join([
        "go",
        call("Write", file_path=str(state / "work" / "in.txt"), content="in"),
        call("Write", file_path=str(outside / "out.txt"), content="out"),
        call("Read", file_path=str(kept)),  # Edit wants the file read first
        call("Edit", file_path=str(kept), old_string="a", new_string="b"),
        call("Bash", command="echo allowed"),
        call("Bash", command=f"touch {state}/by-bash"),
        call("Agent", description="sub", prompt="api: say sub", subagent_type="general-purpose"),
        call("mcp__echo__touch", path="/state/by-mcp"),
        call("Write", file_path=str(state / ".claude" / "settings.json"), content="{}"),
    ])  # fmt: skip
    policy = {"allowedBash": ["echo *"]}
    events, run = run_cli_turn(claude, state, standin, prompt, policy, {"echo": ECHO})
    assert (state / "work" / "in.txt").read_text() == "in"
    assert list(outside.iterdir()) == [] and kept.read_text() == "a"
    assert not (state / "by-bash").exists() and not (state / "by-mcp").exists()
    assert json.loads((state / ".claude" / "settings.json").read_text()) == wide
    assert run.denials == {"Write": 2, "Edit": 1, "Bash": 1, "mcp__echo__touch": 1}
    assert run.tools == {"Write": 1, "Read": 1, "Bash": 1, "Agent": 1}  # Agent: no such tool
    results = {b["tool_use_id"]: b for e in events if e["type"] == "user"
               for b in e["message"]["content"] if b.get("type") == "tool_result"}  # fmt: skip
    (agent_use,) = [i for i, (name, _, _) in run.uses.items() if name == "Agent"]
    assert "No such tool available: Agent" in str(results[agent_use]["content"])
    assert not any(e.get("subtype") == "task_started" for e in events)

    # with hyperhive.allowSubagents the sub-agent runs; its events are counted apart
    events, run = run_cli_turn(claude, state, standin, "go\n" + call(
        "Agent", description="sub", prompt="api: say from the sub-agent",
        subagent_type="general-purpose", run_in_background=False
    ), {"allowSubagents": True}, {})  # fmt: skip
    assert run.tools == {"Agent": 1} and not run.denials
    assert any(e.get("subtype") == "task_started" for e in events)


# -- whole turns of a deployed agent --------------------------------------------------------

AGENT_NIX = """\
{ ... }:
{
  hyperhive.allowedBash = [ "echo *" ];
  hyperhive.extraMcpServers.echo = {
    command = "%s";
    args = [ "-I" "%s" ];
    allowedTools = [ "echo" ];
  };
  hyperhive.extraMcpServers.locked = {
    command = "%s";
    args = [ "-I" "%s" ];
    allowedTools = [ ];
  };
}
"""


@pytest.fixture
def hive(home, tmp_path, monkeypatch, claude, standin):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "claude").symlink_to(claude)  # the policy's default: `claude` on PATH
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    for key, value in api_env(standin, tmp_path / "daemon-home").items():
        monkeypatch.setenv(key, value)
    root = home.root  # initialized in this process: the CLI's init is not what is tested
    for name in ("alice", "bob"):
        create_agent(home, name, LocalRuntime(home), "operator")
    agent_nix = AGENT_NIX % ((sys.executable, ECHO_MCP) * 2)
    commit_config(home, "alice", {"agent.nix": agent_nix}, "two extra servers")
    run_cli(root, "propose", "alice", check=True)
    run_cli(root, "deny", "alice#1", "--reason", "superseded", check=True)
    daemon = Daemon(root).start()
    yield root, daemon
    if daemon.proc.poll() is None:
        daemon.stop()
    daemon.kill()


def turn_rows(root: Path) -> list[dict]:
    with sqlite3.connect(root / "hive.db") as db:
        rows = db.execute(
            "SELECT ts, key, value FROM stats WHERE agent = 'alice' ORDER BY ts, key"
        ).fetchall()
    turns: dict[float, dict] = {}
    for ts, key, value in rows:
        turns.setdefault(ts, {})[key] = value
    return [t for t in turns.values() if "turn" in t]


def test_turns_of_a_deployed_agent_through_the_real_cli(hive, standin):
    root, daemon = hive
    home = Home(root)
    state = home.agent_dir("alice") / "state"
    log = home.log_dir("alice") / "harness.log"
    run_cli(root, "approve", "alice#2", check=True)
    wait_for(lambda: log.exists() and "ready on" in log.read_text(), what="alice's harness")

    def turn(body: str, n: int) -> dict:
        run_cli(root, "send", "operator", "alice", body, check=True)
        rows = wait_for(lambda: len(turn_rows(root)) >= n and turn_rows(root), timeout=90,
                        what=f"turn {n}")  # fmt: skip
        return rows[n - 1]

    def call(tool: str, **args) -> str:
        return f"api: call {tool} {json.dumps(args)}"

    # 1: send and recv through the real hyperhive mcp; Bash, Write and an extra server's
    # tools allowed and denied
    outside = root.parent / "outside.txt"
    first = turn("\n".join([
        call("mcp__hyperhive__send", to="bob", body="hello bob"),
        call("mcp__hyperhive__recv", wait_seconds=0),
        call("Bash", command="echo allowed"),
        call("Bash", command="touch /state/by-bash"),  # the paths the sandboxed agent sees
        call("Write", file_path="/state/in.txt", content="in"),
        call("Write", file_path=str(outside), content="out"),
        call("mcp__echo__echo", text="hi"),
        call("mcp__echo__touch", path="/state/by-mcp"),
        call("mcp__locked__echo", text="no"),  # a server none of whose tools is allowed
        "api: bloat",  # later turns of this session are "prompt is too long"
    ]), 1)  # fmt: skip
    bob = json.loads(run_cli(root, "inbox", "bob", "--json", check=True).stdout)
    assert [(m["from"], m["body"]) for m in bob] == [("alice", "hello bob")]
    assert (state / "in.txt").read_text() == "in" and not outside.exists()
    assert not (state / "by-bash").exists() and not (state / "by-mcp").exists()
    assert first["turn.exit.ok"] == 1 and first["sent.peer"] == 1
    assert first["turn.denials"] == 4
    denied = ("Bash", "Write", "mcp__echo__touch", "mcp__locked__echo")
    assert [first[f"denial.{tool}"] for tool in denied] == [1, 1, 1, 1]
    assert first["turn.tool_calls"] == 5  # denied calls are no tool calls
    paid = len(standin.messages_requests(status=200))  # a refused request costs nothing
    assert first["turn.cost_usd"] == pytest.approx(paid * COST_PER_REQUEST)
    session = (state / ".hyperhive" / "session").read_text().strip()
    transcripts = list((state / ".claude" / "projects").glob(f"*/{session}.jsonl"))
    assert len(transcripts) == 1  # CLAUDE_CONFIG_DIR=<state>/.claude

    # 2: the session resumed; over the window, the CLI compacts it by itself
    before, paid_before = len(standin.messages_requests()), paid
    second = turn("second turn", 2)
    assert second["turn.exit.compact-retry"] == 1
    assert (state / ".hyperhive" / "session").read_text().strip() == session
    asked = standin.messages_requests()[before:]
    assert any("hello bob" in json.dumps(r["messages"]) for r in asked)  # resumed
    # the cost of this turn only (the compaction's included), not the session's total
    paid = len(standin.messages_requests(status=200)) - paid_before
    assert paid == 2 and second["turn.cost_usd"] == pytest.approx(paid * COST_PER_REQUEST)

    # 3: a vanished session is started afresh
    for path in (state / ".claude" / "projects").glob(f"*/{session}.jsonl"):
        path.unlink()
    third = turn("third turn", 3)
    assert third["turn.exit.ok"] == 1
    fresh = (state / ".hyperhive" / "session").read_text().strip()
    assert fresh != session
    assert f"claude no longer knows session {session}" in log.read_text()

    # 4: over the window and the compaction fails too: a fresh session gets past it
    standin.overflow = True
    fourth = turn("fourth turn", 4)
    assert fourth["turn.exit.compact-retry"] == 1
    assert (state / ".hyperhive" / "session").read_text().strip() not in (session, fresh)
    text = log.read_text()
    assert "claude could not compact the conversation" in text
    assert "claude's own compaction did not help" in text
    standin.overflow = False

    # the denials in /api/stats
    stats = daemon.get("/api/stats?agent=alice&keys=denials,exit,cost_usd")
    assert stats["summary"]["denials"] == 4
    assert stats["summary"]["denial"] == dict.fromkeys(denied, 1)
    assert sum(stats["series"]["denials"]) == 4
    assert stats["summary"]["exit"] == {"ok": 2, "compact-retry": 2, "failure": 0}

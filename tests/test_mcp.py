"""The agents' MCP tools through a real MCP client: in-process against a fake daemon, and
end to end over stdio (`hyperhive mcp` subprocess) against the fake and the real daemon."""

import json
import socket
import socketserver
import sqlite3
import subprocess
import threading
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp.server.mcpserver.exceptions import ToolError
from support.daemon import Daemon
from support.hive import HYPERHIVE, run_cli
from support.mcp import over_stdio, text
from support.wait import wait_for

from hyperhive.errors import HiveError
from hyperhive.mcp.server import build_server, forwarder
from hyperhive.mcp.tools import DESCRIPTIONS, recv_timeout, tool_functions
from hyperhive.wire.ops import OPS, TABLE, tools_for

AGENT_TOOLS, MANAGER_TOOLS = tools_for("agent"), tools_for("manager")  # the operation table
REFUSAL = "unknown recipient 'nobody': `list_peers` shows who can be reached"


class FakeDaemon:
    """A real Unix socket speaking the agent-socket protocol, answering from a table, and
    keeping every request line it got, byte for byte."""

    def __init__(self, path: Path, name: str, role: str):
        self.path = path
        self.lines: list[bytes] = []
        self.replies = {
            "whoami": {
                "name": name,
                "role": role,
                "policy": {"allowedRecipients": None},
                "tools": MANAGER_TOOLS if role == "manager" else AGENT_TOOLS,
            },
            "send": {"id": 7},
            "recv": {"messages": [{"id": 3, "from": "operator", "to": name, "body": "hi"}]},
            "list_peers": {"peers": [{"name": "operator", "role": "operator", "state": "human"}]},
            "ask_operator": {"id": 11},
            "request_spawn": {"approval": "bob#1"},
        }
        fake = self

        class Session(socketserver.StreamRequestHandler):
            def handle(self):
                while line := self.rfile.readline():
                    fake.lines.append(line)
                    request = json.loads(line)
                    op = request["op"]
                    if op == "hang_up":
                        return  # the daemon went away mid-call
                    if request.get("to") == "nobody":
                        reply = {"ok": False, "error": REFUSAL}
                    else:
                        reply = {"ok": True, **fake.replies.get(op, {"echo": request})}
                    self.wfile.write(json.dumps(reply).encode() + b"\n")

        self.server = socketserver.ThreadingUnixStreamServer(str(path), Session)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def requests(self) -> list[dict]:
        return [json.loads(line) for line in self.lines]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(params=["agent", "manager"])
def fake(request, tmp_path):
    name = "alice" if request.param == "agent" else "manager"
    d = FakeDaemon(tmp_path / "agent.sock", name, request.param)
    yield d
    d.close()


@pytest.fixture
def manager_fake(tmp_path):
    d = FakeDaemon(tmp_path / "agent.sock", "manager", "manager")
    yield d
    d.close()


def in_process(server, mode, body):
    """Run `body(client)` against `server` through a real MCP client, in this process."""

    async def main():
        async with Client(server, mode=mode) as client:
            return await body(client)

    return anyio.run(main)


# -- in process -------------------------------------------------------------------------


def test_every_tool_of_the_table_has_a_function_and_a_description():
    tool_ops = [op.name for op in TABLE if op.tool]
    assert list(tool_functions(None)) == list(DESCRIPTIONS) == tool_ops == MANAGER_TOOLS
    assert set(AGENT_TOOLS) < set(MANAGER_TOOLS)


def test_each_tools_schema_and_annotations_are_its_table_row(manager_fake):
    """The input schema lists exactly the row's arguments the model sees (the harness's
    `lease` flag is not one), required as the row says, described in its words."""

    async def body(client):
        return (await client.list_tools()).tools

    for t in in_process(build_server(manager_fake.path), "auto", body):
        op = OPS[t.name]
        seen = [a for a in op.args if a.tool]
        properties = t.input_schema.get("properties", {})
        assert list(properties) == [a.name for a in seen], t.name
        assert t.input_schema.get("required", []) == [a.name for a in seen if a.required]
        for a in seen:
            assert properties[a.name]["description"] == a.description
        assert t.description == op.description
        assert bool(t.annotations and t.annotations.read_only_hint) == op.read_only, t.name
    assert "lease" in [a.name for a in OPS["recv"].args]


def test_a_tool_this_side_does_not_know_is_left_out(manager_fake):
    manager_fake.replies["whoami"]["tools"] = ["send", "teleport", "recv"]

    async def body(client):
        return (await client.list_tools()).tools

    tools = in_process(build_server(manager_fake.path), "auto", body)
    assert [t.name for t in tools] == ["send", "recv"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_list_tools_is_exactly_what_whoami_offers(fake, mode):
    async def body(client):
        return (await client.list_tools()).tools

    tools = in_process(build_server(fake.path), mode, body)
    assert [t.name for t in tools] == fake.replies["whoami"]["tools"]
    for t in tools:
        assert t.description == DESCRIPTIONS[t.name]
    schemas = {t.name: t.input_schema for t in tools}
    assert sorted(schemas["send"]["required"]) == ["body", "to"]
    assert "required" not in schemas["recv"]
    assert "wait_seconds" in schemas["recv"]["properties"]
    assert "operator" in DESCRIPTIONS["send"] and "180" in DESCRIPTIONS["recv"]
    if fake.replies["whoami"]["role"] == "manager":
        assert schemas["request_spawn_commit"]["required"] == ["name", "commit_ref"]
        assert schemas["ask_operator"]["required"] == ["question"]
    assert fake.requests() == [{"op": "whoami"}]  # listing asks nothing more


def test_a_call_is_forwarded_as_one_exact_json_line(manager_fake):
    async def body(client):
        return [
            await client.call_tool("send", {"to": "operator", "body": "done: ✓"}),
            await client.call_tool("recv", {}),
            await client.call_tool("recv", {"wait_seconds": 2}),
            await client.call_tool("ask_operator", {"question": "ship?", "options": ["y", "n"]}),
            await client.call_tool("request_spawn", {"name": "bob"}),
            await client.call_tool("list_peers", {}),
        ]

    results = in_process(build_server(manager_fake.path), "auto", body)
    assert not any(r.is_error for r in results)
    expected = [
        {"op": "whoami"},
        {"op": "send", "to": "operator", "body": "done: ✓"},
        {"op": "recv", "wait_seconds": None},
        {"op": "recv", "wait_seconds": 2.0},
        {"op": "ask_operator", "question": "ship?", "options": ["y", "n"]},
        {"op": "request_spawn", "name": "bob"},
        {"op": "list_peers"},
    ]
    assert manager_fake.lines == [json.dumps(r).encode() + b"\n" for r in expected]
    replies = manager_fake.replies
    assert [json.loads(text(r)) for r in results] == [
        replies["send"],
        replies["recv"],
        replies["recv"],
        replies["ask_operator"],
        replies["request_spawn"],
        replies["list_peers"],
    ]


def test_an_error_reply_is_a_tool_error_and_the_server_goes_on(manager_fake):
    async def body(client):
        refused = await client.call_tool("send", {"to": "nobody", "body": "x"})
        after = await client.call_tool("whoami", {})
        return refused, after

    refused, after = in_process(build_server(manager_fake.path), "auto", body)
    assert refused.is_error and REFUSAL in text(refused)
    assert not after.is_error and json.loads(text(after))["name"] == "manager"


def test_a_daemon_gone_is_a_tool_error_not_a_crash(manager_fake):
    async def hang_up():
        with pytest.raises(ToolError, match="cannot reach the hive daemon"):
            await forwarder(manager_fake.path)({"op": "hang_up"}, 5)

    anyio.run(hang_up)  # the daemon closed the connection without a reply

    server = build_server(manager_fake.path)
    manager_fake.close()
    manager_fake.path.unlink()

    async def body(client):
        return await client.call_tool("whoami", {})

    result = in_process(server, "auto", body)
    assert result.is_error and "cannot reach the hive daemon" in text(result)


def test_recv_reads_longer_than_it_may_wait():
    assert recv_timeout(None) == recv_timeout(0) == 30
    assert recv_timeout(5) == 35
    assert recv_timeout(1000) == 210  # the daemon caps the wait at 180


def test_build_server_refuses_without_a_daemon(tmp_path):
    with pytest.raises(HiveError, match="no hive daemon answers on"):
        build_server(tmp_path / "none.sock")


# -- over stdio: `hyperhive mcp` as a subprocess --------------------------------------


def test_stdio_server_against_the_fake_daemon(manager_fake):
    async def body(session):
        tools = (await session.list_tools()).tools
        sent = await session.call_tool("send", {"to": "operator", "body": "hello"})
        refused = await session.call_tool("send", {"to": "nobody", "body": "hello"})
        return tools, sent, refused

    tools, sent, refused = over_stdio(manager_fake.path, body)
    assert [t.name for t in tools] == MANAGER_TOOLS
    assert json.loads(text(sent)) == {"id": 7}
    assert refused.is_error and REFUSAL in text(refused)
    assert manager_fake.lines[-2] == b'{"op": "send", "to": "operator", "body": "hello"}\n'


@pytest.mark.parametrize("kind", ["missing", "stale"])
def test_stdio_server_without_a_daemon_exits_with_one_line(tmp_path, kind):
    path = tmp_path / "agent.sock"
    if kind == "stale":  # a socket file nobody listens on any more
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(path))
        s.close()
    proc = subprocess.run(
        [HYPERHIVE, "mcp", "--socket", str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"hyperhive: no hive daemon answers on {path}")


@pytest.fixture(scope="module")
def real_daemon(tmp_path_factory):
    """`hyperhive up` on a new home (it creates the manager); yields the manager's socket."""
    if not (Path(__file__).parent.parent / "hyperhive/daemon/agentsock.py").exists():
        pytest.skip("agent sockets not in the daemon yet")
    daemon = Daemon(tmp_path_factory.mktemp("mcp") / "hive").start()
    sock = daemon.root / "run" / "agents" / "manager" / "agent.sock"
    try:
        wait_for(sock.exists, what="manager.sock")
        yield daemon, sock
    finally:
        if daemon.proc.poll() is None:
            daemon.stop()


def test_stdio_server_against_the_real_daemon(real_daemon):
    daemon, sock = real_daemon
    run_cli(daemon.root, "send", "operator", "manager", "ping", check=True)

    async def body(session):
        tools = (await session.list_tools()).tools
        me = await session.call_tool("whoami", {})
        sent = await session.call_tool("send", {"to": "operator", "body": "hello via mcp"})
        now = await session.call_tool("recv", {})  # looks now: the ping is there already
        empty = await session.call_tool("recv", {})
        refused = await session.call_tool("send", {"to": "nobody", "body": "x"})

        async def operator_sends_later():
            await anyio.sleep(0.5)
            await anyio.to_thread.run_sync(
                lambda: run_cli(daemon.root, "send", "operator", "manager", "pong", check=True)
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(operator_sends_later)
            started = anyio.current_time()
            woken = await session.call_tool("recv", {"wait_seconds": 60})
            waited = anyio.current_time() - started
        return tools, me, sent, now, empty, refused, woken, waited

    tools, me, sent, now, empty, refused, woken, waited = over_stdio(sock, body)

    assert [t.name for t in tools] == MANAGER_TOOLS
    me = json.loads(text(me))
    assert (me["name"], me["role"], me["tools"]) == ("manager", "manager", MANAGER_TOOLS)
    assert [(m["from"], m["body"]) for m in json.loads(text(now))["messages"]] == [
        ("operator", "ping")
    ]
    assert json.loads(text(empty)) == {"messages": []}
    assert refused.is_error and "unknown recipient 'nobody'" in text(refused)
    assert [m["body"] for m in json.loads(text(woken))["messages"]] == ["pong"]
    assert 0.4 < waited < 20  # woken by the send, long before its 60 s

    db = sqlite3.connect(daemon.root / "hive.db")
    db.row_factory = sqlite3.Row
    sent_id = json.loads(text(sent))["id"]
    row = db.execute("SELECT * FROM messages WHERE id = ?", (sent_id,)).fetchone()
    db.close()
    assert (row["sender"], row["recipient"], row["body"]) == (
        "manager",
        "operator",
        "hello via mcp",
    )


def test_a_cancelled_recv_loses_no_message(real_daemon):
    """The model's client gives up on a waiting recv: the connection closes, so the message
    the daemon then takes for it goes back to the inbox for the next recv."""
    daemon, sock = real_daemon
    server = build_server(sock)

    async def body(client):
        with anyio.move_on_after(0.5):
            await client.call_tool("recv", {"wait_seconds": 60})
            raise AssertionError("recv returned with nothing sent")
        await anyio.to_thread.run_sync(
            lambda: run_cli(daemon.root, "send", "operator", "manager", "kept", check=True)
        )
        return await client.call_tool("recv", {"wait_seconds": 10})

    result = in_process(server, "auto", body)
    assert [m["body"] for m in json.loads(text(result))["messages"]] == ["kept"]

"""The agents' MCP server: its protocol in process (JSON-RPC lines on pipes, against a fake
daemon), and through the `mcp` SDK's real client over stdio (`hyperhive mcp` as a
subprocess, both of the client's connect modes) against the fake and the real daemon.
tests/test_claude_cli.py drives it with the real Claude Code CLI."""

import json
import os
import select
import socket
import socketserver
import sqlite3
import subprocess
import threading
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from support.daemon import Daemon
from support.hive import HYPERHIVE, run_cli
from support.mcp import over_stdio, text
from support.wait import wait_for

from hyperhive.errors import HiveError
from hyperhive.mcp import server as mcp_server
from hyperhive.mcp.server import PROTOCOL_VERSIONS, build_server, forward
from hyperhive.mcp.tools import DESCRIPTIONS, ToolError, recv_timeout, tool_ops
from hyperhive.wire.ops import OPS, TABLE, tools_for

AGENT_TOOLS, MANAGER_TOOLS = tools_for("agent"), tools_for("manager")  # the operation table
REFUSAL = "unknown recipient 'nobody': `list_peers` shows who can be reached"


class FakeDaemon:
    """A real Unix socket speaking the agent-socket protocol, answering from a table, and
    keeping every request line it got, byte for byte."""

    def __init__(self, path: Path, name: str, role: str):
        self.path = path
        self.lines: list[bytes] = []
        self.raw: dict[str, bytes] = {}  # a reply line sent as it is, by op
        self.hung_up = threading.Semaphore(0)  # released when a held call's client hangs up
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
                    if op == "hold" or request.get("wait_seconds") == 60:  # until hung up
                        self.rfile.read()
                        fake.hung_up.release()
                        return
                    if op in fake.raw:
                        self.wfile.write(fake.raw[op])
                        continue
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


def sdk_client(socket_path: Path, mode: str, body):
    """Run `body(client)` with the SDK's `Client` on a `hyperhive mcp` subprocess over
    stdio, connecting in `mode` ("auto" probes the newer protocol era first)."""
    params = StdioServerParameters(command=HYPERHIVE, args=["mcp", "--socket", str(socket_path)])

    async def main():
        async with Client(params, mode=mode) as client:
            return await body(client)

    return anyio.run(main)


class Wire:
    """`Server.serve` in a thread on two pipes: JSON-RPC lines in, JSON-RPC lines out."""

    def __init__(self, server):
        r_in, w_in = os.pipe()
        r_out, w_out = os.pipe()
        self.input, self.output = os.fdopen(w_in, "wb"), os.fdopen(r_out, "rb")
        self.server_out = os.fdopen(w_out, "wb")
        self.thread = threading.Thread(
            target=server.serve, args=(os.fdopen(r_in, "rb"), self.server_out)
        )
        self.thread.start()

    def write(self, data: bytes) -> None:
        self.input.write(data)
        self.input.flush()

    def send(self, message: dict) -> None:
        self.write(json.dumps(message).encode() + b"\n")

    def ask(self, id, method: str, **params) -> dict:
        self.send({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
        return self.read()

    def call(self, id, tool: str, **arguments) -> dict:
        return self.ask(id, "tools/call", name=tool, arguments=arguments)["result"]

    def read(self, timeout: float = 30) -> dict:
        assert select.select([self.output], [], [], timeout)[0], "no reply from the server"
        return json.loads(self.output.readline())

    def close(self) -> None:
        """End of input: the server returns (ending every call still running)."""
        self.input.close()
        self.thread.join(30)
        assert not self.thread.is_alive()
        self.server_out.close()
        assert self.output.read() == b""  # nothing was left unread
        self.output.close()


@pytest.fixture
def wire(manager_fake):
    w = Wire(build_server(manager_fake.path))
    yield w
    if not w.input.closed:
        w.close()


def result_text(result: dict) -> str:
    (block,) = result["content"]
    assert block["type"] == "text"
    return block["text"]


# -- the protocol, in process ------------------------------------------------------------


def test_every_tool_of_the_table_has_an_entry_and_a_description():
    tool_names = [op.name for op in TABLE if op.tool]
    assert list(tool_ops()) == list(DESCRIPTIONS) == tool_names == MANAGER_TOOLS
    assert set(AGENT_TOOLS) < set(MANAGER_TOOLS)


def test_initialize_answers_the_clients_version_or_its_newest(wire):
    for asked in (*PROTOCOL_VERSIONS, "2026-07-28", "1999-01-01", None):
        reply = wire.ask(1, "initialize", protocolVersion=asked, capabilities={})
        result = reply["result"]
        expected = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[-1]
        assert (reply["jsonrpc"], reply["id"], result["protocolVersion"]) == ("2.0", 1, expected)
        assert result["capabilities"] == {"tools": {"listChanged": False}}
        assert result["serverInfo"]["name"] == "hyperhive"
        assert "You are manager, the manager in a hyperhive swarm" in result["instructions"]
    assert wire.ask("p", "ping") == {"jsonrpc": "2.0", "id": "p", "result": {}}


def test_what_it_does_not_speak_is_a_json_rpc_error_and_it_goes_on(wire):
    def error(reply: dict, id, code: int, says: str) -> None:
        assert reply["id"] == id and reply["error"]["code"] == code, reply
        assert says in reply["error"]["message"]

    error(wire.ask(1, "server/discover"), 1, -32601, "method not found: server/discover")
    error(wire.ask(2, "resources/list"), 2, -32601, "resources/list")
    wire.write(b"{not json\n")
    error(wire.read(), None, -32700, "parse error")
    wire.write(b"[1, 2]\n")  # a batch: gone from the protocol since 2025-06-18
    error(wire.read(), None, -32600, "not a JSON-RPC 2.0 message")
    wire.send({"id": 3, "method": "ping"})  # no "jsonrpc": "2.0"
    error(wire.read(), None, -32600, "not a JSON-RPC 2.0 message")
    wire.send({"jsonrpc": "2.0", "id": True, "method": "ping"})
    error(wire.read(), None, -32600, "string method and id")
    wire.send({"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": [1]})
    error(wire.read(), 4, -32602, "params must be an object")
    wire.send({"jsonrpc": "2.0", "method": "notifications/initialized"})  # no reply
    wire.send({"jsonrpc": "2.0", "id": 9, "result": {}})  # a response: none was asked
    wire.write(b"\n")
    assert wire.ask(5, "ping")["result"] == {}  # the next reply is the ping's


def test_a_message_over_the_limit_is_refused_unread_and_the_next_is_answered(
    manager_fake, monkeypatch
):
    monkeypatch.setattr(mcp_server, "MAX_MESSAGE", 1000)
    wire = Wire(build_server(manager_fake.path))
    big = {"to": "operator", "body": "x" * 5000}
    wire.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": big})
    reply = wire.read()
    assert reply["id"] is None and reply["error"]["code"] == -32600
    assert "over 1000 bytes" in reply["error"]["message"]
    assert json.loads(result_text(wire.call(2, "send", to="operator", body="small"))) == {"id": 7}
    wire.close()
    assert [r["op"] for r in manager_fake.requests()] == ["whoami", "send"]


def test_each_tools_schema_and_annotations_are_its_table_row(wire):
    """The input schema lists exactly the row's arguments the model sees (the harness's
    `lease` flag is not one), required as the row says, described in its words."""
    tools = wire.ask(1, "tools/list")["result"]["tools"]
    assert [t["name"] for t in tools] == MANAGER_TOOLS
    for t in tools:
        op = OPS[t["name"]]
        seen = [a for a in op.args if a.tool]
        schema = t["inputSchema"]
        assert schema["type"] == "object"
        assert list(schema["properties"]) == [a.name for a in seen], t["name"]
        assert schema.get("required", []) == [a.name for a in seen if a.required]
        for a in seen:
            assert schema["properties"][a.name]["description"] == a.description
        assert t["description"] == op.description
        assert t.get("annotations", {}).get("readOnlyHint", False) == op.read_only, t["name"]
    assert "lease" in [a.name for a in OPS["recv"].args]
    schemas = {t["name"]: t["inputSchema"]["properties"] for t in tools}
    assert schemas["send"]["to"]["type"] == "string"
    assert schemas["recv"]["wait_seconds"]["anyOf"] == [{"type": "number"}, {"type": "null"}]
    assert schemas["ask_operator"]["options"]["anyOf"][0] == {
        "type": "array",
        "items": {"type": "string"},
    }
    assert schemas["review_reply"]["comment"]["type"] == "integer"
    assert schemas["request_apply_commit"]["rollback"] == {
        "type": "boolean",
        "description": OPS["request_apply_commit"].args[2].description,
        "default": None,
    }


def test_a_tool_this_side_does_not_know_is_left_out(manager_fake):
    manager_fake.replies["whoami"]["tools"] = ["send", "teleport", "recv"]
    wire = Wire(build_server(manager_fake.path))
    assert [t["name"] for t in wire.ask(1, "tools/list")["result"]["tools"]] == ["send", "recv"]
    refused = wire.call(2, "teleport")
    assert refused["isError"] and result_text(refused) == "unknown tool: teleport"
    wire.close()


def test_arguments_are_checked_against_the_table_before_anything_is_sent(wire, manager_fake):
    cases = {
        "send: missing the required argument body": ("send", {"to": "operator"}),
        "send: argument to: string expected, not int": ("send", {"to": 3, "body": "x"}),
        "send: argument to: null is not allowed": ("send", {"to": None, "body": "x"}),
        "send: unknown argument(s) cc, priority": (
            "send",
            {"to": "a", "body": "x", "cc": "b", "priority": 1},
        ),
        "recv: argument wait_seconds: number expected, not str": ("recv", {"wait_seconds": "5"}),
        "recv: argument wait_seconds: number expected, not a boolean": (
            "recv",
            {"wait_seconds": True},
        ),
        "ask_operator: argument options[1]: string expected, not int": (
            "ask_operator",
            {"question": "?", "options": ["a", 2]},
        ),
        "ask_operator: argument options: an array is expected": (
            "ask_operator",
            {"question": "?", "options": "a"},
        ),
        "review_reply: argument comment: integer expected, not float": (
            "review_reply",
            {"approval": "a#1", "comment": 1.5, "text": "t"},
        ),
    }
    for n, (says, (tool, arguments)) in enumerate(cases.items()):
        result = wire.call(n, tool, **arguments)
        assert result["isError"] and result_text(result) == says
    wire.send({"jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": {"name": 5}})
    assert result_text(wire.read()["result"]) == "unknown tool: 5"
    args_not_object = {"name": "send", "arguments": ["operator"]}
    wire.send({"jsonrpc": "2.0", "id": 98, "method": "tools/call", "params": args_not_object})
    assert result_text(wire.read()["result"]) == "send: the arguments are not an object"
    assert manager_fake.requests() == [{"op": "whoami"}]  # none reached the daemon


def test_a_call_is_forwarded_as_one_exact_json_line(wire, manager_fake):
    results = [
        wire.call(1, "send", to="operator", body="done: ✓"),
        wire.call(2, "recv"),
        wire.call(3, "recv", wait_seconds=2),  # an integer for a number: sent as 2.0
        wire.call(4, "ask_operator", question="ship?", options=["y", "n"]),
        wire.call(5, "request_spawn", name="bob"),
        wire.call(6, "list_peers"),
    ]
    assert not any(r["isError"] for r in results)
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
    assert [json.loads(result_text(r)) for r in results] == [
        replies["send"],
        replies["recv"],
        replies["recv"],
        replies["ask_operator"],
        replies["request_spawn"],
        replies["list_peers"],
    ]


def test_an_error_reply_is_a_tool_error_and_the_server_goes_on(wire):
    refused = wire.call(1, "send", to="nobody", body="x")
    after = wire.call(2, "whoami")
    assert refused["isError"] and result_text(refused) == REFUSAL
    assert not after["isError"] and json.loads(result_text(after))["name"] == "manager"


HOLD = {"name": "recv", "arguments": {"wait_seconds": 60}}  # the fake holds it


def test_a_cancelled_call_hangs_up_at_once_and_gets_no_reply(wire, manager_fake):
    """`notifications/cancelled` closes the call's connection (the daemon then puts a
    recv's messages back) and the call is never answered; the others go on."""
    wire.send({"jsonrpc": "2.0", "id": "h", "method": "tools/call", "params": HOLD})
    wait_for(lambda: len(manager_fake.lines) == 2, what="the recv to reach the daemon")
    cancel = {"requestId": "h", "reason": "the user pressed escape"}
    wire.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": cancel})
    assert manager_fake.hung_up.acquire(timeout=30)
    assert wire.ask(1, "ping")["id"] == 1  # not the cancelled call's reply
    wire.close()  # and nothing after it either


def test_end_of_input_ends_the_calls_still_running(manager_fake):
    wire = Wire(build_server(manager_fake.path))
    wire.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": HOLD})
    wait_for(lambda: len(manager_fake.lines) == 2, what="the recv to reach the daemon")
    wire.close()
    assert manager_fake.hung_up.acquire(timeout=30)


def test_calls_past_the_limit_are_refused(manager_fake, monkeypatch):
    monkeypatch.setattr(mcp_server, "MAX_CALLS", 2)
    wire = Wire(build_server(manager_fake.path))
    for id in (1, 2):
        wire.send({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": HOLD})
    wait_for(lambda: len(manager_fake.lines) == 3, what="both recvs to reach the daemon")
    again = wire.ask(1, "tools/call", **HOLD)["error"]
    assert (again["code"], again["message"]) == (
        -32600,
        "tools/call refused: a call with this id runs",
    )
    third = wire.ask(3, "tools/call", **HOLD)["error"]
    assert (third["code"], third["message"]) == (-32600, "tools/call refused: 2 calls run")
    wire.close()
    assert manager_fake.hung_up.acquire(timeout=30) and manager_fake.hung_up.acquire(timeout=30)
    assert len(manager_fake.lines) == 3


def test_a_daemon_gone_is_a_tool_error_not_a_crash(manager_fake):
    with pytest.raises(ToolError, match="cannot reach the hive daemon.*without a reply"):
        forward(manager_fake.path, {"op": "hang_up"}, 5)  # closed without a reply

    wire = Wire(build_server(manager_fake.path))
    manager_fake.close()
    manager_fake.path.unlink()
    result = wire.call(1, "whoami")
    assert result["isError"] and "cannot reach the hive daemon" in result_text(result)
    wire.close()


def test_a_reply_too_late_too_large_or_garbled_is_a_tool_error(manager_fake, monkeypatch):
    with pytest.raises(ToolError, match="did not answer hold within 0 s"):
        forward(manager_fake.path, {"op": "hold"}, 0.2)
    assert manager_fake.hung_up.acquire(timeout=30)
    monkeypatch.setattr(mcp_server, "MAX_REPLY", 100)
    manager_fake.replies["list_peers"] = {"peers": ["x" * 70000]}
    with pytest.raises(ToolError, match="reply to list_peers is over 100 bytes"):
        forward(manager_fake.path, {"op": "list_peers"}, 5)
    for raw, says in ((b'["a list"]\n', "not an object"), (b"{garbled\n", "Expecting")):
        manager_fake.raw["list_peers"] = raw
        with pytest.raises(ToolError, match=f"malformed reply to list_peers: {says}"):
            forward(manager_fake.path, {"op": "list_peers"}, 5)


def test_recv_reads_longer_than_it_may_wait():
    assert recv_timeout(None) == recv_timeout(0) == 30
    assert recv_timeout(5) == 35
    assert recv_timeout(1000) == 210  # the daemon caps the wait at 180


def test_build_server_refuses_without_a_daemon(tmp_path):
    with pytest.raises(HiveError, match="no hive daemon answers on"):
        build_server(tmp_path / "none.sock")


# -- through the SDK's client ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_list_tools_is_exactly_what_whoami_offers(fake, mode):
    async def body(client):
        return (await client.list_tools()).tools

    tools = sdk_client(fake.path, mode, body)
    assert [t.name for t in tools] == fake.replies["whoami"]["tools"]
    for t in tools:
        assert t.description == DESCRIPTIONS[t.name]
        assert bool(t.annotations and t.annotations.read_only_hint) == OPS[t.name].read_only
    schemas = {t.name: t.input_schema for t in tools}
    assert sorted(schemas["send"]["required"]) == ["body", "to"]
    assert "required" not in schemas["recv"]
    assert "wait_seconds" in schemas["recv"]["properties"]
    assert "operator" in DESCRIPTIONS["send"] and "180" in DESCRIPTIONS["recv"]
    if fake.replies["whoami"]["role"] == "manager":
        assert schemas["request_spawn_commit"]["required"] == ["name", "commit_ref"]
        assert schemas["ask_operator"]["required"] == ["question"]
    assert fake.requests() == [{"op": "whoami"}]  # listing asks nothing more


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
    """The model's client gives up on a waiting recv (the SDK's client sends
    `notifications/cancelled`): the connection closes, so the message the daemon then
    takes for it goes back to the inbox for the next recv."""
    daemon, sock = real_daemon

    async def body(client):
        with anyio.move_on_after(0.5):
            await client.call_tool("recv", {"wait_seconds": 60})
            raise AssertionError("recv returned with nothing sent")
        await anyio.to_thread.run_sync(
            lambda: run_cli(daemon.root, "send", "operator", "manager", "kept", check=True)
        )
        return await client.call_tool("recv", {"wait_seconds": 10})

    result = sdk_client(sock, "auto", body)
    assert [m["body"] for m in json.loads(text(result))["messages"]] == ["kept"]

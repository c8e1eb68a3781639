"""`hyperhive mcp --socket PATH`: the stdio MCP server an agent's `claude` starts.

At start it asks the daemon `whoami` on the socket and offers exactly the tools the reply
lists: the socket is the caller's identity, so the daemon (not a flag) decides which tools
an agent gets. Each tool call then goes out as one JSON line on a fresh connection,
`{"op": <tool>, **arguments}`; the reply, minus `ok`, goes back to the model as JSON text,
and `{"ok": false, "error": …}` becomes a tool error carrying that message.

It speaks the part of MCP a tools-only server needs, itself, over newline-delimited
JSON-RPC 2.0 on stdin/stdout (the stdio transport): `initialize` (the handshake versions
2024-11-05 to 2025-11-25; the client's when it is one of them, else the newest), `ping`,
`tools/list`, `tools/call`, and the `notifications/cancelled` that ends a call. Any other
request is answered "method not found" (a client probing a newer protocol era, such as
the SDK's `server/discover`, falls back to `initialize` on it). The `mcp` SDK is not
imported: it costs a second and a half of CPU at each start, and each `claude` turn starts
this server. tests/test_mcp.py drives it with the SDK's client, tests/test_claude_cli.py
with the real Claude Code CLI.

Each call runs in a thread of its own, so a long `recv` wait does not hold up the others;
a cancelled call closes its connection at once (the daemon then puts a `recv`'s messages
back in the inbox) and gets no reply, as the protocol says. End of stdin ends the server
and every call still running.
"""

import contextlib
import json
import logging
import socket
import threading
import time
from pathlib import Path
from typing import BinaryIO

from hyperhive.mcp.identity import whoami
from hyperhive.mcp.tools import ToolError, request, tool_entry, tool_ops

log = logging.getLogger("hyperhive.mcp")

PROTOCOL_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
SERVER_VERSION = "1"  # this server's, as `initialize` names it (not the package's)
MAX_MESSAGE = 4 << 20  # a message from the client (a send's body is far smaller)
MAX_REPLY = 64 << 20  # a recv may return many messages of up to 64 KiB each
MAX_CALLS = 64  # tool calls running at once; past that a call is refused
# JSON-RPC 2.0's error codes
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602


class Call:
    """One tool call in flight: cancelling it closes its connection to the daemon."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sock: socket.socket | None = None
        self.cancelled = False

    def attach(self, sock: socket.socket) -> None:
        with self.lock:
            if self.cancelled:
                raise ToolError("cancelled")
            self.sock = sock

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            if self.sock is not None:
                with contextlib.suppress(OSError):  # closed already: the call is over
                    self.sock.shutdown(socket.SHUT_RDWR)  # wakes the thread's blocked read


def forward(path: Path, req: dict, timeout: float, call: Call | None = None) -> str:
    """One request on a fresh connection to the daemon; its reply, minus `ok`, as JSON
    text. ToolError (one line for the model) when it cannot be had or was refused."""
    op = req["op"]
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with sock:
            if call is not None:
                call.attach(sock)
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps(req).encode() + b"\n")
            line = bytearray()
            while b"\n" not in line:
                if len(line) > MAX_REPLY:
                    raise ToolError(f"the hive daemon's reply to {op} is over {MAX_REPLY} bytes")
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                chunk = sock.recv(1 << 16)
                if not chunk:
                    raise EOFError("the connection closed without a reply")
                line += chunk
    except TimeoutError:
        raise ToolError(f"the hive daemon did not answer {op} within {timeout:.0f} s") from None
    except (OSError, EOFError) as e:
        detail = str(e) or "the connection closed without a reply"
        raise ToolError(f"cannot reach the hive daemon on {path}: {detail}") from None
    try:
        reply = json.loads(line[: line.index(b"\n")])
    except ValueError as e:
        raise ToolError(f"the hive daemon sent a malformed reply to {op}: {e}") from None
    if not isinstance(reply, dict):
        raise ToolError(f"the hive daemon sent a malformed reply to {op}: not an object")
    if not reply.pop("ok", False):
        raise ToolError(str(reply.get("error") or f"the hive daemon refused {op}"))
    return json.dumps(reply, ensure_ascii=False)


class Server:
    """The MCP server of one agent socket: the tools its `whoami` reply offers."""

    def __init__(self, path: Path, me: dict):
        self.path = path
        name, role = me.get("name", "?"), me.get("role", "agent")
        self.instructions = (
            f"You are {name}, {'the manager' if role == 'manager' else 'an agent'} in a "
            "hyperhive swarm. These tools reach the other agents, the manager and the human "
            "operator through the hive's broker: `recv` reads your inbox, `send` writes."
        )
        known = tool_ops()
        self.tools = {}
        for tool in me["tools"]:
            if tool not in known:
                log.warning("the hive daemon offers a tool this hyperhive does not know: %s", tool)
                continue
            self.tools[tool] = known[tool]
        self.listing = [tool_entry(op) for op in self.tools.values()]
        self.calls: dict[object, Call] = {}
        self.lock = threading.Lock()  # self.calls, and one message at a time on `out`
        self.out: BinaryIO | None = None

    # -- the transport ----------------------------------------------------------------------

    def serve(self, rfile: BinaryIO, wfile: BinaryIO) -> None:
        """Answer the messages read from `rfile` on `wfile` until `rfile` ends; then every
        call still running is cancelled."""
        self.out = wfile
        try:
            while line := rfile.readline(MAX_MESSAGE + 1):
                if len(line) > MAX_MESSAGE and not line.endswith(b"\n"):
                    while (rest := rfile.readline(MAX_MESSAGE)) and not rest.endswith(b"\n"):
                        pass  # the rest of the oversized message, unread
                    self.error(None, INVALID_REQUEST, f"a message over {MAX_MESSAGE} bytes")
                    continue
                if line.strip():
                    self.receive(line)
        finally:
            with self.lock:
                running = list(self.calls.values())
            for call in running:
                call.cancel()

    def send(self, message: dict) -> None:
        data = json.dumps({"jsonrpc": "2.0", **message}).encode() + b"\n"
        with self.lock:
            try:
                self.out.write(data)
                self.out.flush()
            except (BrokenPipeError, ValueError):  # the client is gone; stdin ends next
                pass

    def result(self, id: object, result: dict) -> None:
        self.send({"id": id, "result": result})

    def error(self, id: object, code: int, message: str) -> None:
        self.send({"id": id, "error": {"code": code, "message": message}})

    # -- the protocol -----------------------------------------------------------------------

    def receive(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError as e:
            self.error(None, PARSE_ERROR, f"parse error: {e}")
            return
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            self.error(None, INVALID_REQUEST, "not a JSON-RPC 2.0 message object")
            return
        method, params = message.get("method"), message.get("params")
        if method is None:
            return  # a response: this server sends no requests, so there is none to match
        if "id" not in message:  # a notification: no reply
            if method == "notifications/cancelled" and isinstance(params, dict):
                with self.lock:
                    call = self.calls.get(params.get("requestId"))
                if call is not None:
                    call.cancel()
            return
        id = message["id"]
        if not isinstance(method, str) or not isinstance(id, (str, int)) or isinstance(id, bool):
            self.error(None, INVALID_REQUEST, "a request needs a string method and id")
            return
        if params is not None and not isinstance(params, dict):
            self.error(id, INVALID_PARAMS, f"{method}: params must be an object")
            return
        params = params or {}
        if method == "initialize":
            self.result(id, self.initialize(params))
        elif method == "ping":
            self.result(id, {})
        elif method == "tools/list":
            self.result(id, {"tools": self.listing})
        elif method == "tools/call":
            self.start_call(id, params)
        else:
            self.error(id, METHOD_NOT_FOUND, f"method not found: {method}")

    def initialize(self, params: dict) -> dict:
        asked = params.get("protocolVersion")
        return {
            "protocolVersion": asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[-1],
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": "hyperhive", "version": SERVER_VERSION},
            "instructions": self.instructions,
        }

    def start_call(self, id: object, params: dict) -> None:
        name = params.get("name")
        op = self.tools.get(name) if isinstance(name, str) else None
        try:
            if op is None:
                raise ToolError(f"unknown tool: {name}")
            req, timeout = request(op, params.get("arguments"))
        except ToolError as e:
            self.result(id, tool_result(str(e), error=True))
            return
        call = Call()
        with self.lock:
            if id in self.calls:
                busy = "a call with this id runs"
            elif len(self.calls) >= MAX_CALLS:
                busy = f"{MAX_CALLS} calls run"
            else:
                busy = ""
                self.calls[id] = call
        if busy:
            self.error(id, INVALID_REQUEST, f"tools/call refused: {busy}")
            return
        threading.Thread(target=self.run_call, args=(id, call, req, timeout), daemon=True).start()

    def run_call(self, id: object, call: Call, req: dict, timeout: float) -> None:
        try:
            reply = tool_result(forward(self.path, req, timeout, call))
        except ToolError as e:
            reply = tool_result(str(e), error=True)
        except Exception as e:  # a bug here must not kill the server: the model hears of it
            log.exception("tool %s failed", req["op"])
            reply = tool_result(f"{req['op']} failed in the MCP server: {e}", error=True)
        with self.lock:
            del self.calls[id]
        if not call.cancelled:  # a cancelled request gets no reply
            self.result(id, reply)


def tool_result(text: str, error: bool = False) -> dict:
    return {"content": [{"type": "text", "text": text}], "isError": error}


def build_server(path: Path, me: dict | None = None) -> Server:
    """The server with the tools the daemon on `path` offers its caller (`me`: its
    `whoami` reply, asked here if not given)."""
    return Server(path, me if me is not None else whoami(path))

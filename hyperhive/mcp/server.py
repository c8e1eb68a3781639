"""`hyperhive mcp --socket PATH`: the stdio MCP server an agent's `claude` starts.

At start it asks the daemon `whoami` on the socket and registers exactly the tools the
reply lists: the socket is the caller's identity, so the daemon (not a flag) decides which
tools an agent gets. Each tool call then goes out as one JSON line on a fresh connection,
`{"op": <tool>, **arguments}`; the reply, minus `ok`, goes back to the model as JSON text,
and `{"ok": false, "error": …}` becomes a tool error carrying that message.
"""

import json
import logging
from pathlib import Path

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

from hyperhive.mcp.identity import whoami
from hyperhive.mcp.tools import Forward, tool_functions
from hyperhive.wire.ops import OPS

log = logging.getLogger("hyperhive.mcp")

MAX_REPLY = 64 << 20  # a recv may return many messages of up to 64 KiB each


def forwarder(path: Path) -> Forward:
    """forward(request, timeout): one request on a fresh connection, the reply as JSON text.

    A call cancelled mid-wait (or timed out) closes the connection, so the daemon's reply
    write fails and a `recv`'s messages go back to the inbox instead of being lost.
    """

    async def forward(request: dict, timeout: float) -> str:
        op = request["op"]
        try:
            with anyio.fail_after(timeout):
                async with await anyio.connect_unix(str(path)) as stream:
                    await stream.send(json.dumps(request).encode() + b"\n")
                    reader = BufferedByteReceiveStream(stream)
                    line = await reader.receive_until(b"\n", MAX_REPLY)
        except TimeoutError:
            raise ToolError(f"the hive daemon did not answer {op} within {timeout:.0f} s") from None
        except anyio.DelimiterNotFound:
            raise ToolError(f"the hive daemon's reply to {op} is over {MAX_REPLY} bytes") from None
        except (OSError, anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError) as e:
            detail = str(e) or "the connection closed without a reply"
            raise ToolError(f"cannot reach the hive daemon on {path}: {detail}") from None
        try:
            reply = json.loads(line)
        except ValueError as e:
            raise ToolError(f"the hive daemon sent a malformed reply to {op}: {e}") from None
        if not isinstance(reply, dict):
            raise ToolError(f"the hive daemon sent a malformed reply to {op}: not an object")
        if not reply.pop("ok", False):
            raise ToolError(str(reply.get("error") or f"the hive daemon refused {op}"))
        return json.dumps(reply, ensure_ascii=False)

    return forward


def build_server(path: Path, me: dict | None = None) -> MCPServer:
    """An MCPServer with the tools the daemon on `path` offers its caller (`me`: its
    `whoami` reply, asked here if not given)."""
    me = me if me is not None else whoami(path)
    name, role = me.get("name", "?"), me.get("role", "agent")
    server = MCPServer(
        name="hyperhive",
        instructions=(
            f"You are {name}, {'the manager' if role == 'manager' else 'an agent'} in a "
            "hyperhive swarm. These tools reach the other agents, the manager and the human "
            "operator through the hive's broker: `recv` reads your inbox, `send` writes."
        ),
    )
    functions = tool_functions(forwarder(path))
    for tool in me["tools"]:
        if tool not in functions:
            log.warning("the hive daemon offers a tool this hyperhive does not know: %s", tool)
            continue
        server.add_tool(
            functions[tool],
            name=tool,
            description=OPS[tool].description,
            annotations=ToolAnnotations(read_only_hint=True) if OPS[tool].read_only else None,
            structured_output=False,
        )
    return server

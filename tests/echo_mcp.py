"""A small stdio MCP server for the real-CLI tests: an extra server with two tools,
`echo` (answers its text) and `touch` (creates the file it names, to show a call ran).

It speaks MCP's JSON-RPC lines itself (initialize, tools/list, tools/call, ping) rather
than through the `mcp` package, whose import costs a second or more of CPU per start:
the real CLI starts it on every run.
"""

import json
import sys
from pathlib import Path

TOOLS = [
    {
        "name": "echo",
        "description": "Answer the text given.",
        "inputSchema": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    },
    {
        "name": "touch",
        "description": "Create the file at path.",
        "inputSchema": {
            "type": "object",
            "properties": {"path": {"type": "string"}},
            "required": ["path"],
        },
    },
]


def call(name: str, args: dict) -> dict:
    if name == "echo":
        text = f"echo: {args.get('text', '')}"
    elif name == "touch":
        Path(str(args.get("path"))).touch()
        text = f"touched {args.get('path')}"
    else:
        return {"content": [{"type": "text", "text": f"no tool {name}"}], "isError": True}
    return {"content": [{"type": "text", "text": text}], "isError": False}


def answer(request: dict) -> dict | None:
    method, params = request.get("method"), request.get("params") or {}
    if "id" not in request:  # a notification
        return None
    if method == "initialize":
        result = {
            "protocolVersion": params.get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "echo", "version": "1"},
        }
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call":
        result = call(str(params.get("name")), params.get("arguments") or {})
    elif method == "ping":
        result = {}
    else:
        error = {"code": -32601, "message": f"method not found: {method}"}
        return {"jsonrpc": "2.0", "id": request["id"], "error": error}
    return {"jsonrpc": "2.0", "id": request["id"], "result": result}


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        reply = answer(json.loads(line))
        if reply is not None:
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()

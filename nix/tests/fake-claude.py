"""A stand-in for the `claude` CLI in the NixOS VM test (nix/tests/hive.nix): it answers
`--version` as Claude Code 2.1.328, and for a turn (`-p`, the prompt on stdin, the MCP
config in --mcp-config) it starts the hyperhive MCP server from that config, as the real
CLI does, and calls its `send` tool: `pong-<x>` to `operator` for each `ping-<x>` in the
prompt; when that is refused (the agent's policy), it tells `manager` why. It prints the
stream-json events the harness reads (system init, result) and exits 0."""

import asyncio
import json
import re
import sys
import uuid

from mcp import ClientSession, StdioServerParameters, stdio_client

VERSION = "2.1.328"


async def send_all(server: dict, pings: list[str]) -> list[str]:
    params = StdioServerParameters(command=server["command"], args=server.get("args", []))
    said = []
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        for ping in pings:
            reply = await session.call_tool("send", {"to": "operator", "body": f"pong-{ping}"})
            text = "".join(getattr(b, "text", "") for b in reply.content)
            if reply.is_error:
                refusal = f"refused pong-{ping}: {text}"
                await session.call_tool("send", {"to": "manager", "body": refusal})
                said.append(refusal)
            else:
                said.append(f"pong-{ping}")
    return said


def main() -> int:
    args = sys.argv[1:]
    if args == ["--version"]:
        print(f"{VERSION} (Claude Code)")
        return 0
    if "-p" not in args or "--mcp-config" not in args:
        print("this fake claude runs turns only: -p with --mcp-config", file=sys.stderr)
        return 2
    with open(args[args.index("--mcp-config") + 1]) as f:
        server = json.load(f)["mcpServers"]["hyperhive"]
    prompt = sys.stdin.read()
    session = str(uuid.uuid4())
    print(json.dumps({"type": "system", "subtype": "init", "session_id": session}), flush=True)
    said = asyncio.run(send_all(server, re.findall(r"ping-(\w+)", prompt)))
    result = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "result": "; ".join(said) or "nothing to answer",
        "session_id": session,
        "num_turns": 1,
        "total_cost_usd": 0.0,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A stand-in for the `claude` CLI in the NixOS VM test (nix/tests/hive.nix): it answers
`--version` as Claude Code 2.1.328, and for a turn (`-p`, the prompt on stdin, the MCP
config in --mcp-config) it starts the hyperhive MCP server from that config, as the real
CLI does, and calls its `send` tool: `pong-<x>` to `operator` for each `ping-<x>` in the
prompt; when that is refused (the agent's policy), it tells `manager` why. It prints the
stream-json events the harness reads (system init, result) and exits 0."""

import json
import os
import re
import subprocess
import sys
import uuid

VERSION = "2.1.328"
PROTOCOL = "2025-06-18"  # the MCP revision Claude Code 2.1 asks for


class Stdio:
    """An MCP client over stdio, the standard library only (the VM's Python has no more):
    newline-delimited JSON-RPC 2.0 to the server's stdin, replies from its stdout."""

    def __init__(self, server: dict):
        self.proc = subprocess.Popen(
            [server["command"], *server.get("args", [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, **server.get("env", {})},  # as claude: added to its own
        )
        self.next_id = 0

    def notify(self, method: str, params: dict | None = None) -> None:
        message = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: dict) -> dict:
        self.next_id += 1
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()
        while line := self.proc.stdout.readline():
            reply = json.loads(line)
            if reply.get("id") != self.next_id:
                continue  # a notification or request of the server's: none answered here
            if "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            return reply["result"]
        raise RuntimeError(f"{method}: the MCP server exited without a reply")

    def close(self) -> None:
        self.proc.stdin.close()  # end of stdin ends the server
        self.proc.wait(timeout=30)


def send_all(server: dict, pings: list[str]) -> list[str]:
    mcp = Stdio(server)
    try:
        mcp.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL,
                "capabilities": {},
                "clientInfo": {"name": "fake-claude", "version": VERSION},
            },
        )
        mcp.notify("notifications/initialized")

        def send(to: str, body: str) -> tuple[bool, str]:
            args = {"to": to, "body": body}
            reply = mcp.request("tools/call", {"name": "send", "arguments": args})
            text = "".join(b.get("text", "") for b in reply["content"])
            return not reply.get("isError", False), text

        said = []
        for ping in pings:
            sent, text = send("operator", f"pong-{ping}")
            if sent:
                said.append(f"pong-{ping}")
            else:
                refusal = f"refused pong-{ping}: {text}"
                send("manager", refusal)
                said.append(refusal)
        return said
    finally:
        mcp.close()


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
    said = send_all(server, re.findall(r"ping-(\w+)", prompt))
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

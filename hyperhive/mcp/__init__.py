"""The agents' MCP tools: `hyperhive mcp --socket PATH`, a stdio MCP server (the tools
part of the protocol, spoken in `server.py` without the `mcp` SDK) that forwards each tool
call as one JSON line over the agent's socket.

The daemon decides who the caller is from the socket alone; the tools offered are the ones
its `whoami` reply lists (`identity.py` asks, `server.py` serves, `tools.py` holds the
tools' schemas and checks their arguments)."""

import sys
from pathlib import Path

from hyperhive.mcp.identity import whoami
from hyperhive.mcp.server import build_server


def serve(path: Path) -> int:
    """Serve MCP on stdin/stdout until the client closes it; HiveError if no daemon
    answers on `path` (asked before anything is read)."""
    build_server(path, whoami(path)).serve(sys.stdin.buffer, sys.stdout.buffer)
    return 0

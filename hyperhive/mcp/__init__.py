"""The agents' MCP tools: `hyperhive mcp --socket PATH`, a stdio MCP server (mcp 2.x
`MCPServer`) that forwards each tool call as one JSON line over the agent's socket.

The daemon decides who the caller is from the socket alone; the tools offered are the ones
its `whoami` reply lists (`identity.py` asks, `server.py` builds the server, `tools.py`
holds the tools)."""

from pathlib import Path

from hyperhive.mcp.identity import whoami


def serve(path: Path) -> int:
    """Serve MCP on stdin/stdout until the client closes it; HiveError if no daemon
    answers on `path` (asked first, so that fails at once)."""
    me = whoami(path)
    from hyperhive.mcp.server import build_server  # imports `mcp`: a second or two

    build_server(path, me).run("stdio")
    return 0

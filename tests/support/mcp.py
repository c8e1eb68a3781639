"""An MCP client on the agents' tools: `hyperhive mcp` as a subprocess over stdio, as the
`claude` CLI runs it."""

from pathlib import Path

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client

from .hive import HYPERHIVE


def text(result) -> str:
    """The one text block of a tool's result."""
    (block,) = result.content
    return block.text


def over_stdio(socket_path: Path, body):
    """Run `body(session)` against a `hyperhive mcp` subprocess, with the initialize
    handshake a `claude` CLI does."""
    params = StdioServerParameters(command=HYPERHIVE, args=["mcp", "--socket", str(socket_path)])

    async def main():
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            return await body(session)

    return anyio.run(main)

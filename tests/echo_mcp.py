"""A small stdio MCP server for the real-CLI tests: an extra server with two tools,
`echo` (answers its text) and `touch` (creates a file it names, to show a call ran)."""

from pathlib import Path

from mcp.server.mcpserver import MCPServer

server = MCPServer(name="echo")


@server.tool(description="Answer the text given.")
def echo(text: str) -> str:
    return f"echo: {text}"


@server.tool(description="Create the file at path.")
def touch(path: str) -> str:
    Path(path).touch()
    return f"touched {path}"


if __name__ == "__main__":
    server.run("stdio")

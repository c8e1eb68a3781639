"""The ground both sides of every socket stand on: the protocol (`protocol`), the
in-process event bus (`events`), telling the daemon that something changed (`notify`), and
the one table of operations (`ops`) from which the daemon dispatches, `hyperhive mcp`
builds its tools and the harness its allow-list.

Nothing here imports beyond the ground layer (errors, home): the harness and the MCP
server inside an agent's sandbox or container speak the wire without the daemon's code."""

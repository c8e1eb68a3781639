"""`hyperhive harness`: the turn loop that turns a container into a working agent.

It long-polls `recv` on the agent's socket and runs one `claude -p` turn per batch of
messages, with exactly the tools this agent may use (`claude_config.py`), a system prompt
from `prompts/` plus the agent's notes (`prompt.py`), and reports each turn to the daemon
(`loop.py`). `events.py` reads claude's stream-json output as it arrives; `notes.py`
compacts the agent's notes when they grow past a threshold.
"""

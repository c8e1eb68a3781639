"""What one `claude` turn may use: the `--mcp-config` it gets, its permission flags and
its environment.

The MCP config holds the built-in `hyperhive` server (`hyperhive mcp --socket …`) and the
agent's extra servers from `extra-mcp.json` (`hyperhive.extraMcpServers`, rendered by
nix/lib.nix on NixOS and by the local runtime from the deployed policy).

Claude Code's permissions are a second layer inside the runtime's wall, checked against
the pinned CLI by tests/test_claude_cli.py:

- `--permission-mode dontAsk`: whatever no rule allows is denied (not the `-p` default,
  which lets read-only commands and more through);
- `--setting-sources=` (none): no user, project or local settings file is read, so the
  agent cannot widen its own rules by writing `<state>/.claude/settings*.json`;
- `--allowedTools`: `Read`, one `Edit(//<state>/**)` rule (gitignore-style; it covers
  every built-in file editor: Write, Edit, NotebookEdit), the web tools, Bash (blanket,
  or one `Bash(<pattern>)` per `hyperhive.allowedBash` pattern), the hyperhive tools of
  the agent's flavour and the extra servers' tools;
- `--disallowedTools Agent Workflow` unless `hyperhive.allowSubagents`: the CLI runs
  sub-agents without asking, in any mode;
- environment: `CLAUDE_CONFIG_DIR=<state>/.claude` (its config and transcripts stay in
  its state) and `ENABLE_TOOL_SEARCH=false` (MCP tools are offered up front, not behind
  a ToolSearch round trip).
"""

import json
import logging
import os
import re
from pathlib import Path

from hyperhive.resources import hyperhive_command
from hyperhive.wire.ops import tools_for

log = logging.getLogger("hyperhive.harness")

BUILTIN = "hyperhive"  # the built-in server's key; an extra under it is dropped
# Claude Code's own tools an agent may use besides Bash and editing its state: reading
# (anywhere: the runtime's wall decides what there is to read) and the web. Names as the
# pinned CLI's `system/init` lists them (a test checks they exist).
CLAUDE_TOOLS = ("Read", "WebFetch", "WebSearch")
# The tools that start sub-agents: `Agent` (`Task` in the init event's list) and
# `Workflow`, which orchestrates them.
SUBAGENT_TOOLS = ("Agent", "Workflow")
PERMISSION_MODE = "dontAsk"
# Claude Code names a server's tools mcp__<key>__<tool>: a key outside this would not parse.
SERVER_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _server(key: str, raw: object) -> dict:
    """One extra server with its defaults filled in; ValueError says what is wrong."""
    if not SERVER_KEY_RE.fullmatch(key):
        raise ValueError(f"server key {key!r} is not letters, digits, '_' or '-'")
    if not isinstance(raw, dict) or not isinstance(raw.get("command"), str):
        raise ValueError(f"{key}: needs a `command` string")
    args, env = raw.get("args", []), raw.get("env", {})
    allowed = raw.get("allowedTools", ["*"])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ValueError(f"{key}.args: must be a list of strings")
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ValueError(f"{key}.env: must be an object of strings")
    if not isinstance(allowed, list) or not all(isinstance(t, str) and t for t in allowed):
        raise ValueError(f"{key}.allowedTools: must be a list of tool names")
    return {"command": raw["command"], "args": args, "env": env, "allowedTools": allowed}


def load_extras(path: Path) -> dict[str, dict]:
    """The extra MCP servers in `path` (`extra-mcp.json`), key by key.

    A missing file means none. A file that cannot be read, is not JSON or has a malformed
    entry means none too, with a warning: the whole map or nothing, never half of it. An
    entry keyed `hyperhive` is dropped with a warning (it would shadow the built-in
    server, the agent's identity in the hive)."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError) as e:
        log.warning("ignoring the extra MCP servers: %s is unreadable or not JSON: %s", path, e)
        return {}
    if not isinstance(raw, dict):
        log.warning("ignoring the extra MCP servers: %s is not a JSON object", path)
        return {}
    try:
        servers = {key: _server(key, value) for key, value in raw.items()}
    except ValueError as e:
        log.warning("ignoring the extra MCP servers of %s: %s", path, e)
        return {}
    if servers.pop(BUILTIN, None) is not None:
        log.warning(
            "dropping the extra MCP server %r of %s: that key is the built-in hyperhive "
            "server's and cannot be replaced",
            BUILTIN,
            path,
        )
    return servers


def render_claude_config(
    socket: Path | str, extras: dict[str, dict], command: list[str] | None = None
) -> dict:
    """The `--mcp-config` document: `mcpServers.hyperhive` runs `<command> mcp --socket
    <socket>`, each extra its command, args and env under its own key."""
    cmd = command or hyperhive_command()
    servers = {
        key: {"command": s["command"], "args": list(s["args"]), "env": dict(s["env"])}
        for key, s in extras.items()
        if key != BUILTIN
    }
    servers[BUILTIN] = {
        "command": cmd[0],
        "args": [*cmd[1:], "mcp", "--socket", str(socket)],
        "env": {},
    }
    return {"mcpServers": servers}


def allowed_mcp_tools(flavor: str, extras: dict[str, dict]) -> list[str]:
    """The hyperhive tools of `flavor` (`agent` or `manager`), then per extra server
    `mcp__<key>__*` (allowedTools `["*"]`, the default) or `mcp__<key>__<tool>` each."""
    if flavor not in ("agent", "manager"):
        raise ValueError(f"unknown flavour {flavor!r}: agent or manager")
    tools = [f"mcp__{BUILTIN}__{t}" for t in tools_for(flavor)]
    for key, server in extras.items():
        if key == BUILTIN:
            continue
        allowed = server.get("allowedTools", ["*"])
        if "*" in allowed:
            tools.append(f"mcp__{key}__*")
        else:
            tools += [f"mcp__{key}__{t}" for t in allowed]
    return tools


def bash_tools(allowed_bash: list[str] | None) -> list[str]:
    """`Bash` (any command) without patterns; with them one `Bash(<pattern>)` each, and
    none at all for an empty list."""
    if allowed_bash is None:
        return ["Bash"]
    return [f"Bash({p})" for p in allowed_bash]


def edit_rule(state: Path | str) -> str:
    """The rule letting the file editors write under `state` and nowhere else: Claude
    Code writes an absolute path `//path` (a single `/` is relative to the settings)."""
    return f"Edit(//{str(state).strip('/')}/**)"


def allowed_tools(flavor: str, extras: dict[str, dict], policy: dict, state: Path) -> list[str]:
    """The whole `--allowedTools` list of a turn."""
    return [
        *CLAUDE_TOOLS,
        edit_rule(state),
        *bash_tools(policy.get("allowedBash")),
        *(["Agent"] if policy.get("allowSubagents") else []),
        *allowed_mcp_tools(flavor, extras),
    ]


def permission_args(flavor: str, extras: dict[str, dict], policy: dict, state: Path) -> list[str]:
    """The permission flags of a turn (see the module's docstring)."""
    args = ["--permission-mode", PERMISSION_MODE, "--setting-sources="]
    args += ["--allowedTools", *allowed_tools(flavor, extras, policy, state)]
    if not policy.get("allowSubagents"):
        args += ["--disallowedTools", *SUBAGENT_TOOLS]
    return args


def claude_env(state: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment claude runs with: the harness's, plus its own config directory in
    the agent's state and MCP tools offered up front."""
    env = dict(os.environ if base is None else base)
    env["CLAUDE_CONFIG_DIR"] = str(state / ".claude")
    env["ENABLE_TOOL_SEARCH"] = "false"
    return env

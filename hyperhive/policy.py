"""An agent's policy: the `hyperhive.*` options its config declares (the schema, checked
here) and the deployed policy the runtime stored (`agents/<name>/policy.json`), read here
by the broker, the daemon, the workflow and the harness.

How a config's options are evaluated at deploy is the runtime's (runtime/policy.py); a
value that fails the schema is `InvalidPolicy` here and fails the build there.
"""

import json
import os
import shutil
import time
from pathlib import Path

from hyperhive.errors import HiveError, PolicyError
from hyperhive.home import Home
from hyperhive.names import OPERATOR, check_agent_name

POLICY_FILE = "policy.json"
DEFAULT_POLICY: dict = {"allowedRecipients": None}
# The keys of /etc/hyperhive/policy.json (nix/lib.nix renderPolicy), then the MCP servers
# (extra-mcp.json): together the agent-settable `hyperhive.*` options.
POLICY_KEYS = (
    "allowedRecipients",
    "allowedBash",
    "model",
    "claude",
    "notesCompactBytes",
    "allowSubagents",
)
KNOWN_OPTIONS = (*POLICY_KEYS, "extraMcpServers")


class InvalidPolicy(ValueError):
    """A `hyperhive.*` value the schema refuses; the message says which and why."""


def policy_file(home: Home, name: str) -> Path:
    return home.agent_dir(name) / POLICY_FILE


def _str_list(key: str, value: object, nullable: bool) -> list[str] | None:
    if value is None and nullable:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        expected = "null or a list of strings" if nullable else "a list of strings"
        raise InvalidPolicy(f"hyperhive.{key} must be {expected}, not {json.dumps(value)}")
    return value


def normalize(raw: object) -> dict:
    """Check the evaluated options and fill in the defaults."""
    if not isinstance(raw, dict):
        raise InvalidPolicy(f"hyperhive must be an attribute set, not {json.dumps(raw)}")
    unknown = sorted(set(raw) - set(KNOWN_OPTIONS))
    if unknown:
        raise InvalidPolicy(
            f"unknown option hyperhive.{unknown[0]}: the options are "
            + ", ".join(f"hyperhive.{k}" for k in KNOWN_OPTIONS)
        )
    policy: dict = dict(DEFAULT_POLICY)
    if "allowedRecipients" in raw:
        recipients = _str_list("allowedRecipients", raw["allowedRecipients"], nullable=True)
        for r in recipients or []:
            if r != OPERATOR:
                try:
                    check_agent_name(r)
                except HiveError as e:
                    raise InvalidPolicy(f"hyperhive.allowedRecipients: {e}") from None
        policy["allowedRecipients"] = recipients
    if "allowedBash" in raw:
        policy["allowedBash"] = _str_list("allowedBash", raw["allowedBash"], nullable=True)
    if "model" in raw:
        model = raw["model"]
        if model is not None and not isinstance(model, str):
            raise InvalidPolicy(f"hyperhive.model must be a string, not {json.dumps(model)}")
        policy["model"] = model
    for key, check in (("claude", claude_path), ("notesCompactBytes", notes_compact_bytes)):
        if key in raw:
            policy[key] = check(raw[key])
    if "allowSubagents" in raw:
        policy["allowSubagents"] = allow_subagents(raw["allowSubagents"])
    if "extraMcpServers" in raw:
        policy["extraMcpServers"] = _mcp_servers(raw["extraMcpServers"])
    return policy


# The checks of the values the harness reads itself (it refuses a policy.json that fails
# them): ValueError says what is wrong.


def claude_path(value: object) -> str | None:
    """`hyperhive.claude`: null (`claude` on the harness's PATH) or an absolute path."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise ValueError(
            f"hyperhive.claude must be null or an absolute path, not {json.dumps(value)}"
        )
    return value


def claude_problem(value: object, path: str | None = None) -> str | None:
    """Why the `claude` that `hyperhive.claude` names cannot be run by a harness with
    `path` as PATH (None: this process's), or None when it can be found: what the
    harness will run, checked before any turn needs it."""
    try:
        claude = claude_path(value)
    except ValueError as e:
        return str(e)
    if claude is None:
        if shutil.which("claude", path=path) is None:
            return "its claude cannot be found: `claude` is not on the daemon's PATH"
        return None
    if not os.path.isfile(claude):
        return f"its claude cannot be found: {claude} does not exist"
    if not os.access(claude, os.X_OK):
        return f"its claude cannot be run: {claude} is not executable"
    return None


def notes_compact_bytes(value: object) -> int | None:
    """`hyperhive.notesCompactBytes`: null (the harness's default) or a positive integer."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(
            "hyperhive.notesCompactBytes must be a positive integer (bytes), "
            f"not {json.dumps(value)}"
        )
    return value


def allow_subagents(value: object) -> bool:
    """`hyperhive.allowSubagents`: whether claude may start sub-agents (`Agent`); null
    (an older policy.json) is false."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValueError(f"hyperhive.allowSubagents must be true or false, not {json.dumps(value)}")
    return value


def _mcp_servers(value: object) -> dict:
    if not isinstance(value, dict):
        raise InvalidPolicy("hyperhive.extraMcpServers must be an attribute set of servers")
    servers = {}
    for key, server in value.items():
        where = f"hyperhive.extraMcpServers.{key}"
        if not isinstance(server, dict) or not isinstance(server.get("command"), str):
            raise InvalidPolicy(f"{where} needs a `command` string")
        unknown = sorted(set(server) - {"command", "args", "env", "allowedTools"})
        if unknown:
            raise InvalidPolicy(f"unknown option {where}.{unknown[0]}")
        env = server.get("env", {})
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise InvalidPolicy(f"{where}.env must be an attribute set of strings")
        servers[key] = {
            "command": server["command"],
            "args": _str_list(f"extraMcpServers.{key}.args", server.get("args", []), False),
            "env": env,
            "allowedTools": _str_list(
                f"extraMcpServers.{key}.allowedTools", server.get("allowedTools", ["*"]), False
            ),
        }
    return servers


# Parsed policy files by path, each under the (device, inode, mtime, size) it was read at:
# the broker asks for the sender's policy on every send, and a stat is a fraction of the
# open/read/parse. A deploy replaces the file (os.replace: a new inode), so a stale entry
# is never used. A file changed in the last RACY_NS is not cached: a rewrite in place of
# the same size within the clock's tick (the kernel's file times are coarse, a few ms)
# keeps its mtime (as git's racily clean index entries). Bounded: cleared past MAX_CACHED.
_cache: dict[str, tuple[tuple[int, int, int, int], dict]] = {}
MAX_CACHED = 4096
RACY_NS = 2_000_000_000


def deployed_policy(home: Home, name: str) -> dict:
    """The policy the agent's deployed config declares; `{"allowedRecipients": None}`
    (unrestricted) when nothing is deployed. A policy file that cannot be read raises
    PolicyError: a caller must refuse rather than treat the agent as unrestricted.
    A new dict each call; its values (lists, dicts) are shared with the cache: read only."""
    # a string, as Home.is_agent: pathlib's joins cost more than the stat
    key = f"{os.fspath(home.root)}/agents/{check_agent_name(name)}/{POLICY_FILE}"
    try:
        st = os.stat(key)
    except FileNotFoundError:
        _cache.pop(key, None)
        return dict(DEFAULT_POLICY)
    except OSError as e:
        raise PolicyError(f"cannot read {name}'s deployed policy {key}: {e}") from e
    stamp = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    if (cached := _cache.get(key)) is not None and cached[0] == stamp:
        return dict(cached[1])
    try:
        with open(key, encoding="utf-8") as f:  # after the stat: never older than `stamp`
            text = f.read()
    except FileNotFoundError:
        return dict(DEFAULT_POLICY)
    except OSError as e:
        raise PolicyError(f"cannot read {name}'s deployed policy {key}: {e}") from e
    try:
        policy = json.loads(text)
    except ValueError as e:
        raise PolicyError(f"{name}'s deployed policy {key} is not JSON: {e}") from e
    if not isinstance(policy, dict):
        raise PolicyError(f"{name}'s deployed policy {key} is not a JSON object")
    policy = {**DEFAULT_POLICY, **policy}
    if time.time_ns() - st.st_mtime_ns < RACY_NS:
        _cache.pop(key, None)
    else:
        if len(_cache) >= MAX_CACHED:
            _cache.clear()
        _cache[key] = (stamp, policy)
    return dict(policy)

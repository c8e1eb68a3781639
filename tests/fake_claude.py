"""A fake `claude` CLI for the harness tests: it behaves like the real one (the pinned
2.1.328, tests/claude-cli/, whose events tests/test_claude_cli.py checks) where the
harness can tell.

It reads the real CLI's flags (`-p`, `--output-format stream-json` which needs
`--verbose`, `--mcp-config` (a file or inline JSON), `--strict-mcp-config`,
`--allowedTools`, `--disallowedTools`, `--permission-mode`, `--setting-sources`,
`--append-system-prompt`, `--model`, `--resume`), takes the prompt from the argument or
stdin, starts every MCP server of the config for real (MCP over stdio, by hand: initialize,
tools/list), and writes stream-json line by line, flushed: `system` init, `assistant`
text and `tool_use`, `user` tool_result, `system`/`permission_denied` for a refused call,
the compaction events (`system`/`status` with `compact_result`, `compact_boundary`), and
`result` with usage, the cumulative `total_cost_usd` of the session and the run's own
`model_usage_since_last_result`, `terminal_reason`, `api_error_status`,
`permission_denials`, duration and the session id. Sessions live in
`$FAKE_CLAUDE_HOME/sessions/`; an unknown `--resume` fails as the real CLI does. Every
run is appended to `$FAKE_CLAUDE_HOME/runs.jsonl` (argv, prompt, cwd, the `HYPERHIVE_*`
and `CLAUDE_*` environment, exit code, `started`: the unix time it began) for the tests
and bench/swarm.py to inspect.
With `FAKE_CLAUDE_MCP=lazy` the servers start only when the prompt calls a tool (tests
of the loop alone, where a second or two per run buys nothing).

What it does is driven by lines of the prompt:

- `fake: call <tool> <json>`      call the tool (`send` = the hyperhive server's, or
                                   `<server>.<tool>`) with those arguments; a tool the
                                   allow-list lacks is refused as the real CLI refuses it
- `fake: fail <code>`              fail with that exit code
- `fake: fail-once <token> <code>` fail only the first time the token is seen
- `fake: context-full`             the API's "prompt is too long", which the CLI answers by
                                   compacting by itself (`trigger: auto`), then goes on
- `fake: context-full-always`      "prompt is too long" and the CLI's own compaction
                                   fails: the run fails (`terminal_reason`
                                   `prompt_too_long`, `api_error_status` 400, exit 1)
- `fake: context-full-resumed`     as `context-full-always` whenever a session is resumed
- `fake: context-full-manual`      "prompt is too long" for a resumed session, with no
                                   compaction of the CLI's own (as with auto-compaction
                                   off), until a `/compact`
- `fake: sleep-once <token> <s>`  sleep that long, the first time the token is seen
- `fake: grow-notes <bytes>`       append that many bytes to ./notes.md
- `/compact` (the whole prompt)    compact the resumed session; with
                                   $FAKE_CLAUDE_SESSION_COMPACT `fail` it fails as the real
                                   one does: exit 0, no error, "Compaction failed · …"
                                   and `compact_result: failed`
- a `<notes>…</notes>` block       a notes compaction: answer with shortened notes, or
                                   fail when $FAKE_CLAUDE_COMPACT is `fail` (`empty`:
                                   answer nothing)
"""

import json
import os
import re
import sys
import time
import uuid
from contextlib import AsyncExitStack, suppress
from pathlib import Path

import anyio

STARTED = time.time()  # before any work: a turn's start, as the harness sees it (bench/swarm.py)

VARIADIC = {
    "--allowedTools",
    "--allowed-tools",
    "--disallowedTools",
    "--disallowed-tools",
    "--mcp-config",
}
VALUED = {
    "--output-format",
    "--append-system-prompt",
    "--model",
    "--resume",
    "--permission-mode",
    "--setting-sources",
}
FLAGS = {"-p", "--print", "--verbose", "--strict-mcp-config"}
# what the pinned CLI's init lists (less its scheduling, worktree and messaging tools)
BUILTIN_TOOLS = ["Task", "Bash", "Edit", "NotebookEdit", "Read", "WebFetch", "WebSearch", "Write"]
COST = 0.0123  # every run's own cost
COMPACT_FAILED = "Compaction failed · conversation could not be reduced below the context limit"

HOME = Path(os.environ.get("FAKE_CLAUDE_HOME") or Path.home() / ".fake-claude")
MODEL = "claude-fake-1"


def emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def parse(argv: list[str]) -> tuple[dict, list[str]]:
    opts: dict = {}
    positional = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if arg.startswith("--") and eq and name in VALUED:  # --setting-sources=
            opts[name] = value
        elif arg in FLAGS:
            opts[arg] = True
        elif arg in VALUED:
            if i + 1 >= len(argv):
                die(f"error: option '{arg}' argument missing")
            opts[arg] = argv[i + 1]
            i += 1
        elif arg in VARIADIC:
            values = []
            while i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                values.append(argv[i + 1])
                i += 1
            opts.setdefault(arg, []).extend(values)
        elif arg.startswith("-"):
            die(f"error: unknown option '{arg}'")
        else:
            positional.append(arg)
        i += 1
    return opts, positional


def die(message: str, code: int = 1) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    record(code)
    sys.exit(code)


RUN: dict = {}


def record(code: int) -> None:
    HOME.mkdir(parents=True, exist_ok=True)
    with (HOME / "runs.jsonl").open("a") as f:
        f.write(json.dumps({**RUN, "exit": code}) + "\n")


def session_file(sid: str) -> Path:
    return HOME / "sessions" / f"{sid}.json"


def load_session(sid: str | None) -> tuple[str, dict]:
    if sid is None:
        return str(uuid.uuid4()), {"turns": 0, "compacted": False, "cost": 0.0}
    path = session_file(sid)
    if not path.exists():
        die(f"No conversation found with session ID: {sid}")
    return sid, json.loads(path.read_text())


def save_session(sid: str, data: dict) -> None:
    session_file(sid).parent.mkdir(parents=True, exist_ok=True)
    session_file(sid).write_text(json.dumps(data))


def mcp_servers(configs: list[str]) -> dict:
    servers = {}
    for config in configs:
        text = config if config.lstrip().startswith("{") else Path(config).read_text()
        servers.update(json.loads(text).get("mcpServers", {}))
    return servers


def allowed(tool: str, allow: list[str]) -> bool:
    server = tool.split("__")[1] if tool.startswith("mcp__") else None
    return tool in allow or (server is not None and f"mcp__{server}__*" in allow)


def message(sid: str, content: list[dict], role: str = "assistant") -> dict:
    if role == "assistant":
        return {
            "type": "assistant",
            "message": {
                "id": f"msg_{uuid.uuid4().hex[:20]}",
                "type": "message",
                "role": "assistant",
                "model": MODEL,
                "content": content,
                "stop_reason": None,
                "usage": {"input_tokens": 10, "output_tokens": 5},
            },
            "parent_tool_use_id": None,
            "session_id": sid,
            "uuid": str(uuid.uuid4()),
        }
    return {
        "type": "user",
        "message": {"role": "user", "content": content},
        "parent_tool_use_id": None,
        "session_id": sid,
        "uuid": str(uuid.uuid4()),
    }


DENIALS: list[dict] = []  # this run's, for its result


def result(
    sid: str,
    started: float,
    text: str,
    error: bool = False,
    turns: int = 1,
    subtype: str | None = None,
    terminal: str | None = None,
    status: int | None = None,
    cost: float = COST,
) -> dict:
    """The result event; `cost` is the run's own, added to the session's total."""
    data = json.loads(session_file(sid).read_text()) if session_file(sid).exists() else {}
    total = data.get("cost", 0.0) + cost
    if data:
        save_session(sid, {**data, "cost": total})
    usage = {"inputTokens": 120, "outputTokens": 34, "costUSD": cost}
    return {
        "type": "result",
        "subtype": subtype or ("success" if not error else "error_during_execution"),
        "is_error": error,
        "duration_ms": int((time.monotonic() - started) * 1000),
        "duration_api_ms": 42,
        "num_turns": turns,
        "result": text,
        "stop_reason": None if error else "end_turn",
        "session_id": sid,
        "total_cost_usd": round(total, 6),  # cumulative over the session, as the CLI's
        "usage": {
            "input_tokens": 120,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 34,
        },
        "modelUsage": {MODEL: {**usage, "costUSD": round(total, 6)}},
        "model_usage_since_last_result": {MODEL: usage} if cost else {},
        "permission_denials": list(DENIALS),
        "terminal_reason": (terminal or None)
        if terminal is not None
        else (None if error else "completed"),
        "api_error_status": status,
        "uuid": str(uuid.uuid4()),
    }


def system(sid: str, subtype: str, **fields) -> dict:
    return {"type": "system", "subtype": subtype, **fields, "session_id": sid,
            "uuid": str(uuid.uuid4())}  # fmt: skip


def compaction(sid: str, ok: bool, trigger: str) -> None:
    """The events of a compaction, as the CLI writes them."""
    emit(system(sid, "status", status="compacting"))
    if ok:
        emit(system(sid, "status", status=None, compact_result="success"))
        meta = {"trigger": trigger, "pre_tokens": 190000, "post_tokens": 4000}
        emit(system(sid, "compact_boundary", compact_metadata=meta))
    else:
        emit(
            system(
                sid, "status", status=None, compact_result="failed", compact_error=COMPACT_FAILED
            )
        )


def too_long(sid: str, started: float) -> dict:
    """The result of a run the API refused as too long, after the CLI's own compaction
    failed: a `success` subtype that is an error."""
    emit(message(sid, [{"type": "text", "text": "Prompt is too long"}]))
    return result(sid, started, "Prompt is too long", error=True, subtype="success",
                  terminal="prompt_too_long", status=400, cost=0.0)  # fmt: skip


class StdioServer:
    """One MCP server over stdio, spoken to as the CLI speaks to it: JSON-RPC 2.0, a
    message a line (initialize, notifications/initialized, tools/list, tools/call). By
    hand, as tests/echo_mcp.py serves: importing the `mcp` package's client cost 1.8 s of
    CPU per run, and a run starts its servers each time. The package's own client checks
    `hyperhive mcp` in tests/support/mcp.py; the real CLI, in tests/test_claude_cli.py."""

    MAX_LINE = 16 << 20

    def __init__(self, process: "anyio.abc.Process"):
        from anyio.streams.buffered import BufferedByteReceiveStream

        self.process = process
        self.out = BufferedByteReceiveStream(process.stdout)
        self.last_id = 0

    async def send(self, message: dict) -> None:
        await self.process.stdin.send(json.dumps({"jsonrpc": "2.0", **message}).encode() + b"\n")

    async def request(self, method: str, params: dict) -> dict:
        """The result of a request; a JSON-RPC error raises. Whatever else the server
        writes meanwhile (notifications, its own requests) is passed over."""
        self.last_id += 1
        await self.send({"id": self.last_id, "method": method, "params": params})
        while True:
            line = await self.out.receive_until(b"\n", self.MAX_LINE)
            message = json.loads(line)
            if message.get("id") != self.last_id or "method" in message:
                continue
            if "error" in message:
                raise RuntimeError(f"{method}: {message['error']}")
            return message["result"]

    async def initialize(self) -> list[str]:
        """The handshake, then the names of the server's tools (every page)."""
        await self.request(
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "claude-code", "version": VERSION},
            },
        )
        await self.send({"method": "notifications/initialized"})
        tools, cursor = [], None
        while True:
            listed = await self.request("tools/list", {"cursor": cursor} if cursor else {})
            tools += [t["name"] for t in listed.get("tools", [])]
            if not (cursor := listed.get("nextCursor")):
                return tools

    async def call_tool(self, name: str, arguments: dict) -> tuple[str, bool]:
        """A tool's text blocks, joined, and whether it said it failed."""
        called = await self.request("tools/call", {"name": name, "arguments": arguments})
        text = "".join(b.get("text", "") for b in called.get("content", []))
        return text, bool(called.get("isError"))

    async def aclose(self) -> None:
        """Its stdin closed, as the CLI ends a server: a moment to exit, then killed."""
        with suppress(Exception):
            await self.process.stdin.aclose()
        with anyio.move_on_after(2):
            await self.process.wait()
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def start_servers(stack: AsyncExitStack, servers: dict) -> tuple[dict, list[dict]]:
    """Start each server for real; (key → (server, tool names)), init statuses."""
    sessions, statuses = {}, []
    for key, spec in servers.items():
        server = None
        try:
            process = await anyio.open_process(
                [spec["command"], *spec.get("args", [])],
                env={**os.environ, **spec.get("env", {})},
                stderr=None,  # the server's log goes where the CLI's does
            )
            server = StdioServer(process)
            with anyio.fail_after(30):
                tools = await server.initialize()
        except Exception as e:  # the real CLI goes on without a failed server
            sys.stderr.write(f"MCP server {key} failed to start: {e!r}\n")
            statuses.append({"name": key, "status": "failed"})
            if server is not None:
                with suppress(Exception):
                    await server.aclose()
            continue
        stack.push_async_callback(server.aclose)
        sessions[key] = (server, tools)
        statuses.append({"name": key, "status": "connected"})
    return sessions, statuses


async def turn(opts: dict, prompt: str) -> int:
    started = time.monotonic()
    sid, data = load_session(opts.get("--resume"))
    RUN["session"] = sid
    allow = opts.get("--allowedTools", []) + opts.get("--allowed-tools", [])
    deny = opts.get("--disallowedTools", []) + opts.get("--disallowed-tools", [])
    mode = opts.get("--permission-mode", "default")
    directives = re.findall(r"^fake: (\S+) ?(.*)$", prompt, re.MULTILINE)
    servers = mcp_servers(opts.get("--mcp-config", []))
    if os.environ.get("FAKE_CLAUDE_MCP") == "lazy" and not any(v == "call" for v, _ in directives):
        servers = {}  # a test of the loop alone: spare the servers' start-up
    async with AsyncExitStack() as stack:
        sessions, statuses = await start_servers(stack, servers)
        builtin = [t for t in BUILTIN_TOOLS if not (t == "Task" and "Agent" in deny)]
        tools = builtin + [f"mcp__{k}__{t}" for k, (_, ts) in sessions.items() for t in ts]
        if prompt.strip() == "/compact" and opts.get("--resume"):
            # the real CLI compacts before its init
            ok = os.environ.get("FAKE_CLAUDE_SESSION_COMPACT") != "fail"
            compaction(sid, ok, "manual")
        emit(
            system(
                sid,
                "init",
                cwd=os.getcwd(),
                tools=tools,
                mcp_servers=statuses,
                model=opts.get("--model") or MODEL,
                permissionMode=mode,
                apiKeySource="none",
                claude_code_version="2.1.328",
            )
        )
        data["turns"] += 1
        save_session(sid, data)

        if prompt.strip() == "/compact":
            if not opts.get("--resume"):
                emit(message(sid, [{"type": "text", "text": "Error: No messages to compact"}]))
                emit(result(sid, started, "", turns=0, terminal="", cost=0.0))
                return 0
            if os.environ.get("FAKE_CLAUDE_SESSION_COMPACT") == "fail":
                emit(message(sid, [{"type": "text", "text": COMPACT_FAILED}]))
                emit(result(sid, started, COMPACT_FAILED, turns=0, terminal="", cost=0.0))
                return 0
            data["compacted"] = True
            save_session(sid, data)
            emit(result(sid, started, "", turns=0, terminal=""))
            return 0

        notes = re.search(r"<notes>\n(.*)\n</notes>", prompt, re.DOTALL)
        if notes:
            mode = os.environ.get("FAKE_CLAUDE_COMPACT", "ok")
            if mode == "fail":
                emit(result(sid, started, "API Error: overloaded", error=True))
                return 1
            lines = notes.group(1).splitlines()
            short = "" if mode == "empty" else "# compacted\n" + "\n".join(dict.fromkeys(lines))
            emit(message(sid, [{"type": "text", "text": short}]))
            emit(result(sid, started, short))
            return 0

        emit(message(sid, [{"type": "text", "text": f"Working on {len(directives)} things."}]))
        n = 0
        for verb, rest in directives:
            resumed = bool(opts.get("--resume"))
            if verb == "context-full" and not data["compacted"]:
                compaction(sid, True, "auto")  # the CLI's own, and it goes on
                data["compacted"] = True
                save_session(sid, data)
            if verb == "context-full-always" or (verb == "context-full-resumed" and resumed):
                compaction(sid, False, "auto")
                emit(too_long(sid, started))
                return 1
            if verb == "context-full-manual" and resumed and not data["compacted"]:
                emit(too_long(sid, started))
                return 1
            if verb == "fail":
                emit(result(sid, started, f"failing with {rest}", error=True))
                return int(rest)
            if verb == "fail-once":
                token, code = rest.split()
                marker = HOME / f"once-{token}"
                if not marker.exists():
                    marker.write_text("")
                    emit(result(sid, started, f"failing once with {code}", error=True))
                    return int(code)
            if verb == "sleep-once":
                token, seconds = rest.split()
                marker = HOME / f"once-{token}"
                if not marker.exists():
                    marker.write_text("")
                    await anyio.sleep(float(seconds))
            if verb == "grow-notes":
                with open("notes.md", "a") as f:
                    f.write("x" * int(rest))
            if verb == "call":
                target, _, args = rest.partition(" ")
                server, _, tool = target.rpartition(".")
                server = server or "hyperhive"
                name = f"mcp__{server}__{tool}"
                n += 1
                use_id = f"toolu_{n:04d}"
                arguments = json.loads(args or "{}")
                emit(
                    message(
                        sid,
                        [{"type": "tool_use", "id": use_id, "name": name, "input": arguments}],
                    )
                )
                if not allowed(name, allow) or name in deny:
                    text, is_error = (
                        (
                            f"Permission to use {name} has been denied because Claude Code "
                            "is running in don't ask mode."
                        )
                        if mode == "dontAsk"
                        else f"Claude requested permissions to use {name}, but you haven't "
                        "granted it yet.",
                        True,
                    )
                    emit(system(sid, "permission_denied", tool_name=name, tool_use_id=use_id,
                                message=text))  # fmt: skip
                    DENIALS.append(
                        {"tool_name": name, "tool_use_id": use_id, "tool_input": arguments}
                    )
                elif server not in sessions:
                    text, is_error = f"No such tool available: {name}", True
                else:
                    text, is_error = await sessions[server][0].call_tool(tool, arguments)
                block = {
                    "tool_use_id": use_id,
                    "type": "tool_result",
                    "content": [{"type": "text", "text": text}],
                    "is_error": is_error,
                }
                emit(message(sid, [block], role="user"))
        emit(message(sid, [{"type": "text", "text": "Done."}]))
        emit(result(sid, started, "Done.", turns=1 + n))
        return 0


# What `--version` answers (the real CLI: "2.1.3 (Claude Code)"); tests of the harness's
# version check set $FAKE_CLAUDE_VERSION.
VERSION = "2.1.328"


def main() -> int:
    if sys.argv[1:] == ["--version"]:
        print(f"{os.environ.get('FAKE_CLAUDE_VERSION', VERSION)} (Claude Code)")
        return 0
    opts, positional = parse(sys.argv[1:])
    prompt = " ".join(positional) if positional else sys.stdin.read()
    hive_env = {
        k: v
        for k, v in os.environ.items()
        if k.startswith(("HYPERHIVE_", "CLAUDE_")) or k == "ENABLE_TOOL_SEARCH"
    }
    RUN.update(argv=sys.argv[1:], prompt=prompt, cwd=os.getcwd(), env=hive_env, started=STARTED)
    if not (opts.get("-p") or opts.get("--print")):
        die("this fake claude only runs with -p")
    if opts.get("--output-format") == "stream-json" and not opts.get("--verbose"):
        die("Error: When using --print, --output-format=stream-json requires --verbose")
    if not prompt.strip():
        die("Error: Input must be provided either through stdin or as a prompt argument")
    try:
        code = anyio.run(turn, opts, prompt)
    except Exception:
        record(70)
        raise
    record(code)
    return code


if __name__ == "__main__":
    sys.exit(main())

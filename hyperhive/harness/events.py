"""Reading `claude --output-format stream-json --verbose` as it arrives, one event a line.

The events, as the pinned CLI (tests/claude-cli/) writes them:

- `system`/`init`: session id, model, `tools`, MCP servers and their status. A run may
  hold more than one (a background task's).
- `assistant` (a message whose content holds `text` and `tool_use` blocks) and `user`
  (the `tool_result` blocks answering them); with a `parent_tool_use_id` they are a
  sub-agent's, not the agent's own, and are counted apart.
- `system`/`permission_denied` (`tool_name`, `tool_use_id`, `message`): a call the
  permission rules refused. The result's `permission_denials` lists them again.
- `system`/`status` with `compact_result` (`success` or `failed`, then `compact_error`)
  and `system`/`compact_boundary` (`compact_metadata.trigger`: `auto` when the CLI
  compacted by itself after a "prompt is too long", `manual` for `/compact`).
- `result`: `is_error`, `result` text, `terminal_reason` (`completed`,
  `prompt_too_long`, …), `api_error_status`, `total_cost_usd` (cumulative over a resumed
  session), `model_usage_since_last_result` (per model, `costUSD` since the previous
  result: the run's own cost), `permission_denials`, `session_id`. A run with a
  background task may end with a second one.

`Run` folds them into what the harness logs and reports.
"""

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field

from hyperhive.names import MANAGER, OPERATOR, SYSTEM

log = logging.getLogger("hyperhive.harness")

SEND = "mcp__hyperhive__send"
RECV = "mcp__hyperhive__recv"
# How Claude Code (and the API under it) says the conversation no longer fits.
CONTEXT_FULL_RE = re.compile(
    r"prompt is too long|context (window|length|limit)|exceeds? the (maximum )?context|"
    r"input length and `?max_tokens`? exceed",
    re.IGNORECASE,
)
NO_SESSION_RE = re.compile(r"no conversation found", re.IGNORECASE)
SHOWN = 300  # characters of a text or tool input shown in the log


def party_class(name: object) -> str:
    """The class of a sender or recipient for telemetry."""
    if name in (OPERATOR, MANAGER, SYSTEM):
        return name
    return "peer"


def short(value: object, limit: int = SHOWN) -> str:
    """One line of at most `limit` characters for the log."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _result_text(content: object) -> str:
    """The text of a tool_result's content: a string or a list of text blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


@dataclass
class Run:
    """One `claude` process, folded from its events."""

    session_id: str | None = None
    sent: Counter = field(default_factory=Counter)  # successful sends by recipient class
    received: Counter = field(default_factory=Counter)  # messages its own recv calls got
    result: dict | None = None  # the last result event
    results: list[dict] = field(default_factory=list)
    inits: list[dict] = field(default_factory=list)
    other: list[str] = field(default_factory=list)  # lines that were not events (stderr)
    uses: dict[str, tuple[str, dict, bool]] = field(default_factory=dict)  # id → call
    calls: dict[str, tuple[str, dict]] = field(default_factory=dict)  # awaiting a result
    denied: dict[str, str] = field(default_factory=dict)  # tool_use id (or #n) → tool
    compactions: list[dict] = field(default_factory=list)  # {"trigger", "ok", "error"}
    lingered: bool = False  # it did not exit after its result: the harness stopped it

    def feed(self, line: str) -> None:
        """Take one output line: an event is folded in and logged, anything else kept."""
        line = line.rstrip("\n")
        if not line.strip():
            return
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict) or "type" not in event:
            self.other = [*self.other[-49:], line]
            log.info("claude: %s", short(line))
            return
        kind = event["type"]
        sub = bool(event.get("parent_tool_use_id"))
        if self.session_id is None and not sub:  # the agent's session: the first it names
            self.session_id = event.get("session_id")
        subtype = event.get("subtype")
        if kind == "system" and subtype == "init":
            self._init(event)
        elif kind == "system" and subtype == "permission_denied":
            self._denied(event.get("tool_use_id"), event.get("tool_name"), event.get("message"))
        elif kind == "system" and event.get("compact_result"):
            self._compact_result(event)
        elif kind == "system" and subtype == "compact_boundary":
            self._compact_boundary(event)
        elif kind == "assistant":
            self._assistant(event.get("message") or {}, sub)
        elif kind == "user":
            self._user(event.get("message") or {}, sub)
        elif kind == "result":
            self.result = event
            self.results.append(event)
            for d in event.get("permission_denials") or []:
                if isinstance(d, dict):
                    self._denied(d.get("tool_use_id"), d.get("tool_name"), None)
            self._log_result(event)

    def _init(self, event: dict) -> None:
        self.inits.append(event)
        servers = event.get("mcp_servers") or []
        status = ", ".join(f"{s.get('name')} {s.get('status')}" for s in servers)
        log.info(
            "session %s, model %s, permissions %s; MCP: %s",
            event.get("session_id"),
            event.get("model"),
            event.get("permissionMode"),
            status,
        )
        for s in servers:
            if s.get("status") != "connected":
                log.warning("MCP server %s is %s", s.get("name"), s.get("status"))

    def _denied(self, use_id: object, tool: object, message: object) -> None:
        key = str(use_id) if use_id else f"#{len(self.denied)}"
        if key in self.denied:
            return
        self.denied[key] = str(tool or self.uses.get(key, ("?",))[0])
        if message:
            log.warning("denied %s: %s", self.denied[key], short(message))

    def _compact_result(self, event: dict) -> None:
        ok = event.get("compact_result") == "success"
        self.compactions.append({"trigger": None, "ok": ok, "error": event.get("compact_error")})
        if ok:
            log.info("claude compacted the conversation")
        else:
            log.warning("claude could not compact the conversation: %s", event.get("compact_error"))

    def _compact_boundary(self, event: dict) -> None:
        trigger = (event.get("compact_metadata") or {}).get("trigger")
        if self.compactions and self.compactions[-1]["trigger"] is None:
            self.compactions[-1]["trigger"] = trigger
        else:
            self.compactions.append({"trigger": trigger, "ok": True, "error": None})
        log.info("compacted (%s)", trigger)

    def _assistant(self, message: dict, sub: bool) -> None:
        who = "sub-agent" if sub else "assistant"
        for block in message.get("content") or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                log.info("%s: %s", who, short(block.get("text", "")))
            elif block.get("type") == "tool_use":
                name = str(block.get("name") or "?")
                args = block.get("input") if isinstance(block.get("input"), dict) else {}
                use_id = str(block.get("id"))
                self.uses[use_id] = (name, args, sub)
                self.calls[use_id] = (name, args)
                log.info("%s %s %s", "sub-agent tool" if sub else "tool", name, short(args))

    def _user(self, message: dict, sub: bool) -> None:
        content = message.get("content")
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict) or block.get("type") != "tool_result":
                continue
            name, args = self.calls.pop(str(block.get("tool_use_id")), ("?", {}))
            text = _result_text(block.get("content"))
            failed = bool(block.get("is_error"))
            log.info("%s %s: %s", "failed" if failed else "done", name, short(text))
            if failed:
                continue
            if name == SEND:
                self.sent[party_class(args.get("to"))] += 1
            elif name == RECV:
                self._count_received(text)

    def _count_received(self, text: str) -> None:
        try:
            messages = json.loads(text).get("messages", [])
        except (ValueError, AttributeError):
            return
        for m in messages if isinstance(messages, list) else []:
            if isinstance(m, dict):
                self.received[party_class(m.get("from"))] += 1

    def _log_result(self, event: dict) -> None:
        usage = event.get("usage") or {}
        log.info(
            "claude %s: %s in %.1f s, %s turns, cost $%s (session $%s), tokens in %s / out %s",
            "failed" if event.get("is_error") else "done",
            event.get("terminal_reason") or event.get("subtype"),
            (event.get("duration_ms") or 0) / 1000,
            event.get("num_turns"),
            _since_last(event),
            event.get("total_cost_usd"),
            usage.get("input_tokens"),
            usage.get("output_tokens"),
        )
        if event.get("is_error"):
            log.warning("claude: %s", self.failure_reason())

    # -- what the run came to -------------------------------------------------------------

    @property
    def tools(self) -> Counter:
        """The agent's own tool calls by name; a call the permissions denied is none."""
        return Counter(
            name for i, (name, _, sub) in self.uses.items() if not sub and i not in self.denied
        )

    @property
    def subagent_tools(self) -> Counter:
        return Counter(
            name for i, (name, _, sub) in self.uses.items() if sub and i not in self.denied
        )

    @property
    def denials(self) -> Counter:
        """Calls the permission rules refused, by tool."""
        return Counter(self.denied.values())

    def succeeded(self, exit_code: int) -> bool:
        ended = exit_code == 0 or self.lingered  # stopped after its result: done all the same
        return ended and self.result is not None and not self.result.get("is_error")

    def error_text(self) -> str:
        """What the run said about its failure: the result text, else other output."""
        said = self.result.get("result") if self.result else None
        return str(said) if said else " / ".join(self.other[-5:])

    def failure_reason(self) -> str:
        """One line: the terminal reason, the API's status and what the run said."""
        r = self.result or {}
        parts = []
        if r.get("terminal_reason") and r.get("terminal_reason") != "completed":
            parts.append(str(r["terminal_reason"]))
        elif r.get("subtype") and r.get("subtype") != "success":
            parts.append(str(r["subtype"]))
        if r.get("api_error_status"):
            parts.append(f"API {r['api_error_status']}")
        text = self.error_text()
        return ": ".join(p for p in [", ".join(parts), short(text, 500)] if p) or "no result"

    def context_full(self) -> bool:
        if (self.result or {}).get("terminal_reason") == "prompt_too_long":
            return True
        return bool(CONTEXT_FULL_RE.search(self.error_text()))

    def no_session(self) -> bool:
        """The session it was told to resume does not exist (any more)."""
        return bool(NO_SESSION_RE.search(self.error_text()))

    def auto_compacted(self) -> bool:
        """The CLI compacted the conversation by itself in this run."""
        return any(c["ok"] and c["trigger"] == "auto" for c in self.compactions)

    def compacted(self) -> bool | None:
        """Whether this run's compaction (a `/compact`) worked; None: it tried none."""
        if not self.compactions:
            return None
        return all(c["ok"] for c in self.compactions)

    def cost(self, session_before: float | None = None) -> float | None:
        """What this run cost: each result's `model_usage_since_last_result`, else the
        growth of the cumulative `total_cost_usd` over `session_before` (what the
        resumed session had cost), else the total of a run that resumed nothing."""
        total = None
        for r in self.results:
            since = _since_last(r)
            if since is None:
                cumulative = r.get("total_cost_usd")
                if not isinstance(cumulative, int | float) or cumulative < 0:
                    continue
                since = max(0.0, cumulative - (session_before or 0.0))
                session_before = cumulative
            total = (total or 0.0) + since
        return total

    def session_cost(self) -> float | None:
        """The session's cumulative cost after this run, as the CLI counts it."""
        value = self.result.get("total_cost_usd") if self.result else None
        return float(value) if isinstance(value, int | float) and value >= 0 else None


def _since_last(result: dict) -> float | None:
    usage = result.get("model_usage_since_last_result")
    if not isinstance(usage, dict):
        return None
    costs = [u.get("costUSD") for u in usage.values() if isinstance(u, dict)]
    return float(sum(c for c in costs if isinstance(c, int | float) and c >= 0))

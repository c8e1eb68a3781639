"""Reading `claude --output-format stream-json --verbose` as it arrives, one event a line.

The events (Claude Code's headless format): `system`/`init` (session id, model, MCP
servers and their status), `assistant` (a message whose content holds `text` and
`tool_use` blocks), `user` (the `tool_result` blocks answering them), and the final
`result` (`is_error`, `result` text, `duration_ms`, `total_cost_usd`, `usage`,
`session_id`). `Run` folds them into what the harness logs and reports.
"""

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field

from hyperhive.broker.messages import MANAGER, OPERATOR, SYSTEM

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
    tools: Counter = field(default_factory=Counter)  # tool_use by tool name
    sent: Counter = field(default_factory=Counter)  # successful sends by recipient class
    received: Counter = field(default_factory=Counter)  # messages its own recv calls got
    result: dict | None = None
    other: list[str] = field(default_factory=list)  # lines that were not events (stderr)
    calls: dict[str, tuple[str, dict]] = field(default_factory=dict)  # tool_use id → call
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
        self.session_id = event.get("session_id") or self.session_id
        kind = event["type"]
        if kind == "system" and event.get("subtype") == "init":
            self._init(event)
        elif kind == "assistant":
            self._assistant(event.get("message") or {})
        elif kind == "user":
            self._user(event.get("message") or {})
        elif kind == "result":
            self.result = event
            self._log_result(event)

    def _init(self, event: dict) -> None:
        servers = event.get("mcp_servers") or []
        status = ", ".join(f"{s.get('name')} {s.get('status')}" for s in servers)
        log.info("session %s, model %s; MCP: %s", self.session_id, event.get("model"), status)
        for s in servers:
            if s.get("status") != "connected":
                log.warning("MCP server %s is %s", s.get("name"), s.get("status"))

    def _assistant(self, message: dict) -> None:
        for block in message.get("content") or []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                log.info("assistant: %s", short(block.get("text", "")))
            elif block.get("type") == "tool_use":
                name = str(block.get("name") or "?")
                args = block.get("input") if isinstance(block.get("input"), dict) else {}
                self.tools[name] += 1
                self.calls[str(block.get("id"))] = (name, args)
                log.info("tool %s %s", name, short(args))

    def _user(self, message: dict) -> None:
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
            "claude %s: %s in %.1f s, %s turns, cost $%s, tokens in %s / out %s",
            "failed" if event.get("is_error") else "done",
            event.get("subtype"),
            (event.get("duration_ms") or 0) / 1000,
            event.get("num_turns"),
            event.get("total_cost_usd"),
            usage.get("input_tokens"),
            usage.get("output_tokens"),
        )
        if event.get("is_error"):
            log.warning("claude: %s", short(event.get("result", "")))

    # -- what the run came to -------------------------------------------------------------

    def succeeded(self, exit_code: int) -> bool:
        ended = exit_code == 0 or self.lingered  # stopped after its result: done all the same
        return ended and self.result is not None and not self.result.get("is_error")

    def error_text(self) -> str:
        """What the run said about its failure: the result text, else other output."""
        said = self.result.get("result") if self.result else None
        return str(said) if said else " / ".join(self.other[-5:])

    def context_full(self) -> bool:
        return bool(CONTEXT_FULL_RE.search(self.error_text()))

    def no_session(self) -> bool:
        """The session it was told to resume does not exist (any more)."""
        return bool(NO_SESSION_RE.search(self.error_text()))

    def cost(self) -> float | None:
        value = self.result.get("total_cost_usd") if self.result else None
        return float(value) if isinstance(value, int | float) and value >= 0 else None

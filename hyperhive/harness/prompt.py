"""The words of a turn: the system prompt appended to Claude Code's own (the agent's or the
manager's prompt, the extra-tools note, the notes) and the prompt built from the messages."""

import time
from pathlib import Path

from hyperhive.resources import PROMPTS_DIR

# The notes ride in an argument (--append-system-prompt); Linux caps one at 128 KiB.
MAX_NOTES_IN_PROMPT = 64 * 1024

EXTRAS_NOTE = (
    "Extra MCP tools: besides the hyperhive tools you have the MCP servers {servers}. "
    "Their tools appear as `mcp__<server>__<tool>` (only some agents have extra servers). "
    "They are declared in your `agent.nix` (`hyperhive.extraMcpServers`): ask the manager "
    "if you need one changed."
)


def role_prompt(role: str) -> str:
    return (PROMPTS_DIR / ("manager.md" if role == "manager" else "agent.md")).read_text()


def notes_section(notes: str, notes_path: Path) -> str:
    head = f"## Your notes\n\nYour durable notes file is `{notes_path}`. "
    if not notes.strip():
        return head + "It is empty so far."
    if len(notes.encode()) > MAX_NOTES_IN_PROMPT:
        cut = notes.encode()[:MAX_NOTES_IN_PROMPT].decode(errors="ignore")
        return (
            head + f"It is too long to show whole; its first {MAX_NOTES_IN_PROMPT} bytes "
            "follow, read the file for the rest.\n\n" + cut
        )
    return head + "As of the start of this turn it reads:\n\n" + notes


def system_prompt(role: str, notes: str, notes_path: Path, extra_servers: list[str]) -> str:
    parts = [role_prompt(role).rstrip()]
    if extra_servers:
        parts.append(EXTRAS_NOTE.format(servers=", ".join(f"`{s}`" for s in extra_servers)))
    parts.append(notes_section(notes, notes_path))
    return "\n\n".join(parts) + "\n"


def _when(ts: object) -> str:
    if not isinstance(ts, int | float):
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def turn_prompt(messages: list[dict], retried: set[int] | frozenset = frozenset()) -> str:
    """The turn's prompt: every message with its id, sender and time, oldest first.
    `retried`: ids handed over before, in a turn that failed or was cut short."""
    count = f"{len(messages)} new message" + ("s" if len(messages) != 1 else "")
    lines = [
        f"You have {count} in your hyperhive inbox (already taken from it: `recv` will "
        "not return them again). Act on them; reply with `send` where a reply is due.",
    ]
    for m in messages:
        again = (
            " (handed to you before, in a turn that did not finish)"
            if m.get("id") in retried
            else ""
        )
        lines += [
            "",
            f"--- message #{m.get('id')} from {m.get('from')} at {_when(m.get('time'))}{again}",
            str(m.get("body", "")),
        ]
    return "\n".join(lines) + "\n"

"""The one validator for agent names and `NAME#ID` targets.

Every path built from a user-supplied name goes through `check_agent_name` first.
"""

import re

from hyperhive.errors import InvalidName

AGENT_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,30}")
AGENT_NAME_PATTERN = "^[a-z][a-z0-9-]{0,30}$"


def check_agent_name(name: str) -> str:
    if not isinstance(name, str) or not AGENT_NAME_RE.fullmatch(name):
        raise InvalidName(f"invalid agent name {name!r}: must match {AGENT_NAME_PATTERN}")
    return name


def parse_target(text: str) -> tuple[str, int]:
    """Split `NAME#ID` into a checked name and a positive integer id."""
    name, sep, raw_id = text.partition("#")
    if not sep or not raw_id.isdigit() or int(raw_id) < 1:
        raise InvalidName(f"invalid approval {text!r}: expected NAME#ID, e.g. manager#3")
    return check_agent_name(name), int(raw_id)


def format_target(name: str, approval_id: int) -> str:
    return f"{name}#{approval_id}"

"""The one validator for agent names and `NAME#ID` targets.

Every path built from a user-supplied name goes through `check_agent_name` first.
"""

import re

from hyperhive.errors import InvalidName

AGENT_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,30}")
AGENT_NAME_PATTERN = "^[a-z][a-z0-9-]{0,30}$"
# The parties every hive has, named once. The manager is an agent; `operator` (the human)
# and `system` (the hive's own notices, never a recipient) match the pattern but no agent
# may take them. ENGINE signs what the hive itself writes (meta commits, build tags).
MANAGER = "manager"
OPERATOR = "operator"
SYSTEM = "system"
ENGINE = "hyperhive"
# The operator account a hive starts with (and an old operator.json becomes): here, not in
# operator.py, so the CLI's `--account` default costs no import of the accounts' code.
DEFAULT_ACCOUNT = "operator"
RESERVED_NAMES = (OPERATOR, SYSTEM)


def check_agent_name(name: str) -> str:
    if not isinstance(name, str) or not AGENT_NAME_RE.fullmatch(name):
        raise InvalidName(f"invalid agent name {name!r}: must match {AGENT_NAME_PATTERN}")
    return name


def check_new_agent_name(name: str) -> str:
    """A name a new agent may take: valid and not reserved."""
    if check_agent_name(name) in RESERVED_NAMES:
        raise InvalidName(f"{name!r} is reserved for the broker's non-agent senders: pick another")
    return name


def parse_target(text: str) -> tuple[str, int]:
    """Split `NAME#ID` into a checked name and a positive integer id."""
    name, sep, raw_id = text.partition("#")
    if not sep or not raw_id.isdigit() or int(raw_id) < 1:
        raise InvalidName(f"invalid approval {text!r}: expected NAME#ID, e.g. manager#3")
    return check_agent_name(name), int(raw_id)


def format_target(name: str, approval_id: int) -> str:
    return f"{name}#{approval_id}"

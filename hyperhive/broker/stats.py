"""Telemetry rows in `hive.db`: `stats (agent, ts, key, value)`.

The harness reports every turn (`turn_report` on its agent socket); `turn_rows` checks
the report and turns it into rows, one per series, all at the turn's end time. Hive-wide
series use the agent `""`. Counts per class (tools, recipients) become one key each
(`tool.<name>`, `sent.<class>`), so every series is a plain number over time.
"""

import math
import time

from hyperhive.broker.db import connect, migrate
from hyperhive.errors import BadInput
from hyperhive.home import Home

EXIT_CLASSES = ("ok", "compact-retry", "failure")
RECIPIENT_CLASSES = ("peer", "operator", "manager", "system")
MAX_TOOL_NAME = 200


def _number(report: dict, key: str) -> float:
    value = report.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadInput(f"turn report: `{key}` must be a number, not {value!r}")
    if value < 0:
        raise BadInput(f"turn report: `{key}` must be 0 or more, not {value!r}")
    return float(value)


def _counts(report: dict, key: str, allowed: tuple[str, ...] | None) -> dict[str, float]:
    value = report.get(key, {})
    if not isinstance(value, dict):
        raise BadInput(f"turn report: `{key}` must be an object of counts, not {value!r}")
    for name in value:
        if allowed is not None and name not in allowed:
            raise BadInput(f"turn report: `{key}` has unknown class {name!r} (known: {allowed})")
        if not name or len(name) > MAX_TOOL_NAME:
            raise BadInput(f"turn report: `{key}` has a bad name {name!r}")
    return {name: _number(value, name) for name in value}


def turn_rows(report: dict) -> list[tuple[str, float]]:
    """The rows of one turn report; BadInput names what is wrong with it."""
    if not isinstance(report, dict):
        raise BadInput(f"a turn report is an object, not {report!r}")
    exit_class = report.get("exit")
    if exit_class not in EXIT_CLASSES:
        raise BadInput(f"turn report: `exit` must be one of {EXIT_CLASSES}, not {exit_class!r}")
    tools = _counts(report, "tools", None)
    sent = _counts(report, "sent", RECIPIENT_CLASSES)
    received = _counts(report, "received", RECIPIENT_CLASSES)
    rows = [
        ("turn", 1.0),
        ("turn.duration", _number(report, "duration")),
        (f"turn.exit.{exit_class}", 1.0),
        ("turn.tool_calls", sum(tools.values())),
        ("turn.sent", sum(sent.values())),
        ("turn.received", sum(received.values())),
        ("inbox.depth", _number(report, "inbox_depth")),
        ("notes.bytes", _number(report, "notes_bytes")),
    ]
    if "cost_usd" in report:
        rows.append(("turn.cost_usd", _number(report, "cost_usd")))
    rows += [(f"tool.{name}", n) for name, n in sorted(tools.items())]
    rows += [(f"sent.{cls}", n) for cls, n in sorted(sent.items())]
    rows += [(f"received.{cls}", n) for cls, n in sorted(received.items())]
    return rows


class Stats:
    def __init__(self, home: Home):
        self.home = home
        migrate(home)

    def record(self, agent: str, rows: list[tuple[str, float]], ts: float | None = None) -> None:
        """Store rows for one moment in one transaction."""
        at = time.time() if ts is None else ts
        conn = connect(self.home)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO stats (agent, ts, key, value) VALUES (?, ?, ?, ?)",
                [(agent, at, key, value) for key, value in rows],
            )
            conn.execute("COMMIT")
        finally:
            conn.close()

    def record_turn(self, agent: str, report: dict, ts: float | None = None) -> int:
        """Check and store one turn report; the number of rows written."""
        rows = turn_rows(report)
        self.record(agent, rows, ts)
        return len(rows)

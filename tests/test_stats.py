"""Telemetry rows: turn reports checked and stored in hive.db (read back with sqlite3)."""

import sqlite3

import pytest

from hyperhive.broker.db import db_path
from hyperhive.broker.stats import Stats, turn_rows
from hyperhive.errors import BadInput

REPORT = {
    "duration": 12.5,
    "exit": "compact-retry",
    "exit_code": 0,
    "tools": {"mcp__hyperhive__send": 2, "Bash": 1},
    "sent": {"peer": 1, "operator": 1},
    "received": {"manager": 3},
    "inbox_depth": 4,
    "notes_bytes": 2048,
    "cost_usd": 0.25,
}


def test_a_turn_report_becomes_one_row_per_series(home):
    assert Stats(home).record_turn("manager", REPORT, ts=1000.0) == len(turn_rows(REPORT))
    conn = sqlite3.connect(db_path(home))
    rows = dict(conn.execute("SELECT key, value FROM stats WHERE agent='manager' AND ts=1000"))
    assert rows["turn"] == 1 and rows["turn.duration"] == 12.5
    assert rows["turn.exit.compact-retry"] == 1 and "turn.exit.ok" not in rows
    assert rows["turn.tool_calls"] == 3 and rows["tool.mcp__hyperhive__send"] == 2
    assert rows["sent.peer"] == 1 and rows["turn.sent"] == 2
    assert rows["received.manager"] == 3 and rows["turn.received"] == 3
    assert rows["inbox.depth"] == 4 and rows["notes.bytes"] == 2048
    assert rows["turn.cost_usd"] == 0.25


@pytest.mark.parametrize(
    "change, message",
    [
        ({"exit": "great"}, "`exit` must be one of"),
        ({"duration": "long"}, "`duration` must be a number"),
        ({"duration": -1}, "0 or more"),
        ({"duration": float("nan")}, "`duration` must be a number"),
        ({"inbox_depth": True}, "`inbox_depth` must be a number"),
        ({"sent": {"stranger": 1}}, "unknown class 'stranger'"),
        ({"tools": ["Bash"]}, "`tools` must be an object"),
        ({"tools": {"Bash": "x"}}, "`Bash` must be a number"),
    ],
)
def test_bad_reports_are_refused_and_nothing_is_written(home, change, message):
    with pytest.raises(BadInput, match=None) as e:
        Stats(home).record_turn("manager", {**REPORT, **change})
    assert message in str(e.value)
    assert sqlite3.connect(db_path(home)).execute("SELECT count(*) FROM stats").fetchone()[0] == 0

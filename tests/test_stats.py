"""Telemetry: turn reports checked and stored in hive.db (read back with sqlite3), the
roll-up, the named series, GET /api/stats and /ws/stats, the sampler and stuck-agent
detection, the dashboard's activity section."""

import dataclasses
import math
import os
import sqlite3
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.claude import claude_script
from support.daemon import Daemon
from support.hive import log_in, run_cli
from support.wait import wait_for

from forge_ui import create_app
from hyperhive import operator
from hyperhive.agents import create_agent
from hyperhive.broker.db import db_path
from hyperhive.broker.messages import MANAGER, OPERATOR, SYSTEM, Broker
from hyperhive.broker.series import GROUPS, percentile, series
from hyperhive.broker.stats import DAY, HOUR, MAX_TOOL_SERIES, MAX_TOOLS, Stats, turn_rows
from hyperhive.daemon.sampler import Sampler, stuck_agents
from hyperhive.errors import BadInput
from hyperhive.hive import Hive
from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime
from hyperhive.settings import Telemetry, load_settings
from hyperhive.wire.events import EventBus

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
T0 = 1_699_999_200.0  # a fixed "now" for crafted histories, on an hour's edge
SETTINGS = Telemetry()  # raw 48 h, minute 14 d, hour 365 d, stuck 15 min
UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade"}


def db(home) -> sqlite3.Connection:
    conn = sqlite3.connect(db_path(home))
    conn.row_factory = sqlite3.Row
    return conn


def report(**change) -> dict:
    return {**REPORT, **change}


# -- rows ----------------------------------------------------------------------------------


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
    raw = conn.execute("SELECT DISTINCT span, n, lo, hi FROM stats").fetchall()
    assert raw == [(0, 1, None, None)]  # a raw row: one sample, its value is min and max


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
        ({"tools": {f"t{i:05}": 1 for i in range(9000)}}, "bytes of JSON, over 65536"),
    ],
)
def test_bad_reports_are_refused_and_nothing_is_written(home, change, message):
    with pytest.raises(BadInput, match=None) as e:
        Stats(home).record_turn("manager", {**REPORT, **change})
    assert message in str(e.value)
    assert sqlite3.connect(db_path(home)).execute("SELECT count(*) FROM stats").fetchone()[0] == 0


def tool_rows(home, prefix="tool", agent="manager") -> dict[str, float]:
    conn = sqlite3.connect(db_path(home))
    query = "SELECT key, sum(value) FROM stats WHERE agent=? AND key LIKE ? GROUP BY key"
    return dict(conn.execute(query, (agent, f"{prefix}.%")))


def test_tool_names_are_capped_per_report_and_per_agent(home):
    stats = Stats(home)
    many = {f"t{i:04}": 1 for i in range(5000)} | {"Bash": 7}
    stats.record_turn("manager", report(tools=many))
    rows = tool_rows(home)
    assert len(rows) == MAX_TOOLS + 1 and rows["tool.Bash"] == 7
    assert rows["tool.other"] == 5000 - (MAX_TOOLS - 1)  # every call still counted
    # Later reports add series until the agent has MAX_TOOL_SERIES, then only `other` grows.
    for start in range(MAX_TOOLS, MAX_TOOL_SERIES + MAX_TOOLS, MAX_TOOLS):
        stats.record_turn(
            "manager", report(tools={f"n{i:04}": 1 for i in range(start, start + MAX_TOOLS)})
        )
    rows = tool_rows(home)
    assert len(rows) == MAX_TOOL_SERIES and "tool.other" in rows
    stats.record_turn("manager", report(tools={"Bash": 1, "brand-new": 2}))
    after = tool_rows(home)
    assert "tool.brand-new" not in after and after["tool.Bash"] == 8
    assert after["tool.other"] == rows["tool.other"] + 2


def test_denial_names_are_capped_per_agent_like_tools(home):
    stats = Stats(home)
    for start in range(0, MAX_TOOL_SERIES + MAX_TOOLS, MAX_TOOLS):
        denials = {f"d{i:04}": 1 for i in range(start, start + MAX_TOOLS)}
        stats.record_turn("manager", report(denials=denials))
    rows = tool_rows(home, "denial")
    assert len(rows) == MAX_TOOL_SERIES + 1 and rows["denial.other"] == MAX_TOOLS
    assert sum(rows.values()) == MAX_TOOL_SERIES + MAX_TOOLS  # every denial still counted


def test_recording_publishes_a_stats_event_inside_the_daemon(home):
    bus = EventBus()  # the daemon's home carries its bus (Hive)
    with bus.subscribe("stats") as sub:
        Stats(dataclasses.replace(home, bus=bus)).record_turn("manager", REPORT)
        assert sub.get(timeout=5) == ("stats", {"agent": "manager"})
    with bus.subscribe("stats") as sub:  # elsewhere (no bus) nobody is told
        Stats(home).record_turn("manager", REPORT)
        assert sub.get(timeout=0) is None


# -- roll-up -------------------------------------------------------------------------------


def aggregates(home, bucket: int) -> dict:
    """Per (agent, key, `bucket`-second bucket): count, sum, min, max, whatever the level."""
    rows = db(home).execute(
        "SELECT agent, key, CAST(ts / ? AS INTEGER) AS b, sum(n), sum(value), "
        "min(coalesce(lo, value)), max(coalesce(hi, value)) FROM stats GROUP BY agent, key, b",
        (bucket,),
    )
    return {(r[0], r[1], r[2]): tuple(r[3:]) for r in rows}


def levels(home) -> dict[int, int]:
    return dict(db(home).execute("SELECT span, count(*) FROM stats GROUP BY span"))


def test_rollup_keeps_every_hourly_count_sum_min_and_max(home):
    stats = Stats(home)
    # 20 days of turns, two agents, one turn every 23 minutes (two or three an hour) with
    # varying values.
    stats.record_many(
        (agent, T0 - 20 * DAY + i * 23 * 60 + 13, key, value)
        for i in range(20 * 24 * 60 // 23)
        for agent in ("manager", "worker")
        for key, value in turn_rows(report(duration=i % 97 / 4, inbox_depth=i % 5))
    )
    before = aggregates(home, HOUR)
    changed = stats.rollup(SETTINGS, now=T0)
    assert changed["minute"] > 0 and changed["hour"] > 0 and changed["dropped"] == 0
    assert aggregates(home, HOUR) == before  # exactly: these values sum without rounding
    spans = {
        r[0]: (r[1], r[2])
        for r in db(home).execute("SELECT span, min(ts), max(ts) FROM stats GROUP BY span")
    }
    assert set(spans) == {0, 60, 3600}
    assert spans[0][0] >= T0 - 48 * HOUR  # raw rows: the last 48 h only
    assert spans[60][0] >= T0 - 14 * DAY and spans[60][1] < T0 - 48 * HOUR
    assert spans[3600][1] < T0 - 14 * DAY
    assert all(ts % 3600 == 0 for (ts,) in db(home).execute("SELECT ts FROM stats WHERE span=3600"))
    # Idempotent: nothing left to do at the same time.
    assert stats.rollup(SETTINGS, now=T0) == {"minute": 0, "hour": 0, "dropped": 0}
    assert aggregates(home, HOUR) == before


def test_rollup_drops_hour_rows_past_their_retention(home):
    stats = Stats(home)
    stats.record("manager", [("turn", 1.0)], T0 - 400 * DAY)
    stats.record("manager", [("turn", 1.0)], T0 - 300 * DAY)
    assert stats.rollup(SETTINGS, now=T0) == {"minute": 2, "hour": 2, "dropped": 1}
    assert [r[0] for r in db(home).execute("SELECT ts FROM stats")] == [T0 - 300 * DAY]


def test_rollup_merges_a_minute_only_once_whole(home):
    """The cut-off falls on a minute edge: the samples of one minute are merged together
    even when the roll-up runs in the middle of that minute."""
    stats = Stats(home)
    edge = T0 - 48 * HOUR  # on a minute edge
    for offset in (-50, -10, 5, 40):
        stats.record("manager", [("inbox.depth", 3.0 + offset / 10)], edge + offset)
    stats.rollup(SETTINGS, now=T0 + 30)  # cut-off edge: the minute before it only
    rows = db(home).execute("SELECT ts, span, n, value, lo, hi FROM stats ORDER BY ts").fetchall()
    assert [tuple(r) for r in rows] == [
        (edge - 60, 60, 2, 3.0 - 5 + 3.0 - 1, -2.0, 2.0),
        (edge + 5, 0, 1, 3.5, None, None),
        (edge + 40, 0, 1, 7.0, None, None),
    ]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    samples=st.lists(
        st.tuples(
            st.sampled_from(["manager", "worker", ""]),
            st.integers(0, 30 * DAY),  # seconds before T0
            st.sampled_from(["turn", "inbox.depth", "tool.Bash"]),
            st.integers(0, 1000).map(lambda v: v / 8),  # exact in binary
        ),
        max_size=60,
    ),
    runs=st.lists(st.integers(0, 3 * DAY), min_size=1, max_size=3),
)
def test_rollup_property_sums_counts_min_max_per_hour(tmp_path_factory, samples, runs):
    home = Home(tmp_path_factory.mktemp("prop"))
    stats = Stats(home)
    stats.record_many([(agent, T0 - back, key, value) for agent, back, key, value in samples])
    before = aggregates(home, HOUR)
    for later in sorted(runs):
        stats.rollup(SETTINGS, now=T0 + later)
    kept = {k: v for k, v in before.items() if k[2] * HOUR >= T0 + max(runs) - 365 * DAY}
    assert aggregates(home, HOUR) == kept


def test_rollup_is_one_transaction_per_step(home):
    """A failure inside a step (here a trigger refusing the DELETE) leaves no merged rows
    beside the raw ones: the step is undone whole and nothing is lost or doubled."""
    stats = Stats(home)
    for i in range(10):
        stats.record("manager", [("turn", 1.0)], T0 - 3 * DAY + i * 30)
    before = [tuple(r) for r in db(home).execute("SELECT * FROM stats ORDER BY ts")]
    conn = db(home)
    conn.execute(
        "CREATE TRIGGER refuse BEFORE DELETE ON stats WHEN old.span = 0 "
        "BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    conn.commit()
    with pytest.raises(sqlite3.IntegrityError, match="refused"):
        stats.rollup(SETTINGS, now=T0)
    assert [tuple(r) for r in db(home).execute("SELECT * FROM stats ORDER BY ts")] == before
    conn.execute("DROP TRIGGER refuse")
    conn.commit()
    assert stats.rollup(SETTINGS, now=T0)["minute"] == 10
    assert levels(home) == {60: 5}


def test_rollup_while_turns_are_recorded_loses_and_doubles_nothing(home):
    stats = Stats(home)
    recorded = 0
    stop = threading.Event()

    def record():
        nonlocal recorded
        i = 0
        while not stop.is_set() or i < 50:
            # Spread over the last 3 days, so the roll-up cut-offs cut through them.
            Stats(home).record("manager", [("turn", 1.0)], T0 - 3 * DAY + i * 97 % (3 * DAY))
            recorded += 1
            i += 1

    writer = threading.Thread(target=record)
    writer.start()
    try:
        for step in range(0, 3 * DAY, 4 * HOUR):
            stats.rollup(SETTINGS, now=T0 + step)
    finally:
        stop.set()
        writer.join()
    stats.rollup(SETTINGS, now=T0 + 3 * DAY)
    total = db(home).execute("SELECT sum(n), sum(value) FROM stats").fetchone()
    assert tuple(total) == (recorded, recorded)


# -- series --------------------------------------------------------------------------------


def crafted(home) -> Stats:
    """Six turns of `manager` in the hour before T0, and hive-wide samples."""
    stats = Stats(home)
    history = [
        (T0 - 3000, report(duration=10, exit="ok", tools={"Bash": 2}, inbox_depth=1)),
        (T0 - 2990, report(duration=20, exit="ok", tools={"Bash": 1, "Read": 3}, inbox_depth=5)),
        (T0 - 1800, report(duration=30, exit="failure", tools={}, sent={}, inbox_depth=2)),
        (T0 - 1200, report(duration=40, exit="ok", tools={"Read": 1}, inbox_depth=0)),
        (T0 - 600, report(duration=50, exit="compact-retry", inbox_depth=3)),
        (T0 - 590, report(duration=1000, exit="ok", inbox_depth=2, notes_bytes=4096)),
    ]
    for at, r in history:
        stats.record_turn("manager", r, ts=at)
    stats.record("", [("approvals.pending", 2.0)], T0 - 1000)
    stats.record("", [("approvals.pending", 5.0)], T0 - 100)
    return stats


def test_series_over_an_hour(home):
    out = series(crafted(home), SETTINGS, "manager", T0 - HOUR, now=T0)
    assert out["step"] == 60 and out["since"] == T0 - HOUR and out["until"] == T0
    assert len(out["t"]) == 61 and out["t"][0] == T0 - HOUR and out["t"][-1] == T0
    s, summary = out["series"], out["summary"]
    i = (HOUR - 3000) // 60  # the minute of the first two turns
    assert s["turns_per_minute"][i] == 2 and sum(s["turns_per_minute"]) == 6
    assert s["exit.ok"][i] == 2 and sum(s["exit.failure"]) == 1
    assert s["tool_calls_per_turn"][i] == 3.0 and s["tool_calls_per_turn"][i + 1] is None
    assert s["duration.p50"][i] == 10 and s["duration.p95"][i] == 20
    assert s["inbox_depth"][i] == 5  # the max in the minute
    assert s["tool.Bash"][i] == 3 and s["tool.Read"][i] == 3
    assert s["sent_per_turn.peer"][i] == 1.0 and s["received_per_turn.manager"][i] == 3.0
    assert s["since_last_turn"][i - 1] is None and s["since_last_turn"][-1] == 590
    assert s["cost_usd"][i] == 0.5
    assert summary["turns"] == 6 and summary["exit"] == {
        "ok": 4,
        "compact-retry": 1,
        "failure": 1,
    }
    assert summary["duration.p50"] == 30 and summary["duration.p95"] == 1000
    assert summary["inbox_depth"] == 2 and summary["inbox_depth_max"] == 5
    assert summary["tool"] == {"Bash": 5, "Read": 4, "mcp__hyperhive__send": 4}
    assert summary["last_turn"] == T0 - 590 and summary["since_last_turn"] == 590
    assert summary["notes_bytes"] == 4096 and summary["cost_usd"] == 1.5
    assert summary["sent_per_turn.peer"] == 5 / 6
    assert summary["approvals_pending"] is None  # a hive-wide series
    hive = series(crafted(home), SETTINGS, "", T0 - HOUR, ["approvals_pending"], now=T0)
    assert hive["summary"]["approvals_pending"] == 5
    assert [v for v in hive["series"]["approvals_pending"] if v is not None] == [2, 5]


def test_permission_denials_are_rows_and_a_series_group(home):
    stats = Stats(home)
    denied = report(tools={"Write": 1}, denials={"Bash": 2, "Write": 1})
    stats.record_turn("manager", denied, ts=T0 - 600)
    stats.record_turn("manager", report(denials={}), ts=T0 - 300)  # none, counted as 0
    stats.record_turn("manager", report(), ts=T0 - 200)  # an older harness: no key
    conn = sqlite3.connect(db_path(home))
    rows = dict(conn.execute("SELECT key, value FROM stats WHERE ts = ?", (T0 - 600,)))
    assert rows["turn.denials"] == 3 and rows["denial.Bash"] == 2 and rows["denial.Write"] == 1
    assert rows["turn.tool_calls"] == 1  # a denial is no tool call
    out = series(stats, SETTINGS, "manager", T0 - HOUR, ["denials"], now=T0)
    assert out["summary"] == {"denials": 3, "denial": {"Bash": 2, "Write": 1}}
    i = (HOUR - 600) // 60
    assert out["series"]["denials"][i] == 3 and sum(out["series"]["denials"]) == 3
    assert out["series"]["denial.Bash"][i] == 2
    with pytest.raises(BadInput, match="`denials` must be an object"):
        stats.record_turn("manager", report(denials=["Bash"]))


def test_series_steps_and_levels(home):
    stats = crafted(home)
    assert series(stats, SETTINGS, "manager", T0 - DAY, now=T0)["step"] == 300
    assert series(stats, SETTINGS, "manager", T0 - 30 * DAY, now=T0)["step"] == 3 * HOUR
    # Past minute_days the rows are hourly: never finer than that.
    assert series(stats, SETTINGS, "manager", T0 - 15 * DAY, now=T0, points=10_000)["step"] == HOUR
    for window in (HOUR, DAY, 7 * DAY, 400 * DAY):
        assert len(series(stats, SETTINGS, "manager", T0 - window, now=T0)["t"]) <= 501


def test_series_sums_survive_the_rollup(home):
    stats = crafted(home)
    before = series(stats, SETTINGS, "manager", T0 - HOUR, now=T0)
    later = T0 + 60 * DAY  # everything is an hour row by then
    stats.rollup(SETTINGS, now=later)
    assert set(levels(home)) == {HOUR}
    after = series(stats, SETTINGS, "manager", T0 - HOUR, now=later)
    for key in ("turns", "exit", "tool", "cost_usd", "inbox_depth_max"):
        assert after["summary"][key] == before["summary"][key], key
    # One hour row: percentiles come from bucket means (an approximation, documented).
    assert after["summary"]["duration.p50"] == 1150 / 6


def test_percentile_is_nearest_rank_and_weighted():
    assert percentile([], 0.5) is None
    assert percentile([(v, 1) for v in range(1, 101)], 0.95) == 95
    assert percentile([(v, 1) for v in (3, 1, 2)], 0.5) == 2
    assert percentile([(1.0, 9), (100.0, 1)], 0.95) == 100.0


# -- the API -------------------------------------------------------------------------------


@pytest.fixture
def client(home, runtime):
    operator.set_password(home, "correct horse battery")
    c = create_app(Hive(home, runtime)).test_client()
    log_in(c, home, "alice")
    return c


def test_api_stats_returns_the_series(client, home):
    Stats(home).record_turn("manager", REPORT)
    r = client.get(f"/api/stats?agent=manager&since={T0}")
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["agent"] == "manager" and body["summary"]["turns"] == 1
    assert body["summary"]["tool"] == {"Bash": 1, "mcp__hyperhive__send": 2}
    assert len(body["t"]) == len(body["series"]["turns_per_minute"])
    only = client.get(f"/api/stats?agent=manager&since={T0}&keys=duration,exit").get_json()
    assert set(only["series"]) == {
        "duration.p50",
        "duration.p95",
        *(f"exit.{c}" for c in ("ok", "compact-retry", "failure")),
    }
    hive = client.get("/api/stats?agent=&keys=approvals_pending")  # since: the last 24 h
    assert hive.status_code == 200 and hive.get_json()["agent"] == ""


def test_api_stats_with_a_bearer_token_and_without_credentials(client, home):
    anon = create_app(Hive(home, None)).test_client()
    assert anon.get("/api/stats?agent=manager").status_code == 401
    auth = {"Authorization": f"Bearer {operator.token(home)}"}
    assert anon.get("/api/stats?agent=manager", headers=auth).status_code == 200


@pytest.mark.parametrize(
    "query, status, message",
    [
        ("", 400, "agent is required"),
        ("agent=Not_A_Name", 400, "Not_A_Name"),
        ("agent=../etc", 400, "../etc"),
        ("agent=ghost", 404, "unknown agent 'ghost'"),
        ("agent=manager&since=yesterday", 400, "since must be a unix time"),
        ("agent=manager&since=nan", 400, "since must be a unix time"),
        ("agent=manager&since=-5", 400, "since must be a unix time"),
        ("agent=manager&since=99999999999", 400, "is in the future"),
        (
            "agent=manager&keys=exit,bogus",
            400,
            "unknown key 'bogus'; known keys: turns_per_minute",
        ),
        ("agent=manager&keys=,", 400, "keys is empty"),
    ],
)
def test_api_stats_refuses_bad_queries(client, query, status, message):
    r = client.get(f"/api/stats?{query}")
    assert r.status_code == status
    assert message in r.get_json()["error"]


def test_api_stats_with_broken_settings_is_the_servers_fault_not_the_querys(client, home):
    """A 500 naming the file: a 400 would send the client to fix a query that is fine."""
    (home.root / "hyperhive.toml").write_text("[telemetry]\nraw_hours = 0\n")
    r = client.get("/api/stats?agent=manager")
    assert r.status_code == 500
    error = r.get_json()["error"]
    assert "hyperhive.toml" in error and "telemetry.raw_hours must be at least 1" in error


def test_the_chart_socket_refuses_a_bad_query_before_the_handshake(client):
    def ws(query):
        return client.get(f"/ws/stats?{query}", headers=UPGRADE)

    assert ws("agent=ghost").status_code == 404
    assert ws("agent=manager&window=5").status_code == 400
    assert "window must be" in ws("agent=manager&window=x").get_json()["error"]
    assert "unknown key" in ws("agent=manager&keys=nope").get_json()["error"]


def test_the_agent_page_has_the_charts(client):
    page = client.get("/agents/manager").get_data(as_text=True)
    assert 'id="telemetry" data-agent="manager" data-ws="ws://localhost/ws/stats"' in page
    assert "vendor/uplot/uPlot.iife.min.js" in page and "charts.js" in page


def plan(home, sql: str, params) -> list[str]:
    return [r[3] for r in db(home).execute(f"EXPLAIN QUERY PLAN {sql}", params)]


def test_every_stats_query_searches_an_index(home):
    """No full scan: each read of the API and of the roll-up names its index (checked on
    a table with rows of many agents, after ANALYZE, so the planner has statistics)."""
    stats = crafted(home)
    stats.record_many([(f"a{i % 20}", T0 - i * 60, f"tool.t{i % 7}", 1.0) for i in range(5000)])
    db(home).execute("ANALYZE")
    keys = stats.keys("manager")
    assert "turn" in keys and "tool.Read" in keys and len(keys) == len(set(keys))
    common = {"agent": "manager", "since": T0 - DAY, "until": T0, "step": 300}
    common.update({"key": "turn", "before": T0})
    keyed = {**common, **{f"k{i}": k for i, k in enumerate(keys)}}
    level = {"source": 0, "span": 60, "end": T0}
    plans = {
        "keys": plan(home, Stats.KEYS, common),
        "buckets": plan(home, Stats.buckets_sql(keys), keyed),
        "samples": plan(home, Stats.SAMPLES, common),
        "latest": plan(home, Stats.LATEST, common),
        "oldest": plan(home, Stats.OLDEST, level),
        "merge": plan(home, Stats.MERGE, level),
        "delete": plan(home, Stats.DELETE, level),
    }
    for name, steps in plans.items():
        reads = [s for s in steps if "stats" in s and "TEMP B-TREE" not in s]
        assert reads and all(s.startswith("SEARCH") and "INDEX" in s for s in reads), (name, steps)
    for name in ("keys", "buckets", "samples", "latest"):
        assert all("stats_series" in s for s in plans[name] if "stats" in s), plans[name]
    for name in ("oldest", "merge", "delete"):
        assert any("stats_level" in s for s in plans[name]), plans[name]


def test_all_groups_have_a_computer(home):
    out = series(Stats(home), SETTINGS, "manager", T0 - HOUR, now=T0)
    assert {name.split(".")[0] for name in out["series"]} <= set(GROUPS)
    assert all(math.isfinite(v) for vs in out["series"].values() for v in vs if v is not None)


# -- the sampler and stuck agents ------------------------------------------------------------


@pytest.fixture
def hive(home, runtime) -> Hive:
    create_agent(home, "worker", runtime, "operator")
    h = Hive(home, runtime)
    h.broker = Broker(home)
    return h


def sampler(hive, **change) -> Sampler:
    return Sampler(hive, hive.broker, Telemetry(**{"stuck_minutes": 15, **change}))


def messages_to(home, name) -> list[sqlite3.Row]:
    return (
        db(home)
        .execute("SELECT sender, body FROM messages WHERE recipient = ? ORDER BY id", (name,))
        .fetchall()
    )


def test_sampler_records_the_hive_wide_series_and_inbox_depths(hive):
    hive.broker.send(OPERATOR, "worker", "one")
    hive.broker.send(OPERATOR, "worker", "two")
    assert sampler(hive).sample(now=T0) == []
    rows = {
        (r["agent"], r["key"]): r["value"] for r in db(hive.home).execute("SELECT * FROM stats")
    }
    # manager#1 and worker#1 are pending proposals
    assert rows == {
        ("", "approvals.pending"): 2,
        ("", "agents.stuck"): 0,
        ("manager", "inbox.depth"): 0,
        ("worker", "inbox.depth"): 2,
    }


def test_an_unreadable_repo_does_not_stop_the_sample(hive, caplog):
    # a ref to an object the repo lacks (a junk ref file is skipped, as git skips one)
    (hive.home.applied_dir("worker") / "refs" / "tags" / "proposal" / "1").write_text("f" * 40)
    assert sampler(hive).sample(now=T0) == []
    rows = {
        (r["agent"], r["key"]): r["value"] for r in db(hive.home).execute("SELECT * FROM stats")
    }
    assert rows[("", "approvals.pending")] == 1  # the manager's; the worker's not counted
    assert rows[("worker", "inbox.depth")] == 0
    assert "worker's approvals could not be read" in caplog.text


def test_stuck_agent_is_flagged_once_per_episode(hive):
    home, s = hive.home, sampler(hive)
    hive.broker.send(OPERATOR, "worker", "please do X")
    sent_at = db(home).execute("SELECT created_at FROM messages").fetchone()[0]
    Stats(home).record_turn("worker", REPORT, ts=sent_at - 3600)  # an old turn
    assert s.sample(now=sent_at + 14 * 60) == []  # not yet 15 minutes
    assert s.sample(now=sent_at + 16 * 60) == ["worker"]
    assert set(stuck_agents(s.stats)) == {"worker"}
    hive.broker.recv(MANAGER)  # the manager reads it (else it is stuck next)
    for minutes in range(17, 30):  # the episode goes on: no second message
        assert s.sample(now=sent_at + minutes * 60) == []
    told = messages_to(home, MANAGER)
    assert len(told) == 1 and told[0]["sender"] == SYSTEM
    assert "agent worker looks stuck: 1 message(s)" in told[0]["body"]
    assert "its last turn ended 76 minutes ago" in told[0]["body"]
    last = db(home).execute("SELECT value FROM stats WHERE key='agents.stuck' ORDER BY ts DESC")
    assert last.fetchone()[0] == 1
    # A turn ends the episode; a new one tells the manager again.
    Stats(home).record_turn("worker", REPORT, ts=sent_at + 30 * 60)
    assert s.sample(now=sent_at + 31 * 60) == [] and stuck_agents(s.stats) == {}
    assert s.sample(now=sent_at + 46 * 60) == ["worker"]
    assert len(messages_to(home, MANAGER)) == 2


def test_a_healthy_or_idle_agent_is_not_stuck(hive):
    home, s = hive.home, sampler(hive)
    # Idle: an empty inbox, however long ago the last turn.
    Stats(home).record_turn("worker", REPORT, ts=T0 - 10 * DAY)
    assert s.sample(now=T0) == []
    # Busy: a message waits, but turns keep ending.
    hive.broker.send(OPERATOR, "worker", "hello")
    sent_at = db(home).execute("SELECT created_at FROM messages").fetchone()[0]
    for minutes in range(0, 60, 5):
        Stats(home).record_turn("worker", REPORT, ts=sent_at + minutes * 60)
        assert s.sample(now=sent_at + minutes * 60 + 30) == []
    # Reading the inbox ends it too.
    hive.broker.recv("worker")
    assert s.sample(now=sent_at + 3 * HOUR) == []
    assert stuck_agents(s.stats) == {} and messages_to(home, MANAGER) == []


def test_a_stuck_manager_is_reported_to_the_operator(hive):
    s = sampler(hive)
    hive.broker.send(OPERATOR, MANAGER, "are you there?")
    sent_at = db(hive.home).execute("SELECT created_at FROM messages").fetchone()[0]
    assert s.sample(now=sent_at + 20 * 60) == ["manager"]
    told = messages_to(hive.home, OPERATOR)
    assert len(told) == 1 and "it has never finished a turn" in told[0]["body"]


def test_a_failed_message_leaves_the_episode_open_to_retry(hive, monkeypatch):
    s = sampler(hive)
    hive.broker.send(OPERATOR, "worker", "x")
    sent_at = db(hive.home).execute("SELECT created_at FROM messages").fetchone()[0]
    monkeypatch.setattr(hive.broker, "send", lambda *a: (_ for _ in ()).throw(OSError("disk")))
    assert s.sample(now=sent_at + 20 * 60) == [] and stuck_agents(s.stats) == {}
    monkeypatch.undo()
    assert s.sample(now=sent_at + 21 * 60) == ["worker"]
    assert len(messages_to(hive.home, MANAGER)) == 1


def test_dashboard_shows_a_badge_and_a_sparkline_per_agent(hive, client):
    s = sampler(hive)
    hive.broker.send(OPERATOR, "worker", "x")
    sent_at = db(hive.home).execute("SELECT created_at FROM messages").fetchone()[0]
    s.sample(now=sent_at + 20 * 60)
    Stats(hive.home).record_turn("manager", report(exit="failure"))
    page = client.get("/").get_data(as_text=True)
    assert 'id="section-activity"' in page
    worker = page[page.index('<tr data-agent="worker">', page.index("section-activity")) :]
    assert 'class="badge activity-stuck"' in worker.split("</tr>")[0]
    manager = page[page.index('<tr data-agent="manager">', page.index("section-activity")) :]
    assert "activity-failing" in manager.split("</tr>")[0]
    assert "<polyline points=" in manager.split("</tr>")[0]
    state = client.get("/api/state").get_json()
    badges = {a["name"]: a["badge"] for a in state["activity"]}
    assert badges == {"manager": "failing", "worker": "stuck"}


# -- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "toml, message",
    [
        ("[telemetry]\nraw_hours = 0\n", "telemetry.raw_hours must be at least 1"),
        ("[telemetry]\nraw_hours = 49\nminute_days = 2\n", "must cover telemetry.raw_hours"),
        ("[telemetry]\nminute_days = 30\nhour_days = 7\n", "hour_days (7) must be at least"),
    ],
)
def test_telemetry_settings_are_checked(tmp_path, toml, message):
    (tmp_path / "hyperhive.toml").write_text(toml)
    with pytest.raises(BadInput, match=None) as e:
        load_settings(Home(tmp_path), {})
    assert message in str(e.value)


# -- end to end ----------------------------------------------------------------------------


def test_a_fake_claude_turn_and_the_sampler_show_in_api_stats(home, tmp_path, monkeypatch):
    """A real daemon (sampling every second), alice deployed on the local runtime; a
    message runs one turn of the fake claude, which sends to bob: its report and the
    sampler's rows come back from GET /api/stats."""
    monkeypatch.setenv("PATH", f"{claude_script(tmp_path / 'bin').parent}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_CLAUDE_HOME", str(tmp_path / "fake-claude"))
    monkeypatch.setenv("HYPERHIVE_TELEMETRY_SAMPLE_SECONDS", "1")
    root = home.root
    for name in ("alice", "bob"):
        create_agent(home, name, LocalRuntime(home), "operator")
    daemon = Daemon(root).start()
    try:
        run_cli(root, "approve", "alice#1", check=True)
        log = Home(root).log_dir("alice") / "harness.log"
        wait_for(lambda: log.exists() and "ready on" in log.read_text(), what="alice's harness")
        body = 'fake: call send {"to": "bob", "body": "hi"}'
        run_cli(root, "send", "operator", "alice", body, check=True)
        since = time.time() - HOUR
        got = wait_for(
            lambda: (
                (s := daemon.get(f"/api/stats?agent=alice&since={since}"))["summary"]["turns"] and s
            ),
            what="alice's turn in /api/stats",
        )
        summary = got["summary"]
        assert summary["turns"] == 1 and summary["exit"]["ok"] == 1
        assert summary["tool"] == {"mcp__hyperhive__send": 1}
        assert summary["sent_per_turn.peer"] == 1 and summary["received_per_turn.operator"] == 1
        assert summary["duration.p50"] > 0 and summary["cost_usd"] > 0
        assert summary["since_last_turn"] >= 0 and summary["inbox_depth"] == 0
        assert sum(got["series"]["turns_per_minute"]) > 0
        # The sampler: bob's inbox (never deployed, so never read) and the pending approvals.
        wait_for(
            lambda: (
                daemon.get("/api/stats?agent=bob&keys=inbox_depth")["summary"]["inbox_depth"] == 1
            ),
            what="bob's sampled inbox depth",
        )
        hive = daemon.get("/api/stats?agent=&keys=approvals_pending")["summary"]
        assert hive["approvals_pending"] == 2  # manager#1 and bob#1
    finally:
        daemon.stop()

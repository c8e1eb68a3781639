"""The agent page's telemetry charts in a real browser: headless Chromium (Playwright)
against `hyperhive up` as a real process (support.browser's fixtures, on the forge the
sharing modules use: only this module reports the manager's turns). Turns reach the
daemon as the harness sends them: a `turn_report` on the agent's socket."""

import time

from support.browser import browser, daemon, session_state, web  # noqa: F401
from support.hive import run_cli
from support.wait import wait_for

from hyperhive.broker.stats import Stats
from hyperhive.daemon import hostsock
from hyperhive.home import Home

SHARE_FORGE = True  # the other sharing modules neither run turns nor deploy the manager
TIMEOUT = 30.0
REPORT = {
    "duration": 12.5,
    "exit": "ok",
    "tools": {"Bash": 2, "Read": 1},
    "sent": {"operator": 1},
    "received": {"peer": 1},
    "notes_bytes": 300,
    "cost_usd": 0.1,
}


def turn_report(daemon, **change) -> None:
    sock = Home(daemon.root).agent_socket("manager")
    wait_for(sock.exists, what="the manager's socket")
    reply = hostsock.call(sock, {"op": "turn_report", "report": {**REPORT, **change}}, timeout=30)
    assert reply["rows"] > 0


def plotted(page, panel: str) -> list:
    """The data uPlot holds for a panel: [times, series...]."""
    return page.evaluate(f"hiveCharts.plots[{panel!r}] ? hiveCharts.plots[{panel!r}].data : null")


def test_charts_render_the_turns_and_follow_new_ones(web, daemon):
    # Earlier turns, written straight into hive.db (no event: the page's first load reads them).
    Stats(Home(daemon.root)).record_turn("manager", {**REPORT, "inbox_depth": 2}, time.time() - 900)
    turn_report(daemon, duration=40, exit="failure")
    page = web.open("/agents/manager")
    page.wait_for_selector("#telemetry .chart[data-panel='turns'] canvas")

    def turns() -> float | None:
        """The turns the page was last sent, once uPlot holds a point per bucket."""
        last = page.evaluate("hiveCharts.last()")
        data = plotted(page, "turns")
        if not last or not data or len(data[0]) != len(last["t"]):
            return None
        return last["summary"]["turns"]

    wait_for(lambda: turns() == 2, timeout=TIMEOUT, what="two turns on the chart")
    busy = [v for v in plotted(page, "turns")[1] if v]
    assert 1 <= len(busy) <= 2 and all(v > 0 for v in busy)  # one or two buckets had turns
    exits = plotted(page, "exits")
    assert sum(v or 0 for v in exits[1]) == 1 and sum(v or 0 for v in exits[3]) == 1  # ok, failure
    duration = plotted(page, "duration")
    assert max(v for v in duration[2] if v is not None) == 40  # p95
    tools = page.evaluate("hiveCharts.plots.tools.series.map((s) => s.label)")
    assert tools[1:] == ["Bash", "Read"]
    # The canvas is drawn: it has a size and non-background pixels.
    box = page.locator("#telemetry .chart[data-panel='turns'] canvas").bounding_box()
    assert box["width"] > 200 and box["height"] > 100
    summary = page.inner_text("#telemetry .chart-summary")
    assert "turns 2" in summary and "tools Bash 4, Read 2" in summary

    # A new turn through the daemon redraws on its stats event (the socket's periodic
    # refresh, 30 s, is later than this wait).
    turn_report(daemon, duration=7)
    wait_for(lambda: turns() == 3, timeout=TIMEOUT, what="the new turn on the chart")

    # Another window reconnects and draws the same turns in coarser buckets.
    page.click("#telemetry button[data-window='604800']")
    wait_for(
        lambda: page.evaluate("hiveCharts.last().step") == 1800 and turns() == 3,
        timeout=TIMEOUT,
        what="the 7-day window",
    )

    # The dashboard's activity row: a badge and a sparkline.
    dash = web.open("/")
    row = dash.locator("#section-activity tr[data-agent='manager']")
    assert row.locator(".badge").inner_text() == "busy"  # the last turn ended well
    assert row.locator("svg.sparkline polyline").get_attribute("points").count(",") == 97


def test_charts_without_data_fold_into_one_line(web, daemon):  # noqa: F811
    """An agent with no turns: one "no data in this window" line, not a dozen empty plots;
    one with turns: only the panels with data, each with a labelled y-axis and a legend."""
    if not (daemon.root / "applied" / "quiet.git").exists():
        run_cli(daemon.root, "agent", "create", "quiet", check=True)
    page = web.open("/agents/quiet")
    page.wait_for_selector("#telemetry .no-data:not([hidden])")
    assert page.inner_text("#telemetry .no-data") == "no data in this window"
    assert page.locator("#telemetry .charts").is_hidden()
    assert page.locator("#telemetry canvas").count() == 0

    turn_report(daemon)
    page = web.open("/agents/manager")
    page.wait_for_selector("#telemetry .chart[data-panel='turns'] canvas")
    shown = page.eval_on_selector_all(
        "#telemetry .chart:not([hidden])", "els => els.map(e => e.dataset.panel)"
    )
    assert "turns" in shown and "denials" not in shown  # no permission denial was reported
    assert "permission denials" in page.inner_text("#telemetry .no-data")
    for panel in shown:
        box = page.locator(f"#telemetry .chart[data-panel='{panel}']")
        assert box.locator(".u-axis").count() == 2  # time and a y-axis
        y = page.evaluate(f"(({{axes}}) => [axes.length, axes[1].label])(hiveCharts.plots.{panel})")
        assert y[0] == 2 and y[1]  # the y-axis is labelled with its unit (on the canvas)
        legend = box.locator(".u-legend .u-series:not(:first-child) .u-label")
        assert legend.count() >= 1 and legend.first.is_visible()

"""Telemetry in the forge: the JSON of `GET /api/stats` and of the agent page's chart
socket (`/ws/stats` in live.py), and the dashboard's activity section (a sparkline and a
badge per agent). The series themselves are computed in `hyperhive.broker.series`."""

import time

from flask import current_app
from werkzeug.datastructures import MultiDict

from hyperhive.broker.series import DAY, parse_groups, parse_since, series
from hyperhive.broker.stats import EXIT_CLASSES, Stats
from hyperhive.daemon.sampler import stuck_agents
from hyperhive.errors import BadInput
from hyperhive.gitstore.cache import LRU
from hyperhive.hive import Hive
from hyperhive.settings import load_settings

MAX_WINDOW = 400 * DAY
SPARK_WINDOW = DAY
SPARK_POINTS = 96  # 15-minute buckets
SPARK_SIZE = (120, 24)
DASH_GROUPS = ["exit", "inbox_depth", "since_last_turn", "cost_usd"]


def stats_of(h: Hive) -> Stats:
    """One Stats per app: its constructor migrates hive.db, which takes the write lock."""
    app = current_app._get_current_object()
    if "stats" not in app.extensions:
        app.extensions["stats"] = Stats(h.home, h.broker.db if h.broker else None)
    return app.extensions["stats"]


def parse_agent(h: Hive, raw: str | None) -> str:
    if raw is None:
        raise BadInput("agent is required: ?agent=NAME, or ?agent= for the hive-wide series")
    return raw and h.home.require_agent(raw)


def parse_window(raw: str | None) -> float:
    try:
        window = float(raw) if raw is not None else DAY
    except ValueError:
        raise BadInput(f"window must be a number of seconds, not {raw!r}") from None
    if not 60 <= window <= MAX_WINDOW:
        raise BadInput(f"window must be 60 to {MAX_WINDOW:.0f} seconds, not {raw!r}")
    return window


def parse(h: Hive, args: MultiDict, now: float) -> tuple[str, float, list[str]]:
    """(agent, since, groups) from `agent`, `since` (or `window`) and `keys`."""
    agent = parse_agent(h, args.get("agent"))
    if "window" in args:
        since = now - parse_window(args.get("window"))
    else:
        since = parse_since(args.get("since"), now)
    return agent, since, parse_groups(args.get("keys"))


def payload(h: Hive, args: MultiDict, now: float | None = None) -> dict:
    """The series the query asks for."""
    now = time.time() if now is None else now
    agent, since, groups = parse(h, args, now)
    settings = load_settings(h.home).telemetry
    return series(stats_of(h), settings, agent, since, groups, now)


# -- the dashboard -----------------------------------------------------------------------


def sparkline(values: list[float]) -> str:
    """SVG polyline points for `values`, scaled to SPARK_SIZE (the top is the maximum);
    made once per series of values (most agents' 24 h change rarely between loads, and
    formatting the points was a tenth of a dashboard's load)."""
    key = tuple(values)
    points = _sparklines.get(key)
    if points is None:
        points = _points(values)
        _sparklines.put(key, points)
    return points


_sparklines: LRU[tuple, str] = LRU(1024)


def _points(values: list[float]) -> str:
    width, height = SPARK_SIZE
    top = max(values, default=0) or 1
    dx = width / max(1, len(values) - 1)
    return " ".join(
        f"{i * dx:.1f},{height - 1 - (v / top) * (height - 2):.1f}" for i, v in enumerate(values)
    )


def badge(stuck: dict | None, last_failed: bool, since_last: float | None, busy: float) -> str:
    if stuck:
        return "stuck"
    if last_failed:
        return "failing"
    if since_last is not None and since_last < busy:
        return "busy"
    return "idle"


def activity(h: Hive) -> list[dict]:
    """Per agent: 24 h of turns as a sparkline, a badge, and the figures behind it."""
    stats = stats_of(h)
    settings = load_settings(h.home).telemetry
    stuck = stuck_agents(stats)
    now = time.time()
    rows = []
    for name in h.home.agent_names():
        s = series(stats, settings, name, now - SPARK_WINDOW, DASH_GROUPS, now, SPARK_POINTS)
        summary = s["summary"]
        exits = [s["series"][f"exit.{c}"] for c in EXIT_CLASSES]
        turns = [sum(counts) for counts in zip(*exits, strict=True)]  # per bucket
        failed = stats.latest(name, "turn.exit.failure")
        last = summary["last_turn"]
        last_failed = bool(failed and last and failed["ts"] + failed["span"] >= last)
        busy = settings.stuck_minutes * 60
        rows.append(
            {
                "name": name,
                "badge": badge(stuck.get(name), last_failed, summary["since_last_turn"], busy),
                "stuck": stuck.get(name),
                "sparkline": sparkline(turns),
                "turns": sum(turns),
                "failures": summary["exit"]["failure"],
                "last_turn": last,
                "inbox": summary["inbox_depth"],
                "cost_usd": summary["cost_usd"],
            }
        )
    return rows

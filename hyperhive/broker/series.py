"""The named telemetry series, computed from stats rows: what `GET /api/stats`, the agent
page's charts and the dashboard's sparklines show.

A window is cut into `step`-second buckets aligned to multiples of `step` (so a live
update lands in the same buckets), at most `MAX_POINTS` of them and never finer than the
level the rows at the window's start were rolled up to. Every series is a list with one
value per bucket: counts and rates are 0 in an empty bucket, per-turn ratios,
percentiles and gauges are None there (a gap, not a zero). `summary` has the same
quantities over the whole window, and the current value of the gauges.
"""

import math
import time
from dataclasses import dataclass
from typing import Any

from hyperhive.broker.stats import (
    DAY,
    EXIT_CLASSES,
    HOUR,
    MINUTE,
    RECIPIENT_CLASSES,
    Stats,
)
from hyperhive.errors import BadInput
from hyperhive.settings import Telemetry

MAX_POINTS = 500
STEPS = (MINUTE, 5 * MINUTE, 15 * MINUTE, 30 * MINUTE, HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY)
PERCENTILES = (("p50", 0.5), ("p95", 0.95))

# group -> the stats keys it reads (a trailing "." is a prefix: every key under it)
GROUPS: dict[str, tuple[str, ...]] = {
    "turns_per_minute": ("turn",),
    "exit": tuple(f"turn.exit.{c}" for c in EXIT_CLASSES),
    "tool_calls_per_turn": ("turn.tool_calls",),
    "duration": ("turn.duration",),
    "inbox_depth": ("inbox.depth",),
    "sent_per_turn": ("turn", *(f"sent.{c}" for c in RECIPIENT_CLASSES)),
    "received_per_turn": ("turn", *(f"received.{c}" for c in RECIPIENT_CLASSES)),
    "approvals_pending": ("approvals.pending",),
    "tool": ("tool.",),
    "since_last_turn": ("turn",),
    "notes_bytes": ("notes.bytes",),
    "cost_usd": ("turn.cost_usd",),
    "denials": ("turn.denials", "denial."),
}


def parse_groups(keys: str | None) -> list[str]:
    """`a,b` → the groups asked for (all when None); BadInput names an unknown one."""
    if keys is None:
        return list(GROUPS)
    asked = [k.strip() for k in keys.split(",") if k.strip()]
    if not asked:
        raise BadInput(f"keys is empty; known keys: {', '.join(GROUPS)}")
    for k in asked:
        if k not in GROUPS:
            raise BadInput(f"unknown key {k!r}; known keys: {', '.join(GROUPS)}")
    return list(dict.fromkeys(asked))


def parse_since(since: str | None, now: float) -> float:
    """A unix time in the past; 24 hours ago when absent."""
    if since is None:
        return now - DAY
    try:
        value = float(since)
    except ValueError:
        raise BadInput(f"since must be a unix time in seconds, not {since!r}") from None
    if not math.isfinite(value) or value < 0:
        raise BadInput(f"since must be a unix time in seconds, not {since!r}")
    if value > now:
        raise BadInput(f"since ({value:.0f}) is in the future (now is {now:.0f})")
    return value


def choose_step(since: float, now: float, settings: Telemetry, points: int = MAX_POINTS) -> int:
    """The finest step giving at most `points` buckets, no finer than the rows' level."""
    floor = HOUR if since < now - settings.minute_days * DAY else MINUTE
    for step in STEPS:
        if step >= floor and (now - since) / step <= points:
            return step
    return math.ceil((now - since) / points / DAY) * DAY


def percentile(weighted: list[tuple[float, float]], q: float) -> float | None:
    """Nearest-rank percentile of (value, weight) pairs. Raw samples weigh 1 (exact); a
    rolled-up row is its bucket's mean weighing its count (an approximation)."""
    if not weighted:
        return None
    weighted = sorted(weighted)
    total = sum(w for _, w in weighted)
    rank = max(1.0, math.ceil(q * total))
    seen = 0.0
    for value, weight in weighted:
        seen += weight
        if seen >= rank:
            return value
    return weighted[-1][0]


@dataclass
class Window:
    agent: str
    since: float  # aligned down to `step`
    until: float
    step: int

    @property
    def size(self) -> int:
        return int((self.until - self.since) // self.step) + 1

    def index(self, ts: float) -> int:
        return int((ts - self.since) // self.step)


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if not den else (num or 0.0) / den


class Computer:
    """Turns the rows of one agent's window into the named series."""

    def __init__(self, stats: Stats, window: Window, groups: list[str]):
        self.stats, self.w, self.groups = stats, window, groups
        wanted = {k for g in groups for k in GROUPS[g]}
        prefixes = tuple(k for k in wanted if k.endswith("."))
        if prefixes:  # e.g. every tool.<name> this agent ever used
            wanted = {k for k in wanted if not k.endswith(".")}
            wanted |= {k for k in stats.keys(window.agent) if k.startswith(prefixes)}
        w = window  # rows written after `until` (a turn ending now) wait for the next call
        rows = stats.buckets(w.agent, w.since, w.until, w.step, sorted(wanted))
        self.by_key: dict[str, dict[int, dict]] = {}
        for row in rows:
            self.by_key.setdefault(row["key"], {})[window.index(row["bucket"])] = row
        self.series: dict[str, list] = {}
        self.summary: dict[str, Any] = {}

    def column(self, key: str, field: str, empty: float | None) -> list:
        values = [empty] * self.w.size  # filled where there are rows: most buckets have none
        for i, cell in self.by_key.get(key, {}).items():
            if 0 <= i < len(values):
                values[i] = cell[field]
        return values

    def total(self, key: str, field: str = "total") -> float:
        return float(sum(c[field] for c in self.by_key.get(key, {}).values()))

    def run(self) -> dict:
        for group in self.groups:
            getattr(self, f"g_{group}")()
        return {
            "agent": self.w.agent,
            "since": self.w.since,
            "until": self.w.until,
            "step": self.w.step,
            "t": [self.w.since + i * self.w.step for i in range(self.w.size)],
            "series": self.series,
            "summary": self.summary,
        }

    # -- groups ------------------------------------------------------------------------

    def g_turns_per_minute(self) -> None:
        turns = self.column("turn", "total", 0.0)
        minutes = [
            max(1.0, min(self.w.step, self.w.until - t) / MINUTE)
            for t in (self.w.since + i * self.w.step for i in range(self.w.size))
        ]
        self.series["turns_per_minute"] = [n / m for n, m in zip(turns, minutes, strict=True)]
        self.summary["turns"] = self.total("turn")

    def g_exit(self) -> None:
        self.summary["exit"] = {}
        for cls in EXIT_CLASSES:
            self.series[f"exit.{cls}"] = self.column(f"turn.exit.{cls}", "total", 0.0)
            self.summary["exit"][cls] = self.total(f"turn.exit.{cls}")

    def g_tool_calls_per_turn(self) -> None:
        totals = self.column("turn.tool_calls", "total", None)
        counts = self.column("turn.tool_calls", "n", None)
        self.series["tool_calls_per_turn"] = [
            _ratio(t, n) for t, n in zip(totals, counts, strict=True)
        ]
        key = "turn.tool_calls"
        self.summary["tool_calls_per_turn"] = _ratio(self.total(key), self.total(key, "n"))

    def g_duration(self) -> None:
        cells: list[list[tuple[float, float]]] = [[] for _ in range(self.w.size)]
        for row in self.stats.samples(self.w.agent, "turn.duration", self.w.since, self.w.until):
            cells[self.w.index(row["ts"])].append((row["value"] / row["n"], row["n"]))
        every = [pair for cell in cells for pair in cell]
        for name, q in PERCENTILES:
            self.series[f"duration.{name}"] = [percentile(c, q) for c in cells]
            self.summary[f"duration.{name}"] = percentile(every, q)

    def _gauge(self, name: str, key: str) -> None:
        self.series[name] = self.column(key, "hi", None)
        latest = self.stats.latest(self.w.agent, key)
        self.summary[name] = latest["value"] / latest["n"] if latest else None

    def g_inbox_depth(self) -> None:
        self._gauge("inbox_depth", "inbox.depth")
        highs = [c["hi"] for c in self.by_key.get("inbox.depth", {}).values()]
        self.summary["inbox_depth_max"] = max(highs, default=None)

    def _per_turn(self, group: str, prefix: str) -> None:
        turns = self.column("turn", "total", None)
        total_turns = self.total("turn")
        for cls in RECIPIENT_CLASSES:
            key = f"{prefix}.{cls}"
            counts = self.column(key, "total", 0.0)
            self.series[f"{group}.{cls}"] = [
                _ratio(c, t) for c, t in zip(counts, turns, strict=True)
            ]
            self.summary[f"{group}.{cls}"] = _ratio(self.total(key), total_turns)

    def g_sent_per_turn(self) -> None:
        self._per_turn("sent_per_turn", "sent")

    def g_received_per_turn(self) -> None:
        self._per_turn("received_per_turn", "received")

    def g_approvals_pending(self) -> None:
        self._gauge("approvals_pending", "approvals.pending")

    def g_tool(self) -> None:
        tools = sorted(k for k in self.by_key if k.startswith("tool."))
        for key in tools:
            self.series[key] = self.column(key, "total", 0.0)
        self.summary["tool"] = {k[len("tool.") :]: self.total(k) for k in tools}

    def g_since_last_turn(self) -> None:
        # When a turn ended: a raw row's time; a rolled-up row's bucket end (its last turn
        # ended by then: exact at the raw level, at most a bucket late after the roll-up).
        before = self.stats.latest(self.w.agent, "turn", before=self.w.since)
        rows = self.stats.samples(self.w.agent, "turn", self.w.since, self.w.until)
        ends = sorted((r["ts"], r["ts"] + r["span"]) for r in ([before] if before else []) + rows)
        # From bucket i on, the turn that counts is the last one (by start) started by
        # then: each covers the buckets up to the next one's start; before any, None.
        size, w = self.w.size, self.w
        values: list[float | None] = [None] * size
        starts = [(max(0, w.index(start)), end) for start, end in ends]
        for n, (first, end) in enumerate(starts):
            stop = starts[n + 1][0] if n + 1 < len(starts) else size
            for i in range(first, min(stop, size)):
                values[i] = max(0.0, min(w.since + (i + 1) * w.step, w.until) - end)
        self.series["since_last_turn"] = values
        last = max((end for _, end in ends), default=None)
        self.summary["last_turn"] = last
        self.summary["since_last_turn"] = None if last is None else self.w.until - last

    def g_notes_bytes(self) -> None:
        self._gauge("notes_bytes", "notes.bytes")

    def g_denials(self) -> None:
        # tool calls Claude Code's permission rules refused: the total and per tool
        self.series["denials"] = self.column("turn.denials", "total", 0.0)
        self.summary["denials"] = self.total("turn.denials")
        tools = sorted(k for k in self.by_key if k.startswith("denial."))
        for key in tools:
            self.series[key] = self.column(key, "total", 0.0)
        self.summary["denial"] = {k[len("denial.") :]: self.total(k) for k in tools}

    def g_cost_usd(self) -> None:
        self.series["cost_usd"] = self.column("turn.cost_usd", "total", 0.0)
        self.summary["cost_usd"] = self.total("turn.cost_usd")


def series(
    stats: Stats,
    settings: Telemetry,
    agent: str,
    since: float,
    groups: list[str] | None = None,
    now: float | None = None,
    points: int = MAX_POINTS,
) -> dict:
    """The named series of `agent` ("" = hive-wide) from `since` to now, in at most about
    `points` buckets."""
    now = time.time() if now is None else now
    step = choose_step(since, now, settings, points)
    window = Window(agent, since // step * step, now, step)
    return Computer(stats, window, list(GROUPS) if groups is None else groups).run()

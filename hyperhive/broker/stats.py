"""Telemetry rows in `hive.db`: `stats (agent, ts, key, value, span, n, lo, hi)`.

The harness reports every turn (`turn_report` on its agent socket); `turn_rows` checks
the report and turns it into rows, one per series, all at the turn's end time. The
daemon's sampler adds hive-wide series under the agent `""`. Counts per class (tools,
permission denials, recipients) become one key each (`tool.<name>`, `denial.<tool>`,
`sent.<class>`), so every series is a plain
number over time.

A row is a bucket: `span` seconds from `ts` (0 for a raw sample) holding `n` samples whose
sum is `value` and whose min/max are `lo`/`hi` (NULL on a raw row: the value itself).
`rollup` merges raw rows into minute rows and minute rows into hour rows, so every sum,
count, min and max over whole buckets is the same before and after, and drops hour rows
past their retention. Readers aggregate with `sum(n)`, `sum(value)`, `min(coalesce(lo,
value))`, `max(coalesce(hi, value))` and never need to know a row's level.
"""

import json
import math
import sqlite3
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager

from hyperhive.broker.db import Pool, migrate
from hyperhive.errors import BadInput
from hyperhive.home import Home
from hyperhive.settings import Telemetry
from hyperhive.wire import notify

EXIT_CLASSES = ("ok", "compact-retry", "failure")
RECIPIENT_CLASSES = ("peer", "operator", "manager", "system")
MAX_TOOL_NAME = 200
MAX_REPORT_BYTES = 64 * 1024  # of a report's JSON
# Distinct tool names: per report, and tool series per agent (its rows as they stand);
# the same for the denial series.
# The rest are counted under `other`, so no report can make thousands of series.
MAX_TOOLS = 50
MAX_TOOL_SERIES = 200
OTHER_TOOL = "other"
MINUTE, HOUR, DAY = 60, 3600, 86400
# A roll-up transaction covers at most this much time, so a backlog (a daemon that was
# down for days) never holds the write lock long enough to stall a turn report.
ROLLUP_CHUNK = 6 * HOUR


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


def cap_tools(tools: dict[str, float], known: frozenset[str] = frozenset()) -> dict[str, float]:
    """At most MAX_TOOLS names, the most called first, and no name that would take the
    agent's tool series (`known`, without `tool.`) past MAX_TOOL_SERIES; the calls of the
    others are added to `other`, so every total stays right."""
    kept: dict[str, float] = {}
    other = 0.0
    room = MAX_TOOL_SERIES - len(known)
    for name in sorted(tools, key=lambda n: (-tools[n], n)):
        if name != OTHER_TOOL and len(kept) < MAX_TOOLS and (name in known or room > 0):
            room -= name not in known
            kept[name] = tools[name]
        else:
            other += tools[name]
    if other:
        kept[OTHER_TOOL] = other
    return kept


def turn_rows(
    report: dict,
    known_tools: frozenset[str] = frozenset(),
    known_denials: frozenset[str] = frozenset(),
) -> list[tuple[str, float]]:
    """The rows of one turn report (`known_tools`, `known_denials`: the agent's tool and
    denial series so far, for `cap_tools`); BadInput names what is wrong with it."""
    if not isinstance(report, dict):
        raise BadInput(f"a turn report is an object, not {report!r}")
    size = len(json.dumps(report))
    if size > MAX_REPORT_BYTES:
        raise BadInput(f"turn report: {size} bytes of JSON, over {MAX_REPORT_BYTES}")
    exit_class = report.get("exit")
    if exit_class not in EXIT_CLASSES:
        raise BadInput(f"turn report: `exit` must be one of {EXIT_CLASSES}, not {exit_class!r}")
    tools = cap_tools(_counts(report, "tools", None), known_tools)
    # denied calls by tool: capped per report and per agent as the tools are
    denials = cap_tools(_counts(report, "denials", None), known_denials)
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
    if "denials" in report:
        rows.append(("turn.denials", sum(denials.values())))
    rows += [(f"tool.{name}", n) for name, n in sorted(tools.items())]
    rows += [(f"denial.{name}", n) for name, n in sorted(denials.items())]
    rows += [(f"sent.{cls}", n) for cls, n in sorted(sent.items())]
    rows += [(f"received.{cls}", n) for cls, n in sorted(received.items())]
    return rows


def _series(keys: Iterable[str], prefix: str) -> frozenset[str]:
    """The names of an agent's series under `prefix` (`tool.`, `denial.`)."""
    return frozenset(k[len(prefix) :] for k in keys if k.startswith(prefix))


def _floor(ts: float, step: int) -> int:
    return int(ts // step) * step


class Stats:
    def __init__(self, home: Home, pool: Pool | None = None):
        """`pool`: the open connections to share (the broker's, in the daemon)."""
        self.home = home
        migrate(home)
        self.db = pool or Pool(home)

    # -- writing -----------------------------------------------------------------------

    def record(self, agent: str, rows: list[tuple[str, float]], ts: float | None = None) -> None:
        """Store rows for one moment in one transaction."""
        at = time.time() if ts is None else ts
        self.record_many([(agent, at, key, value) for key, value in rows])
        notify.stats_recorded(self.home, agent)

    def record_many(self, rows: Iterable[tuple[str, float, str, float]]) -> None:
        """Store raw `(agent, ts, key, value)` rows in one transaction (no event)."""
        with self.db.write() as conn:  # queued with the broker's writes (the same pool)
            conn.executemany("INSERT INTO stats (agent, ts, key, value) VALUES (?, ?, ?, ?)", rows)

    def record_turn(self, agent: str, report: dict, ts: float | None = None) -> int:
        """Check and store one turn report; the number of rows written."""
        keys = self.keys(agent)
        rows = turn_rows(report, _series(keys, "tool."), _series(keys, "denial."))
        self.record(agent, rows, ts)
        return len(rows)

    # -- roll-up -----------------------------------------------------------------------

    def rollup(self, settings: Telemetry, now: float | None = None) -> dict[str, int]:
        """Raw rows older than `raw_hours` become minute rows, minute rows older than
        `minute_days` hour rows; hour rows older than `hour_days` are deleted. Cut-offs
        fall on bucket edges, so a bucket is merged whole; each chunk is one transaction
        (its INSERT and DELETE see the same rows), so a crash or a second run at once
        never counts a sample twice or loses one. The rows changed per step."""
        now = time.time() if now is None else now
        with self.db.connection() as conn:
            return {
                "minute": self._merge(
                    conn, 0, MINUTE, _floor(now - settings.raw_hours * HOUR, MINUTE)
                ),
                "hour": self._merge(
                    conn, MINUTE, HOUR, _floor(now - settings.minute_days * DAY, HOUR)
                ),
                "dropped": self._drop(conn, HOUR, _floor(now - settings.hour_days * DAY, HOUR)),
            }

    # The roll-up reads rows by level and age. INDEXED BY: with statistics the planner may
    # otherwise prefer a skip-scan of stats_series; and a missing index fails loudly.
    OLDEST = "SELECT min(ts) FROM stats INDEXED BY stats_level WHERE span = :source AND ts < :end"
    MERGE = (
        "INSERT INTO stats (agent, ts, key, value, span, n, lo, hi) "
        "SELECT agent, CAST(ts / :span AS INTEGER) * :span AS bucket, key, sum(value), :span, "
        "sum(n), min(coalesce(lo, value)), max(coalesce(hi, value)) "
        "FROM stats INDEXED BY stats_level WHERE span = :source AND ts < :end "
        "GROUP BY agent, key, bucket"
    )
    DELETE = "DELETE FROM stats INDEXED BY stats_level WHERE span = :source AND ts < :end"

    def _merge(self, conn, source: int, span: int, cutoff: int) -> int:
        merged = 0
        while True:
            oldest = conn.execute(self.OLDEST, {"source": source, "end": cutoff}).fetchone()[0]
            if oldest is None:
                return merged
            step = {
                "source": source,
                "span": span,
                "end": min(cutoff, _floor(oldest, span) + ROLLUP_CHUNK),
            }
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(self.MERGE, step)
                merged += conn.execute(self.DELETE, step).rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _drop(self, conn, span: int, cutoff: int) -> int:
        conn.execute("BEGIN IMMEDIATE")
        try:
            dropped = conn.execute(self.DELETE, {"source": span, "end": cutoff}).rowcount
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return dropped

    # -- reading -----------------------------------------------------------------------

    # An agent's keys, one index seek each (a skip-scan of stats_series).
    KEYS = (
        "WITH RECURSIVE k(key) AS ("
        "SELECT (SELECT min(key) FROM stats WHERE agent = :agent) UNION ALL "
        "SELECT (SELECT min(key) FROM stats WHERE agent = :agent AND key > k.key) "
        "FROM k WHERE k.key IS NOT NULL"
        ") SELECT key FROM k WHERE key IS NOT NULL"
    )
    BUCKETS = (
        "SELECT key, CAST(ts / :step AS INTEGER) * :step AS bucket, sum(n) AS n, "
        "sum(value) AS total, min(coalesce(lo, value)) AS lo, max(coalesce(hi, value)) AS hi "
        "FROM stats WHERE agent = :agent AND key IN ({keys}) AND ts >= :since AND ts <= :until "
        "GROUP BY key, bucket"
    )
    SAMPLES = (
        "SELECT ts, span, n, value FROM stats "
        "WHERE agent = :agent AND key = :key AND ts >= :since AND ts <= :until ORDER BY ts"
    )
    LATEST = (
        "SELECT ts, span, n, value, coalesce(hi, value) AS hi FROM stats "
        "WHERE agent = :agent AND key = :key AND ts < :before ORDER BY ts DESC LIMIT 1"
    )

    @classmethod
    def buckets_sql(cls, keys: list[str]) -> str:
        return cls.BUCKETS.format(keys=", ".join(f":k{i}" for i in range(len(keys))))

    def keys(self, agent: str) -> list[str]:
        """Every key `agent` has rows of, sorted."""
        with self.reading() as conn:
            return [r[0] for r in conn.execute(self.KEYS, {"agent": agent})]

    def buckets(
        self, agent: str, since: float, until: float, step: int, keys: list[str]
    ) -> list[dict]:
        """Per key and `step`-aligned bucket from `since` to `until`: n, total, lo, hi (one
        index range of stats_series per key)."""
        if not keys:
            return []
        params = {"agent": agent, "since": since, "until": until, "step": step}
        params.update({f"k{i}": k for i, k in enumerate(keys)})
        with self.reading() as conn:
            return [dict(r) for r in conn.execute(self.buckets_sql(keys), params)]

    def samples(self, agent: str, key: str, since: float, until: float) -> list[dict]:
        """One key's rows from `since` to `until`, oldest first (for percentiles)."""
        params = {"agent": agent, "key": key, "since": since, "until": until}
        with self.reading() as conn:
            rows = conn.execute(self.SAMPLES, params)
            return [dict(r) for r in rows]

    def latest(self, agent: str, key: str, before: float = math.inf) -> dict | None:
        """The newest row of one key before a time, or None."""
        with self.reading() as conn:
            row = conn.execute(
                self.LATEST, {"agent": agent, "key": key, "before": before}
            ).fetchone()
            return dict(row) if row else None

    def reading(self) -> AbstractContextManager[sqlite3.Connection]:
        """A connection lent for the `with` block (autocommit: a statement each)."""
        return self.db.connection()

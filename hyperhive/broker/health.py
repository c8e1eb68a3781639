"""What is wrong with each agent now, and the state it adds up to.

The runtime knows whether an agent's harness (or container) runs; it does not know that
every turn fails because `claude` cannot start, or that the harness keeps crashing. The
daemon does, and records it here (table `health` in hive.db, one row per agent and kind
of problem, deleted when the problem is over), so every process (the daemon, the forge,
`hyperhive agent list`) tells the same state:

- `turn`: the last turn failed (the harness's turn report, with its error); an `ok` or
  `compact-retry` turn ends it.
- `start`: the daemon cannot start the harness; a start ends it.
- `crash`: the harness exited unasked, `count` times in this episode, at `revision`
  (the supervisor ends the episode after 10 calm minutes, a new deploy or its own stop).
- `claude`: the `claude` the agent's policy names cannot be found (checked by `hyperhive
  up` at its start and at each of its supervisor's syncs).

`derive` turns the runtime's state and these rows into the state shown everywhere:
`crash-looping` (two crashes or more in the episode), `failing` (it runs but its claude
cannot be found or its last turn failed; or it does not run because it cannot start or
just crashed), else the runtime's own (`running`, `stopped`, …), with `error`: the cause
in one line, None when there is nothing wrong.
"""

import sqlite3
import time

from hyperhive.broker.db import connect, db_path, migrate
from hyperhive.broker.messages import one_line
from hyperhive.home import Home

KINDS = ("turn", "start", "crash", "claude")
RUNNING = ("running", "up")  # the local runtime's and nixos-container's word for it
STOPPED = ("stopped", "down")
LOOPING_AT = 2  # crashes in one episode that make an agent crash-looping
MAX_ERROR = 300  # characters of the one line kept


class Health:
    def __init__(self, home: Home):
        self.home = home
        migrate(home)

    def set(
        self, agent: str, kind: str, error: str, count: int = 1, revision: str | None = None
    ) -> bool:
        """Record a problem (replacing the one of that kind); True when it is new or
        changed its error or count (worth telling the forge); the same again changes
        nothing, not even its time."""
        assert kind in KINDS, kind
        line = one_line(error, MAX_ERROR) or f"{kind} failed"
        conn = connect(self.home)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = conn.execute(
                    "SELECT error, count, revision FROM health WHERE agent = ? AND kind = ?",
                    (agent, kind),
                ).fetchone()
                changed = before is None or tuple(before) != (line, count, revision)
                if changed:  # unchanged keeps its time: since when it is so
                    conn.execute(
                        "INSERT OR REPLACE INTO health (agent, kind, error, at, count, revision)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (agent, kind, line, time.time(), count, revision),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()
        return changed

    def clear(self, agent: str | None = None, kind: str | None = None) -> bool:
        """The problem is over (every agent's with None, every kind's with None); True
        when there was one."""
        where, args = [], []
        for column, value in (("agent", agent), ("kind", kind)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "DELETE FROM health" + (f" WHERE {' AND '.join(where)}" if where else "")
        conn = connect(self.home)
        try:
            return conn.execute(sql, args).rowcount > 0
        finally:
            conn.close()

    def get(self, kind: str, agent: str) -> dict | None:
        return self.all().get(agent, {}).get(kind)

    def all(self) -> dict[str, dict[str, dict]]:
        return problems(self.home)

    def turn(self, agent: str, exit_class: object, error: object, exit_code: object) -> bool:
        """A turn report: a failure records its error, anything else ends the problem;
        True when that changed something."""
        if exit_class != "failure":
            return self.clear(agent, "turn")
        before = self.get("turn", agent)
        if not isinstance(error, str) or not error.strip():
            error = "the turn failed" + (
                f" (claude exited {exit_code})" if isinstance(exit_code, int) else ""
            )
        count = before["count"] + 1 if before else 1
        self.set(agent, "turn", error, count)
        return before is None or before["error"] != one_line(error, MAX_ERROR)


def derive(status: dict, problems: dict[str, dict] | None) -> dict:
    """The runtime's `{"state", "revision"}` with what the problems say: `state` as the
    module says, `error` (one line or None)."""
    problems = problems or {}
    state, revision = status.get("state"), status.get("revision")
    out = {**status, "error": None}
    if state not in (*RUNNING, *STOPPED):  # not deployed, destroyed, unknown: no harness
        return out
    crash = problems.get("crash")
    if crash and crash["revision"] not in (None, revision):
        crash = None  # a crash of the revision before: a new deploy starts afresh
    if crash and crash["count"] >= LOOPING_AT:
        return {**out, "state": "crash-looping", "error": crash["error"]}
    running = state in RUNNING
    causes = ("claude", "turn") if running else ("start", "crash")
    for kind in causes:
        if kind in problems and (kind != "crash" or crash):
            return {**out, "state": "failing", "error": problems[kind]["error"]}
    return out


def problems(home: Home) -> dict[str, dict[str, dict]]:
    """agent → kind → {"error", "at", "count", "revision"}: a plain read, no migration
    (each listing of the agents reads it); nothing when hive.db has no such table yet."""
    if not db_path(home).exists():
        return {}
    conn = connect(home)
    try:
        rows = conn.execute("SELECT * FROM health ORDER BY agent, kind").fetchall()
    except sqlite3.OperationalError as e:
        if "no such table" not in str(e):
            raise
        return {}  # a hive.db no daemon of this version has opened yet
    finally:
        conn.close()
    out: dict[str, dict[str, dict]] = {}
    for r in rows:
        out.setdefault(r["agent"], {})[r["kind"]] = {
            "error": r["error"],
            "at": r["at"],
            "count": r["count"],
            "revision": r["revision"],
        }
    return out

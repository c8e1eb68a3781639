"""Group commit: rows inserted by many threads at once share one transaction, so one WAL
fsync (`synchronous = FULL`, broker/db.py) acknowledges them all.

A thread that finds no transaction being written writes one with every row queued so far
(up to `limit`); threads whose rows arrive meanwhile wait for it to end, and the first of
them then writes the next with all of theirs. Nobody waits for a timer or a background
thread: a lone sender commits at once, as before, and N senders at once pay one fsync
between them instead of N in a row. Each `insert` returns only after the transaction
holding its row committed, so an acknowledged row is on disk. Rows are written in the
order they were queued, so one sender's rows keep their order (their ids grow).
"""

import threading
from collections.abc import Sequence

from hyperhive.broker.db import Pool

MAX_GROUP = 256  # rows in one transaction: bounds how long one commit holds the write lock


class _Row:
    __slots__ = ("values", "id", "error", "done")

    def __init__(self, values: Sequence[object]):
        self.values = values
        self.id: int | None = None
        self.error: BaseException | None = None
        self.done = False


class GroupCommit:
    """`insert_many(rows)` runs `sql` (an INSERT with one `?` per value) for each row, in
    transactions shared with whatever other threads insert at that moment, and gives each
    row's new id (several rows at once: one connection's pipelined sends)."""

    def __init__(self, pool: Pool, sql: str, limit: int = MAX_GROUP):
        if limit < 1:
            raise ValueError(f"a group holds at least one row, not {limit}")
        self.pool, self.sql, self.limit = pool, sql, limit
        self._cond = threading.Condition()
        self._queue: list[_Row] = []
        self._busy = False  # a thread is writing a group
        self.groups = 0  # transactions written (for tests and the bench)

    def insert_many(self, rows: Sequence[Sequence[object]]) -> list[int | BaseException]:
        """Insert `rows` in order, in as few transactions as the limit allows (shared with
        whatever other threads insert meanwhile); each row's id, or the error that rolled
        its transaction back. Returns once every row's transaction ended."""
        mine = [_Row(values) for values in rows]
        if not mine:
            return []
        last = mine[-1]  # groups are written in queue order: the last done, all are
        with self._cond:  # one acquisition to queue the rows and, when free, lead
            self._queue.extend(mine)
            while True:
                while self._busy and not last.done:
                    self._cond.wait()
                if last.done:
                    break
                self._busy = True  # this thread writes the next group
                group = self._queue[: self.limit]
                del self._queue[: self.limit]
                self._cond.release()  # the write happens outside: others queue meanwhile
                try:
                    self._write(group)
                finally:
                    self._cond.acquire()
                    self._busy = False
                    self._cond.notify_all()  # the group's senders, and the next leader
        results: list[int | BaseException] = []
        for row in mine:
            assert row.error is not None or row.id is not None
            results.append(row.error if row.error is not None else row.id)
        return results

    def _write(self, group: list[_Row]) -> None:
        """One transaction for `group`; every row of it ends done, with its id or with the
        error that rolled the transaction back (none of them was stored)."""
        try:
            with self.pool.write(begin=len(group) > 1) as conn:  # a lone row: its own
                ids = [conn.execute(self.sql, row.values).lastrowid for row in group]
        except BaseException as e:  # each waiting sender gets it, and the writer too
            for row in group:
                row.error, row.done = e, True
        else:
            for row, row_id in zip(group, ids, strict=True):
                row.id, row.done = row_id, True
        self.groups += 1

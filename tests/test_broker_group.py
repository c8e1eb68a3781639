"""Group commit of sends (broker/group.py) and the pool's write transactions (broker/db.py),
on a real hive.db: what meets shares one commit, what is acknowledged is stored, a failed
group stores none of its rows and tells each of its senders."""

import sqlite3
import threading

import pytest
from support.wait import wait_for

from hyperhive.broker import db
from hyperhive.broker.group import GroupCommit
from hyperhive.broker.messages import Broker
from hyperhive.errors import BadInput, UnknownAgent
from hyperhive.home import Home


@pytest.fixture
def hive(home):
    return home  # initialized: the manager is an agent to send to


@pytest.fixture
def scratch(tmp_path):
    """A home with nothing but a hive.db to come (for the pool alone)."""
    return Home(tmp_path)


def stored(home, sql: str) -> list[tuple]:
    """Rows as another connection sees them: what was committed, nothing in flight."""
    conn = sqlite3.connect(db.db_path(home))
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def queued_behind_a_held_lock(group: GroupCommit, rows: list[tuple]) -> tuple[list, list]:
    """Insert `rows` from a thread each while the pool's write lock is held: the first
    thread takes its own row and waits for the lock; the rest queue behind it. Then let go.
    Each row's outcome: (id or None, error or None)."""
    ids, errors = [None] * len(rows), [None] * len(rows)

    def insert(i: int) -> None:
        (result,) = group.insert_many([rows[i]])
        if isinstance(result, BaseException):
            errors[i] = result
        else:
            ids[i] = result

    threads = [threading.Thread(target=insert, args=(i,)) for i in range(len(rows))]
    with group.pool._writing:
        threads[0].start()
        wait_for(lambda: group._busy, what="the first insert to lead")
        for i, t in enumerate(threads[1:], start=1):
            t.start()
            wait_for(lambda i=i: len(group._queue) == i, what=f"insert {i} queued")
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    return ids, errors


def test_sends_that_meet_share_one_commit_and_keep_their_order(hive):
    broker = Broker(hive)
    rows = [("operator", "manager", f"m{i}", 0.0) for i in range(20)]
    ids, errors = queued_behind_a_held_lock(broker._sends, rows)
    assert errors == [None] * 20
    assert broker._sends.groups == 2  # the leader's own row, then the 19 that queued
    assert ids == sorted(ids) and len(set(ids)) == 20  # queue order is id order
    assert stored(hive, "SELECT id, body FROM messages ORDER BY id") == [
        (i, f"m{n}") for n, i in enumerate(ids)
    ]
    assert [m["body"] for m in broker.recv("manager")] == [f"m{i}" for i in range(20)]


def test_a_lone_send_commits_at_once_and_is_stored_when_acknowledged(hive):
    broker = Broker(hive)
    for i in range(3):
        message_id = broker.send("operator", "manager", f"alone {i}")
        assert stored(hive, f"SELECT body FROM messages WHERE id = {message_id}") == [
            (f"alone {i}",)
        ]
    assert broker._sends.groups == 3


def test_a_failed_group_stores_none_of_its_rows_and_tells_each_sender(scratch):
    hive = scratch
    pool = db.Pool(hive)
    with pool.connection() as conn:
        conn.execute("CREATE TABLE names (id INTEGER PRIMARY KEY, name TEXT UNIQUE)")
    group = GroupCommit(pool, "INSERT INTO names (name) VALUES (?)")
    ids, errors = queued_behind_a_held_lock(group, [("x",), ("y",), ("x",)])
    assert errors[0] is None and ids[0] is not None  # the leader's own group: x
    assert all(isinstance(e, sqlite3.IntegrityError) for e in errors[1:])  # y and x again
    assert stored(hive, "SELECT name FROM names") == [("x",)]  # y went with its group
    assert group.insert_many([("y",)]) == [ids[0] + 1]  # the pool and the group still work
    pool.close()


def test_a_group_is_bounded(scratch):
    pool = db.Pool(scratch)
    with pool.connection() as conn:
        conn.execute("CREATE TABLE n (id INTEGER PRIMARY KEY, v INTEGER)")
    group = GroupCommit(pool, "INSERT INTO n (v) VALUES (?)", limit=3)
    ids, errors = queued_behind_a_held_lock(group, [(i,) for i in range(8)])
    assert errors == [None] * 8 and ids == sorted(ids)
    assert group.groups == 4  # 1, then the 7 queued in groups of at most 3: 3, 3, 1
    with pytest.raises(ValueError):
        GroupCommit(pool, "INSERT INTO n (v) VALUES (?)", limit=0)
    pool.close()


def test_connections_commit_with_synchronous_full(hive):
    """FULL: a commit returns after the WAL is fsynced. A write that asks for NORMAL (the
    delivery marks) gets it for its own commit only."""
    broker = Broker(hive)
    broker.send("operator", "manager", "hello")
    assert broker.recv("manager")  # a write with synced=False
    (conn,) = broker.db._idle
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with broker.db.write(synced=False) as conn:
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    with pytest.raises(RuntimeError), broker.db.write(synced=False) as conn:
        raise RuntimeError("a block that fails")
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert not conn.in_transaction


def test_a_connections_pipelined_sends_share_one_commit_and_fail_alone(hive):
    """Broker.send_many (an agent socket's pipelined sends): the ones that pass the checks
    are stored in one transaction, in order; a refused one is refused alone."""
    broker = Broker(hive)
    before = broker._sends.groups
    results = broker.send_many(
        "operator",
        [("manager", "one"), ("nobody", "lost"), ("manager", ""), ("manager", "two")],
    )
    assert broker._sends.groups == before + 1
    first, unknown, empty, second = results
    assert isinstance(unknown, UnknownAgent) and isinstance(empty, BadInput)
    assert second == first + 1
    assert stored(hive, "SELECT id, body FROM messages ORDER BY id") == [
        (first, "one"),
        (second, "two"),
    ]
    assert broker.send_many("operator", []) == []
    assert broker.send_many("operator", [("nobody", "x")])[0].__class__ is UnknownAgent


def test_a_batch_over_the_limit_is_written_in_groups_of_it_in_order(scratch):
    db.migrate(scratch)
    pool = db.Pool(scratch)
    group = GroupCommit(
        pool, "INSERT INTO messages (sender, recipient, body, created_at) VALUES (?, ?, ?, ?)", 4
    )
    ids = group.insert_many([("a", "b", f"m{i}", 0.0) for i in range(10)])
    assert group.groups == 3 and ids == sorted(ids) and len(set(ids)) == 10
    assert [b for (b,) in stored(scratch, "SELECT body FROM messages ORDER BY id")] == [
        f"m{i}" for i in range(10)
    ]
    pool.close()

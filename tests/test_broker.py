"""The broker and operator questions on a real hive.db."""

import sqlite3
import threading
import time

import pytest

from hyperhive.agents import create_agent
from hyperhive.broker import db, questions
from hyperhive.broker.messages import MAX_WAIT, Broker, PolicyRefused, check_wait
from hyperhive.errors import AlreadyDecided, BadInput, UnknownAgent


@pytest.fixture
def hive(home, runtime):
    for name in ("alice", "bob"):
        create_agent(home, name, runtime, "operator")
    return home


@pytest.fixture
def broker(hive):
    policies = {"alice": {"allowedRecipients": ["bob", "operator"]}}
    return Broker(hive, lambda name: policies.get(name, {"allowedRecipients": None}))


def test_schema_is_versioned_and_in_wal_mode(broker, hive):
    conn = sqlite3.connect(db.db_path(hive))
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(db.MIGRATIONS)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.migrate(hive) == len(db.MIGRATIONS)  # idempotent


def test_rows_written_before_a_new_column_still_list(hive):
    """Regression: a pending question must survive a migration that adds a column."""
    db.migrate(hive, db.MIGRATIONS)
    broker = Broker(hive)
    qid = questions.ask(broker, "manager", "deploy on friday?", ["yes", "no"])
    added = [*db.MIGRATIONS, ["ALTER TABLE questions ADD COLUMN deadline_at REAL"]]
    assert db.migrate(hive, added) == len(added)
    (q,) = questions.pending(broker)
    assert (q["id"], q["question"], q["options"]) == (qid, "deploy on friday?", ["yes", "no"])


def test_recv_without_wait_returns_at_once(broker):
    assert broker.recv("bob") == []
    assert broker.recv("bob", 0) == []
    broker.send("alice", "bob", "hi")
    (m,) = broker.recv("bob")
    assert (m["from"], m["to"], m["body"]) == ("alice", "bob", "hi")
    assert broker.recv("bob") == []  # delivered exactly once


def test_long_poll_is_woken_by_a_send(broker):
    got = {}

    def reader():
        started = time.monotonic()
        got["messages"] = broker.recv("bob", 30)
        got["took"] = time.monotonic() - started

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.2)
    assert t.is_alive()  # really waiting
    broker.send("manager", "bob", "wake up")
    t.join(timeout=10)
    assert not t.is_alive()
    assert [m["body"] for m in got["messages"]] == ["wake up"]
    assert got["took"] < 30  # woken by the send, not by the timeout


def test_long_poll_times_out_empty(broker):
    assert broker.recv("bob", 0.2) == []


@pytest.mark.parametrize(("given", "expected"), [(None, 0), (0, 0), (2.5, 2.5), (1000, MAX_WAIT)])
def test_wait_is_capped(given, expected):
    assert check_wait(given) == expected


@pytest.mark.parametrize("bad", [-1, -0.5, "10", True, [], float("nan")])
def test_bad_waits_are_clear_errors(broker, bad):
    with pytest.raises(BadInput, match="wait_seconds"):
        broker.recv("bob", bad)


def test_policy_refuses_and_names_the_policy(broker):
    with pytest.raises(PolicyRefused, match=r"allowedRecipients = \["):
        broker.send("alice", "manager", "let me out")
    broker.send("alice", "bob", "allowed")
    broker.send("alice", "operator", "allowed too")
    broker.send("manager", "alice", "the manager may always send")
    broker.send("bob", "alice", "no policy: unrestricted")
    assert [m["body"] for m in broker.recv("alice")] == [
        "the manager may always send",
        "no policy: unrestricted",
    ]


@pytest.mark.parametrize(
    ("to", "body", "error"),
    [
        ("ghost", "x", UnknownAgent),
        ("bob", "", BadInput),
        ("bob", None, BadInput),
        (None, "x", BadInput),
    ],
)
def test_bad_sends(broker, to, body, error):
    with pytest.raises(error):
        broker.send("manager", to, body)


def test_inbox_peeks_and_requeue_hands_back(broker):
    broker.send("manager", "bob", "one")
    assert [m["body"] for m in broker.inbox("bob")] == ["one"]
    taken = broker.recv("bob")
    assert broker.inbox("bob") == []
    broker.requeue([m["id"] for m in taken])
    assert [m["body"] for m in broker.recv("bob")] == ["one"]


def test_questions_flow(broker):
    qid = questions.ask(broker, "manager", "which model?", ["small", "large"])
    assert [q["id"] for q in questions.pending(broker)] == [qid]
    questions.answer(broker, qid, "large", "alice")
    assert questions.pending(broker) == []
    (m,) = broker.recv("manager")
    assert m["from"] == "operator" and "large" in m["body"] and f"#{qid}" in m["body"]
    with pytest.raises(AlreadyDecided, match="already answered by alice"):
        questions.answer(broker, qid, "small", "bob")
    with pytest.raises(Exception, match="unknown question 99"):
        questions.answer(broker, 99, "x", "bob")
    with pytest.raises(BadInput):
        questions.ask(broker, "manager", "  ")
    with pytest.raises(BadInput):
        questions.ask(broker, "manager", "q", "not a list")


def test_concurrent_senders_deliver_exactly_once_in_order(broker):
    senders = ["manager", "alice", "bob"] * 3 + ["operator"]
    received: list[dict] = []
    done = threading.Event()

    def reader():
        while not done.is_set() or broker.inbox("operator"):
            received.extend(broker.recv("operator", 0.2))

    def writer(i: int, sender: str):
        for n in range(100):
            broker.send(sender, "operator", f"{i}:{n}")

    r = threading.Thread(target=reader)
    r.start()
    writers = [threading.Thread(target=writer, args=(i, s)) for i, s in enumerate(senders)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    done.set()
    r.join(timeout=30)
    bodies = [m["body"] for m in received]
    assert len(bodies) == len(set(bodies)) == 1000
    for i in range(len(senders)):
        mine = [int(b.split(":")[1]) for b in bodies if b.split(":")[0] == str(i)]
        assert mine == list(range(100))


def test_recv_hands_out_bounded_batches(broker):
    from hyperhive.broker.messages import MAX_BATCH

    for n in range(MAX_BATCH + 5):
        broker.send("manager", "bob", f"m{n}")
    first = broker.recv("bob")
    second = broker.recv("bob")
    assert len(first) == MAX_BATCH and len(second) == 5
    assert [m["body"] for m in first + second] == [f"m{n}" for n in range(MAX_BATCH + 5)]


def test_close_releases_waiting_readers(broker):
    result = {}
    t = threading.Thread(target=lambda: result.update(r=broker.recv("bob", 60)))
    t.start()
    time.sleep(0.2)
    broker.close()
    t.join(timeout=10)
    assert result["r"] == [] and not t.is_alive()
    broker.send("manager", "bob", "kept for the next daemon")
    assert broker.recv("bob") == []  # a closing broker hands nothing out
    assert [m["body"] for m in Broker(broker.home).recv("bob")] == ["kept for the next daemon"]

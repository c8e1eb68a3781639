"""The broker and operator questions on a real hive.db."""

import sqlite3
import threading
import time

import pytest

from hyperhive.agents import create_agent
from hyperhive.broker import db, questions
from hyperhive.broker.messages import MAX_WAIT, Broker, PolicyRefused, check_wait
from hyperhive.errors import AlreadyDecided, BadInput, UnknownAgent


def wait_for(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


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


def test_a_send_wakes_only_its_recipients_reader(broker, monkeypatch):
    """A recv waits on its own inbox: sends to others never make it look again."""
    looks = {"bob": 0}
    take = broker._take

    def counting(name, lease):
        looks[name] = looks.get(name, 0) + 1
        return take(name, lease)

    monkeypatch.setattr(broker, "_take", counting)
    got = {}
    t = threading.Thread(target=lambda: got.update(m=broker.recv("bob", 30)))
    t.start()
    wait_for(lambda: looks["bob"] == 1 and "bob" in broker._inboxes)
    for i in range(50):
        broker.send("manager", "alice", f"not for bob {i}")
    broker.send("manager", "bob", "for bob")
    t.join(timeout=10)
    assert [m["body"] for m in got["m"]] == ["for bob"]
    assert looks["bob"] == 2  # the first look, and the one its own message woke


def test_a_wake_from_another_process_reaches_every_reader(broker):
    """`wake()` with no names (the daemon's `wake` op): any inbox may have changed."""
    got = {}
    t = threading.Thread(target=lambda: got.update(m=broker.recv("bob", 30)))
    t.start()
    wait_for(lambda: "bob" in broker._inboxes)
    Broker(broker.home).send("manager", "bob", "written elsewhere")  # not this broker's send
    broker.wake()
    t.join(timeout=10)
    assert [m["body"] for m in got["m"]] == ["written elsewhere"]


def test_connections_are_kept_open_and_reused(broker, hive):
    """The pool lends one connection per operation and keeps it: the WAL is not
    checkpointed away between sends, and no connection is left inside a transaction."""
    for i in range(20):
        broker.send("manager", "bob", f"m{i}")
    assert len(broker.recv("bob")) == 20
    assert (hive.root / "hive.db-wal").exists()  # a closed last connection deletes it
    assert len(broker.db._idle) == 1  # one thread at a time: one connection did it all
    (conn,) = broker.db._idle
    with pytest.raises(BadInput):
        broker.ack("bob", [10**6])  # raises inside the pool's `with`
    assert broker.db._idle == [conn] and not conn.in_transaction


def test_the_pool_keeps_a_bounded_number_of_idle_connections(hive):
    pool = db.Pool(hive, keep=2)
    with pool.connection() as a, pool.connection() as b, pool.connection() as c:
        assert len({id(a), id(b), id(c)}) == 3
    assert len(pool._idle) == 2
    with pytest.raises(sqlite3.OperationalError), pool.connection() as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("SELECT * FROM no_such_table")
    assert conn not in pool._idle  # an errored connection is closed, not kept
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")
    pool.close()
    assert pool._idle == []


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
    for huge in (2**63, -(2**63) - 1):  # beyond sqlite's integers: as unknown as 99
        with pytest.raises(questions.UnknownQuestion, match=f"unknown question {huge}"):
            questions.answer(broker, huge, "x", "bob")
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


# -- the harness's leased recv: ack, release ----------------------------------------------


def leased(hive) -> dict[int, int]:
    conn = sqlite3.connect(db.db_path(hive))
    try:
        return dict(conn.execute("SELECT id, leased FROM messages ORDER BY id"))
    finally:
        conn.close()


def test_a_lease_not_acknowledged_is_released_in_order(broker, hive):
    broker.send("alice", "bob", "a1")
    broker.send("manager", "bob", "m1")
    broker.send("alice", "bob", "a2")
    broker.send("manager", "alice", "not bob's")
    taken = broker.recv("bob", lease=True)
    assert [m["body"] for m in taken] == ["a1", "m1", "a2"]
    assert broker.inbox("bob") == [] and broker.recv("bob") == []  # delivered, not in the inbox
    # but still waiting (for stuck detection): a harness that died holding them gets them back
    assert broker.waiting(["bob"])["bob"] == (3, taken[0]["time"])
    broker.send("alice", "bob", "a3")  # sent after the lease: stays after it
    assert broker.release("bob") == 3
    again = broker.recv("bob", lease=True)
    assert [m["body"] for m in again] == ["a1", "m1", "a2", "a3"]
    assert [m["id"] for m in again[:3]] == [m["id"] for m in taken]
    assert broker.ack("bob", [m["id"] for m in again]) == 4
    assert broker.release("bob") == 0 and broker.recv("bob") == []
    assert set(leased(hive).values()) == {0}
    assert broker.waiting(["bob"])["bob"] == (0, None)  # acknowledged: handled
    assert [m["body"] for m in broker.recv("alice")] == ["not bob's"]  # untouched


def test_release_touches_only_its_agent_and_only_unacknowledged_leases(broker, hive):
    mine = broker.send("manager", "bob", "bob's, leased")
    kept = broker.send("manager", "bob", "bob's, acknowledged")
    other = broker.send("manager", "alice", "alice's, leased")
    broker.recv("bob", lease=True)
    assert broker.ack("bob", [kept]) == 1
    broker.recv("alice", lease=True)
    assert broker.release("bob") == 1
    assert leased(hive) == {mine: 0, kept: 0, other: 1}
    assert [m["id"] for m in broker.recv("bob")] == [mine]
    assert broker.release("alice") == 1


def test_ack_is_idempotent_and_a_plain_recv_leases_nothing(broker, hive):
    plain = broker.send("manager", "bob", "read by a tool call")
    (m,) = broker.recv("bob")  # the MCP tool's recv
    assert m["id"] == plain and leased(hive) == {plain: 0}
    assert broker.ack("bob", [plain]) == 0  # nothing to acknowledge
    assert broker.release("bob") == 0 and broker.recv("bob") == []
    lease = broker.send("manager", "bob", "read by the harness")
    broker.recv("bob", lease=True)
    assert broker.ack("bob", [lease]) == 1
    assert broker.ack("bob", [lease]) == 0  # a retried ack whose reply was lost
    assert broker.ack("bob", []) == 0
    assert broker.release("bob") == 0


def test_an_ack_of_ids_not_ones_own_is_refused_whole(broker, hive):
    own = broker.send("manager", "bob", "bob's")
    foreign = broker.send("manager", "alice", "alice's")
    broker.recv("bob", lease=True)
    broker.recv("alice", lease=True)
    with pytest.raises(BadInput, match=rf"not messages to bob: #{foreign}, #9999$"):
        broker.ack("bob", [own, 9999, foreign])
    assert leased(hive) == {own: 1, foreign: 1}  # nothing acknowledged, alice's included
    for bad in (None, own, [str(own)], [True], [1.5], {"ids": [own]}):
        with pytest.raises(BadInput, match="ack needs a list of message ids"):
            broker.ack("bob", bad)
    from hyperhive.broker.messages import MAX_BATCH

    with pytest.raises(BadInput, match=f"at most {MAX_BATCH} ids"):
        broker.ack("bob", list(range(1, MAX_BATCH + 2)))
    assert broker.ack("bob", [own]) == 1


def test_a_release_wakes_a_waiting_recv(broker):
    broker.send("manager", "bob", "back again")
    broker.recv("bob", lease=True)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=broker.recv("bob", 30, lease=True)))
    t.start()
    time.sleep(0.2)
    assert t.is_alive()  # nothing to take while the lease holds
    assert broker.release("bob") == 1
    t.join(timeout=10)
    assert [m["body"] for m in result["r"]] == ["back again"]


def test_a_requeued_leased_reply_is_no_longer_leased(broker, hive):
    """A leased recv whose reply could not be written (the daemon's `unsent`) goes back to
    the inbox whole: a plain recv may take it, and no later release takes it back."""
    mid = broker.send("manager", "bob", "unsent")
    broker.requeue([m["id"] for m in broker.recv("bob", lease=True)])
    assert leased(hive) == {mid: 0}
    assert [m["body"] for m in broker.recv("bob")] == ["unsent"]
    assert broker.release("bob") == 0 and broker.recv("bob") == []


def test_messages_stored_before_the_lease_column_are_not_leased(hive):
    db.migrate(hive, db.MIGRATIONS[:5])  # before the lease column (migration 6)
    conn = db.connect(hive)
    conn.execute(
        "INSERT INTO messages (sender, recipient, body, created_at, delivered_at) "
        "VALUES ('manager', 'bob', 'old, delivered', 1.0, 2.0), "
        "('manager', 'bob', 'old, waiting', 1.0, NULL)"
    )
    conn.close()
    broker = Broker(hive)  # migrates
    assert broker.release("bob") == 0
    assert [m["body"] for m in broker.recv("bob", lease=True)] == ["old, waiting"]
    assert broker.release("bob") == 1

"""The daemon's per-agent sockets: identity, roles, the broker through them, bad lines."""

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from support.daemon import Daemon
from support.hive import run_cli
from support.wait import wait_for

from hyperhive.daemon import hostsock
from hyperhive.errors import HiveError
from hyperhive.wire.ops import OPS, tools_for


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("agentsock") / "hive"
    run_cli(root, "init", check=True)
    run_cli(root, "agent", "create", "alice", check=True)
    d = Daemon(root).start()
    wait_for(lambda: (root / "run" / "agents" / "alice" / "agent.sock").exists(), what="alice")
    yield d
    d.stop()


def sock(daemon, name):
    return daemon.root / "run" / "agents" / name / "agent.sock"


def call(daemon, agent, **request):
    return hostsock.call(sock(daemon, agent), request, timeout=60)


def test_sockets_are_private_and_say_who_you_are(daemon):
    assert sock(daemon, "alice").stat().st_mode & 0o777 == 0o600
    me = call(daemon, "alice", op="whoami")
    assert (me["name"], me["role"], me["tools"]) == ("alice", "agent", tools_for("agent"))
    assert me["policy"]["allowedRecipients"] is None
    boss = call(daemon, "manager", op="whoami")
    assert (boss["role"], boss["tools"]) == ("manager", tools_for("manager"))


def test_manager_tools_are_refused_on_an_agent_socket(daemon):
    for op in ("ask_operator", "request_spawn", "approvals", "agent_history"):
        with pytest.raises(HiveError, match="manager-only; this socket belongs to alice"):
            call(daemon, "alice", op=op, name="bob", question="q")


def test_identity_comes_from_the_socket_not_the_request(daemon):
    call(daemon, "alice", op="send", to="manager", body="hello", **{"from": "operator"})
    (m,) = call(daemon, "manager", op="recv")["messages"]
    assert (m["from"], m["body"]) == ("alice", "hello")


def test_recv_wakes_on_a_send_from_another_socket(daemon):
    result = {}

    def waiter():
        result["r"] = call(daemon, "alice", op="recv", wait_seconds=30)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.3)
    assert t.is_alive()
    call(daemon, "manager", op="send", to="alice", body="ping")
    t.join(timeout=20)
    assert [m["body"] for m in result["r"]["messages"]] == ["ping"]


def test_cli_send_wakes_a_waiting_recv(daemon):
    result = {}
    t = threading.Thread(
        target=lambda: result.update(r=call(daemon, "alice", op="recv", wait_seconds=30))
    )
    t.start()
    time.sleep(0.3)
    run_cli(daemon.root, "send", "operator", "alice", "from the shell", check=True)
    t.join(timeout=20)
    assert [m["body"] for m in result["r"]["messages"]] == ["from the shell"]


def test_ask_operator_and_answer(daemon):
    qid = call(daemon, "manager", op="ask_operator", question="ship it?", options=["yes", "no"])[
        "id"
    ]
    listed = json.loads(run_cli(daemon.root, "questions", "--json", check=True).stdout)
    assert [q["id"] for q in listed] == [qid]
    run_cli(daemon.root, "answer", str(qid), "yes", check=True)
    (m,) = call(daemon, "manager", op="recv", wait_seconds=10)["messages"]
    assert m["from"] == "operator" and "yes" in m["body"]


@pytest.mark.parametrize(
    "line",
    [
        b"{nope\n",
        b"\xff\xfe\n",
        b"[]\n",
        b'{"op": "recv", "wait_seconds": -1}\n',
        b'{"op": 7}\n',
        b"[" * 100_000 + b"]" * 100_000 + b"\n",  # too deep for json's recursion
    ],
    ids=["json", "utf8", "array", "wait", "op", "deep"],
)
def test_bad_lines_get_errors_and_the_socket_keeps_serving(daemon, line):
    with socket.socket(socket.AF_UNIX) as s, s.makefile("rwb") as f:
        s.connect(str(sock(daemon, "alice")))
        f.write(line)
        f.flush()
        reply = json.loads(f.readline())
        assert reply["ok"] is False and reply["error"]
        f.write(b'{"op": "whoami"}\n')
        f.flush()
        assert json.loads(f.readline())["name"] == "alice"


def test_oversized_line_is_refused(daemon):
    with socket.socket(socket.AF_UNIX) as s, s.makefile("rwb") as f:
        s.connect(str(sock(daemon, "alice")))
        f.write(b'{"op": "send", "body": "' + b"x" * (2 << 20) + b'"}\n')
        f.flush()
        reply = json.loads(f.readline())
        assert reply["ok"] is False and "over" in reply["error"]
        f.write(b'{"op": "whoami"}\n')
        f.flush()
        assert json.loads(f.readline())["ok"] is True


def test_a_recv_of_many_large_messages_fits_the_harness_reply_line(daemon):
    """The harness reads recv replies with hostsock.call (1 MiB lines): a full inbox of
    large (and JSON-escaping-heavy) bodies comes in several replies, none lost."""
    from hyperhive.broker.messages import MAX_BODY

    bodies = [f"{n:02d}" + "x" * (60 << 10) for n in range(20)]
    bodies += [f"{n:02d}" + "\x01" * (MAX_BODY - 2) for n in range(20, 24)]
    for body in bodies:
        call(daemon, "manager", op="send", to="alice", body=body)
    got = []
    while batch := call(daemon, "alice", op="recv")["messages"]:
        got += [m["body"] for m in batch]
    assert got == bodies


def test_a_new_agent_gets_a_socket(daemon):
    run_cli(daemon.root, "agent", "create", "carol", check=True)
    wait_for(lambda: sock(daemon, "carol").exists(), what="carol.sock")
    assert call(daemon, "carol", op="whoami")["name"] == "carol"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a socket to another user needs root")
def test_a_socket_follows_the_owner_of_its_agents_state(home):
    """A user-namespaced container's harness runs as its `agent` user, which owns the
    state once the runtime chowned it: the 0600 socket must be that user's too."""
    from hyperhive.broker.messages import Broker
    from hyperhive.daemon.agentsock import AgentSockets
    from hyperhive.daemon.ops import Ops
    from hyperhive.hive import Hive

    sockets = AgentSockets(home, Ops(Hive(home, runtime=None), Broker(home), None))
    try:
        sockets.sync()
        path = home.agent_socket("manager")
        assert (path.stat().st_uid, path.stat().st_gid) == (0, 0)
        base = 524288
        os.chown(home.state_dir("manager"), base + 1000, base + 100)
        sockets.sync()
        assert (path.stat().st_uid, path.stat().st_gid) == (base + 1000, base + 100)
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        sockets.stop()


def test_the_harness_leases_acks_and_releases_over_the_socket(daemon):
    """The harness's ops: a leased recv whose reply was read but never acknowledged (the
    harness died before writing it down) is handed back by `release`; an MCP-style recv
    leases nothing. None of them is an MCP tool."""
    HARNESS_OPS = [op.name for op in OPS.values() if "agent" in op.callers and not op.tool]
    assert {"ack", "release"} <= set(HARNESS_OPS)
    assert not set(HARNESS_OPS) & set(call(daemon, "alice", op="whoami")["tools"])
    while call(daemon, "alice", op="recv")["messages"]:  # what other tests left
        pass
    assert call(daemon, "alice", op="release")["released"] == 0
    first = call(daemon, "manager", op="send", to="alice", body="lost with a harness")["id"]
    (m,) = call(daemon, "alice", op="recv", lease=True)["messages"]
    assert m["id"] == first  # read, then the reader is gone: no ack
    assert call(daemon, "alice", op="recv")["messages"] == []
    assert call(daemon, "alice", op="release")["released"] == 1
    (again,) = call(daemon, "alice", op="recv", wait_seconds=5, lease=True)["messages"]
    assert again == m
    with pytest.raises(HiveError, match="not messages to manager"):
        call(daemon, "manager", op="ack", ids=[first])
    with pytest.raises(HiveError, match="ack needs a list of message ids"):
        call(daemon, "alice", op="ack", ids=first)
    with pytest.raises(HiveError, match="lease must be true or false, not 'yes'"):
        call(daemon, "alice", op="recv", lease="yes")
    assert call(daemon, "alice", op="ack", ids=[first]) == {"ok": True, "acked": 1}
    assert call(daemon, "alice", op="release")["released"] == 0

    # the MCP tool's recv: delivered for good, nothing to acknowledge or release
    plain = call(daemon, "manager", op="send", to="alice", body="read by a tool")["id"]
    assert [m["id"] for m in call(daemon, "alice", op="recv")["messages"]] == [plain]
    assert call(daemon, "alice", op="ack", ids=[plain])["acked"] == 0
    assert call(daemon, "alice", op="release")["released"] == 0
    assert call(daemon, "alice", op="recv")["messages"] == []


def test_a_socket_caps_its_connections_and_closes_idle_ones(tmp_path):
    release = threading.Event()
    path = tmp_path / "s.sock"
    server = hostsock.HostSocket(
        path, lambda request: {"released": release.wait(10)}, max_connections=3, idle_seconds=0.5
    )
    server.start()
    held = []
    try:
        for _ in range(3):  # three requests in flight: every connection taken
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(path))
            s.sendall(b'{"op": "recv"}\n')
            held.append(s)
        with socket.socket(socket.AF_UNIX) as extra, extra.makefile("rb") as f:
            extra.connect(str(path))
            refused = json.loads(f.readline())
            assert refused == {"ok": False, "error": "over 3 connections open"}
            assert f.readline() == b""  # and closed
        release.set()
        for s in held:
            s.settimeout(30)
            with s.makefile("rb") as f:
                assert json.loads(f.readline()) == {"ok": True, "released": True}
                assert f.readline() == b""  # then closed: it sent nothing more
        assert hostsock.call(path, {"op": "ping"}) == {"ok": True, "released": True}
    finally:
        for s in held:
            s.close()
        server.stop()


def test_the_manager_drafts_an_agent_and_writes_its_initial_state(daemon):
    draft = call(daemon, "manager", op="request_spawn_draft", name="scout")
    assert draft == {"ok": True, "name": "scout", "remote": "scout/config.git"}  # no host path
    wrote = call(
        daemon, "manager", op="draft_write_state", name="scout", path="notes.md", content="hi\n"
    )
    assert wrote == {"ok": True, "name": "scout", "path": "notes.md", "bytes": 3}
    assert (daemon.root / "agents" / "scout" / "state" / "notes.md").read_text() == "hi\n"
    with pytest.raises(HiveError, match="'..'"):
        call(daemon, "manager", op="draft_write_state", name="scout", path="../x", content="")
    with pytest.raises(HiveError, match="manager-only; this socket belongs to alice"):
        call(daemon, "alice", op="draft_write_state", name="scout", path="n", content="x")
    again = call(daemon, "manager", op="request_init_config", name="scout")
    assert again == {"ok": True, "name": "scout", "remote": "scout/config.git"}


def switches(thread: threading.Thread) -> int:
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    (line,) = [x for x in status.splitlines() if x.startswith("voluntary_ctxt_switches:")]
    return int(line.split()[1])


def test_an_idle_socket_sleeps_in_accept_and_stops_at_once(tmp_path):
    """One socket per agent: an idle one must cost nothing (a poll loop woke each one 20
    times a second), and stopping it must not wait for a poll either."""
    server = hostsock.HostSocket(tmp_path / "idle.sock", lambda request: {"pong": True})
    server.start()
    try:
        assert hostsock.call(server.path, {"op": "ping"})["pong"]
        # What is measured is that nothing wakes the acceptor in a quiet window. Right after
        # the ping it may still be handing the connection over (a busy machine delays it):
        # one quiet window of a few is the proof, where a poll loop wakes in every one.
        windows = []
        for _ in range(5):
            before = switches(server.acceptor)
            time.sleep(0.3)
            windows.append(switches(server.acceptor) - before)
            if windows[-1] == 0:
                break
        assert windows[-1] == 0, f"the idle acceptor woke in every window: {windows}"
        assert hostsock.call(server.path, {"op": "ping"})["pong"]  # still serving
    finally:
        server.stop()
    # woken by the stop: a thread left in accept would outlive stop's join
    assert not server.acceptor.is_alive() and not server.path.exists()


def test_sends_on_several_connections_of_one_socket_arrive_once_in_order(daemon):
    """Connections of one socket send at once (their commits may be shared, broker/
    group.py): every message is acknowledged with its own id and arrives once, each
    connection's in the order it sent them."""
    ids: dict[int, list[int]] = {}

    def sender(i: int) -> None:
        with socket.socket(socket.AF_UNIX) as s, s.makefile("rwb") as f:
            s.connect(str(sock(daemon, "manager")))
            for n in range(25):
                f.write(json.dumps({"op": "send", "to": "alice", "body": f"{i}:{n}"}).encode())
                f.write(b"\n")
                f.flush()
                reply = json.loads(f.readline())
                assert reply["ok"], reply
                ids.setdefault(i, []).append(reply["id"])

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(ids) == [0, 1, 2, 3] and all(ids[i] == sorted(ids[i]) for i in ids)
    got = []
    while batch := call(daemon, "alice", op="recv")["messages"]:
        got += batch
    assert len({m["id"] for m in got}) == len(got) == 100
    assert sorted(m["id"] for m in got) == sorted(i for mine in ids.values() for i in mine)
    for i in range(4):
        assert [m["body"] for m in got if m["body"].startswith(f"{i}:")] == [
            f"{i}:{n}" for n in range(25)
        ]


def test_pipelined_requests_are_answered_in_order_and_their_sends_stored_in_order(daemon):
    """A client writes sends, a bad line, a refused send and another op before reading:
    one reply each, in the order written; a refused or malformed one fails alone; every
    acknowledged message is stored once and arrives in the order it was sent."""
    requests = [
        *({"op": "send", "to": "alice", "body": f"p{n}"} for n in range(5)),
        "{nope",
        {"op": "send", "to": "nobody-here", "body": "lost"},
        {"op": "send", "to": "alice", "body": "  "},
        {"op": "send", "to": "alice", "body": "p5", "ok": True},  # any key: still a request
        {"op": "whoami"},
        *({"op": "send", "to": "alice", "body": f"p{n}"} for n in range(6, 9)),
    ]
    lines = b"".join(
        (r if isinstance(r, str) else json.dumps(r)).encode() + b"\n" for r in requests
    )
    while call(daemon, "alice", op="recv")["messages"]:  # what other tests left
        pass
    with socket.socket(socket.AF_UNIX) as s, s.makefile("rwb") as f:
        s.connect(str(sock(daemon, "manager")))
        f.write(lines)  # all of it before reading a reply
        f.flush()
        replies = [json.loads(f.readline()) for _ in requests]
    assert [r["ok"] for r in replies] == [True] * 5 + [False] * 3 + [True] * 5
    assert "malformed request" in replies[5]["error"]
    assert "unknown recipient 'nobody-here'" in replies[6]["error"]
    assert "non-empty text" in replies[7]["error"]
    assert replies[9]["name"] == "manager"
    ids = [r["id"] for r in replies if "id" in r]
    assert len(ids) == 9 and ids == sorted(ids)
    got = call(daemon, "alice", op="recv")["messages"]
    assert [(m["id"], m["body"]) for m in got] == list(
        zip(ids, [f"p{n}" for n in range(9)], strict=True)
    )


def test_a_socket_answers_what_was_pipelined_together(tmp_path):
    """The lines a client wrote before reading go to `many` in one call (so sends can
    share a commit); a line alone, or one still being written, goes to the handler."""
    calls = []

    def many(requests):
        calls.append([r["n"] for r in requests])
        return [[{"n": r["n"]} if r["n"] != 3 else HiveError("three") for r in requests]]

    path = tmp_path / "s.sock"
    server = hostsock.HostSocket(path, lambda r: {"one": r["n"]}, many=many)
    server.start()
    try:
        with socket.socket(socket.AF_UNIX) as s, s.makefile("rwb") as f:
            s.connect(str(path))
            s.sendall(b"".join(b'{"n": %d}\n' % n for n in range(5)))
            assert [json.loads(f.readline()) for _ in range(5)] == [
                {"ok": True, "n": 0},
                {"ok": True, "n": 1},
                {"ok": True, "n": 2},
                {"ok": False, "error": "three"},
                {"ok": True, "n": 4},
            ]
            s.sendall(b'{"n": 5}\n{"n": 6')  # the second line is not whole yet
            assert json.loads(f.readline()) == {"ok": True, "one": 5}
            s.sendall(b"}\n")
            assert json.loads(f.readline()) == {"ok": True, "one": 6}
        assert calls == [[0, 1, 2, 3, 4]]
    finally:
        server.stop()


def test_the_line_reader_splits_caps_and_ends():
    a, b = socket.socketpair()
    with a, b:
        lines = hostsock.Lines(b)
        a.sendall(b'{"a": 1}\n{"b": 2}\n{"c"')
        assert lines.readline(100) == b'{"a": 1}\n'
        assert lines.ready() and not lines.ready(limit=5)  # whole, but longer than 5
        assert lines.readline(100) == b'{"b": 2}\n'
        assert not lines.ready()  # a part of a line
        a.sendall(b": 3}\n" + b"x" * 250)
        assert lines.readline(100) == b'{"c": 3}\n'
        assert [lines.readline(100) for _ in range(2)] == [b"x" * 100] * 2  # in pieces
        a.close()
        assert lines.readline(100) == b"x" * 50  # the end: what was left
        assert lines.readline(100) == b""


def test_pipelined_replies_are_written_as_they_come_and_a_failure_answers_the_rest(tmp_path):
    """`many` yields: the first replies are on the wire before the next request is run;
    if it breaks, every request it left unanswered gets the error, and the socket serves on."""
    path = tmp_path / "s.sock"
    first_read = threading.Event()

    def many(requests):  # its results in pieces
        yield [{"n": requests[0]["n"]}]
        assert first_read.wait(30)  # the client read the first reply meanwhile
        yield []
        yield [{"n": requests[1]["n"]}]
        raise RuntimeError("broken")

    server = hostsock.HostSocket(path, lambda r: {"one": r["n"]}, many=many)
    server.start()
    try:
        with socket.socket(socket.AF_UNIX) as s, s.makefile("rwb") as f:
            s.connect(str(path))
            s.sendall(b"".join(b'{"n": %d}\n' % n for n in range(4)))
            assert json.loads(f.readline()) == {"ok": True, "n": 0}
            first_read.set()
            assert json.loads(f.readline()) == {"ok": True, "n": 1}
            assert [json.loads(f.readline()) for _ in range(2)] == [
                {"ok": False, "error": "internal error: broken"}
            ] * 2
            s.sendall(b'{"n": 9}\n')
            assert json.loads(f.readline()) == {"ok": True, "one": 9}
    finally:
        server.stop()

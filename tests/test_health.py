"""Failing agents made visible, on a real hive.db: the health rows and the state they add
up to, dead letters (give up, list, page, requeue), the supervisor's part (a start that
fails, a crash loop, a claude that cannot be found) and the forge's (the Agents table,
/api/state, the banner, the dead-letter tables and their requeue button with CSRF)."""

import json
import logging
import re
import sqlite3

import pytest
from support.hive import PASSWORD, csrf_in, log_in, run_cli
from support.runtimes import StandIn, set_deployed

from forge_ui import create_app
from hyperhive import operator
from hyperhive.agents import create_agent, list_agents
from hyperhive.broker import db
from hyperhive.broker.health import MAX_ERROR, Health, derive
from hyperhive.broker.messages import MAX_BATCH, MAX_DEAD_PAGE, Broker
from hyperhive.daemon import supervisor
from hyperhive.daemon.ops import Ops
from hyperhive.daemon.supervisor import Supervisor
from hyperhive.errors import BadInput, UnknownMessage
from hyperhive.hive import Hive
from hyperhive.runtime import record


@pytest.fixture
def hive(home, runtime):
    for name in ("alice", "bob"):
        create_agent(home, name, runtime, "operator")
    return home


@pytest.fixture
def broker(hive):
    return Broker(hive)


# -- the state -----------------------------------------------------------------------------


def row(error="boom", count=1, revision=None):
    return {"error": error, "at": 1.0, "count": count, "revision": revision}


@pytest.mark.parametrize(
    "state, problems, expected",
    [
        ("running", {}, ("running", None)),
        ("stopped", {}, ("stopped", None)),
        ("running", {"turn": row("cannot run claude")}, ("failing", "cannot run claude")),
        # the cause before its effect: a claude that cannot be found fails every turn
        ("running", {"turn": row("t"), "claude": row("c")}, ("failing", "c")),
        ("stopped", {"turn": row("t")}, ("stopped", None)),  # the daemon is down
        ("stopped", {"start": row("cannot start")}, ("failing", "cannot start")),
        ("stopped", {"crash": row("exited", 1, "r1")}, ("failing", "exited")),
        ("running", {"crash": row("exited", 1, "r1")}, ("running", None)),  # restarted
        ("running", {"crash": row("x", 2, "r1")}, ("crash-looping", "x")),
        ("stopped", {"crash": row("x", 3, "r1"), "start": row()}, ("crash-looping", "x")),
        ("running", {"crash": row("x", 5, "r0")}, ("running", None)),  # deployed anew
        ("up", {"turn": row("t")}, ("failing", "t")),  # nixos-container
        ("not deployed", {"turn": row("t"), "crash": row("x", 9)}, ("not deployed", None)),
        ("destroyed", {"claude": row()}, ("destroyed", None)),
    ],
)
def test_the_state_says_what_is_true(state, problems, expected):
    out = derive({"state": state, "revision": "r1"}, problems)
    assert (out["state"], out["error"]) == expected and out["revision"] == "r1"


def test_health_rows_are_one_line_and_keep_their_time_while_unchanged(hive, monkeypatch):
    health = Health(hive)
    agents = {a["name"]: a["runtime"] for a in list_agents(hive, StandIn(True))}
    assert agents["alice"] == {"host": "local", "state": "up", "revision": "r", "error": None}
    assert health.set("alice", "claude", "its claude\n  cannot be found") is True
    first = health.get("claude", "alice")
    assert first["error"] == "its claude cannot be found"
    assert health.set("alice", "claude", "its claude cannot be found") is False
    assert health.get("claude", "alice")["at"] == first["at"]  # since when
    health.set("alice", "start", "x" * 10_000)
    assert len(health.get("start", "alice")["error"]) == MAX_ERROR
    assert health.clear("alice", "start") is True and health.clear("alice", "start") is False
    # a turn report: failures count up with their error, a success ends it
    assert health.turn("bob", "failure", "Credit balance is too low", 1) is True
    assert health.turn("bob", "failure", "Credit balance is too low", 1) is False
    assert health.get("turn", "bob")["count"] == 2
    assert health.turn("bob", "failure", None, 127) is True
    assert health.get("turn", "bob")["error"] == "the turn failed (claude exited 127)"
    assert health.turn("bob", "compact-retry", None, 0) is True
    assert health.get("turn", "bob") is None
    health.set("alice", "turn", "no credentials")
    agents = {a["name"]: a["runtime"] for a in list_agents(hive, StandIn(True))}
    assert agents["alice"]["state"] == "failing"
    assert agents["alice"]["error"] == "its claude cannot be found"


def test_a_failed_turn_report_makes_the_agent_failing_until_one_succeeds(hive, broker):
    ops = Ops(Hive(hive, StandIn(True)), broker, None)
    handle = ops.for_agent("alice")
    report = {"duration": 1, "exit": "failure", "exit_code": 127, "notes_bytes": 0}
    handle({"op": "turn_report", "report": {**report, "error": "cannot run claude: No such"}})
    peers = {p["name"]: p["state"] for p in ops.for_agent("bob")({"op": "list_peers"})["peers"]}
    assert peers["alice"] == "failing"
    assert Health(hive).get("turn", "alice")["error"] == "cannot run claude: No such"
    handle({"op": "turn_report", "report": {**report, "exit": "ok", "exit_code": 0}})
    assert Health(hive).all() == {}


# -- dead letters ----------------------------------------------------------------------


def test_given_up_messages_are_dead_letters_until_requeued(hive, broker):
    ids = [broker.send("operator", "alice", f"m{i}") for i in range(3)]
    other = broker.send("operator", "bob", "for bob")
    taken = broker.recv("alice", lease=True)
    assert [m["id"] for m in taken] == ids
    broker.ack("alice", ids)
    with pytest.raises(BadInput, match=f"not messages to alice: #{other}"):
        broker.give_up("alice", [ids[0], other], "r")  # refused whole
    assert broker.dead("alice")["messages"] == []
    for bad_ids, said in [("1", "list of message ids"), ([True], "list of message ids"),
                          ([2**70], "list of message ids"),
                          (list(range(MAX_BATCH + 1)), f"at most {MAX_BATCH}")]:  # fmt: skip
        with pytest.raises(BadInput, match=said):
            broker.give_up("alice", bad_ids, "r")
    with pytest.raises(BadInput, match="reason"):
        broker.give_up("alice", ids, " ")
    assert broker.give_up("alice", ids[:2], "given up after 3 failed turns:\nboom") == 2
    assert broker.give_up("alice", ids[:2], "again") == 0  # a retried call marks nothing
    page = broker.dead("alice")
    assert [m["id"] for m in page["messages"]] == [ids[1], ids[0]] and page["next"] is None
    assert page["messages"][0]["reason"] == "given up after 3 failed turns: boom"
    assert broker.dead_counts() == {"alice": 2}
    # out of every inbox: not waiting, not taken again, not released
    assert broker.inbox("alice") == [] and broker.release("alice") == 0
    assert broker.waiting(["alice"])["alice"][0] == 0

    with pytest.raises(UnknownMessage, match=f"alice has no dead letter #{ids[2]}"):
        broker.requeue_dead("alice", ids[2])  # alive
    with pytest.raises(UnknownMessage, match="bob has no dead letter"):
        broker.requeue_dead("bob", ids[0])  # another's
    with pytest.raises(UnknownMessage):
        broker.requeue_dead("alice", 2**70)
    assert broker.requeue_dead("alice", ids[0])["body"] == "m0"
    assert [m["id"] for m in broker.recv("alice")] == [ids[0]]  # its place, its id
    assert [m["id"] for m in broker.dead("alice")["messages"]] == [ids[1]]


def test_dead_letters_are_listed_a_page_at_a_time(hive, broker):
    ids = [broker.send("operator", "alice", f"m{i}") for i in range(7)]
    broker.give_up("alice", ids, "r")
    seen, before = [], None
    while True:
        page = broker.dead("alice", 3, before)
        seen += [m["id"] for m in page["messages"]]
        if (before := page["next"]) is None:
            break
    assert seen == ids[::-1]
    assert [m["id"] for m in broker.dead_latest(2)] == ids[:-3:-1]
    for limit, before in [(0, None), (MAX_DEAD_PAGE + 1, None), (True, None), (1, 0), (1, "x")]:
        with pytest.raises(BadInput):
            broker.dead("alice", limit, before)


def test_messages_stored_before_the_dead_columns_are_alive(hive):
    db.migrate(hive, db.MIGRATIONS[:7])
    conn = db.connect(hive)
    conn.execute(
        "INSERT INTO messages (sender, recipient, body, created_at) VALUES ('a', 'alice', 'x', 1)"
    )
    conn.close()
    broker = Broker(hive)  # migrates
    assert broker.dead("alice")["messages"] == [] and len(broker.inbox("alice")) == 1
    plan = sqlite3.connect(db.db_path(hive)).execute(
        "EXPLAIN QUERY PLAN SELECT * FROM messages WHERE recipient = 'alice' "
        "AND dead_at IS NOT NULL AND id < 5 ORDER BY id DESC LIMIT 3"
    )
    assert "messages_dead" in " ".join(r[3] for r in plan)


def test_the_cli_lists_pages_and_requeues_dead_letters(hive, broker):
    ids = [broker.send("operator", "alice", f"hello {i}") for i in range(3)]
    broker.give_up("alice", ids, "given up after 3 failed turns: no claude")
    out = run_cli(hive.root, "inbox", "alice", "--dead", "--limit", "2", check=True).stdout
    assert f"#{ids[2]:<6}" in out and "hello 2" in out and "no claude" in out
    assert f"hyperhive inbox alice --dead --before {ids[1]}" in out and "hello 0" not in out
    older = json.loads(
        run_cli(hive.root, "inbox", "alice", "--dead", "--before", str(ids[1]), "--json").stdout
    )
    assert [m["id"] for m in older["messages"]] == [ids[0]] and older["next"] is None
    done = run_cli(hive.root, "requeue", "alice", str(ids[0]), check=True)
    assert done.stdout.strip() == f"requeued #{ids[0]} from operator into alice's inbox"
    assert [m["id"] for m in broker.inbox("alice")] == [ids[0]]
    again = run_cli(hive.root, "requeue", "alice", str(ids[0]))
    assert again.returncode == 1
    assert again.stderr.strip() == (
        f"hyperhive: alice has no dead letter #{ids[0]}: `hyperhive inbox alice --dead` lists them"
    )
    for args, code in [
        (["requeue", "alice", "0"], 2),
        (["requeue", "alice", "x"], 2),
        (["requeue", "nobody", "1"], 1),
        (["inbox", "alice", "--dead", "--limit", str(MAX_DEAD_PAGE + 1)], 2),
        (["inbox", "alice", "--limit", "3"], 1),  # paging is for --dead
    ]:
        assert run_cli(hive.root, *args).returncode == code, args


# -- the supervisor ----------------------------------------------------------------------


class Failing(StandIn):
    """A stand-in runtime whose starts fail, and that says whether the harness runs."""

    def __init__(self):
        super().__init__(supervised=True)
        self.refuse: str | None = None
        self.running = True

    def start(self, name, emit=None):
        super().start(name, emit)
        if self.refuse:
            from hyperhive.errors import RuntimeCommandError

            raise RuntimeCommandError(self.refuse)

    def status(self, name):
        state = "running" if self.running else "stopped"
        return {"state": state, "revision": record.deployed_revision(self.home, name)}


def states(hive, rt) -> dict:
    return {
        a["name"]: (a["runtime"]["state"], a["runtime"]["error"]) for a in list_agents(hive, rt)
    }


def test_the_supervisor_tells_starts_crashes_and_claude(hive, monkeypatch, tmp_path, caplog):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", str(bindir))  # no claude on it
    set_deployed(hive, "alice", "r1")
    rt = Failing()
    rt.home = hive
    sup = Supervisor(Hive(hive, rt), Broker(hive))
    Health(hive).set("alice", "crash", "a crash a daemon before saw", 4, "r1")
    with caplog.at_level(logging.ERROR, "hyperhive.daemon"):
        sup.start()
    # at the start: the claude of every deployed agent is checked and logged
    assert "alice: its claude cannot be found: `claude` is not on the daemon's PATH" in caplog.text
    assert states(hive, rt)["alice"] == (
        "failing",
        "its claude cannot be found: `claude` is not on the daemon's PATH",
    )
    claude = bindir / "claude"
    claude.write_text("#!/bin/sh\n")
    claude.chmod(0o755)  # installed: the next sync clears it
    sup.sync()
    assert states(hive, rt)["alice"] == ("running", None)

    rt.refuse, rt.running = "cannot start the harness of alice: [Errno 13] denied", False
    sup.sync()
    assert states(hive, rt)["alice"] == ("failing", rt.refuse)
    rt.refuse = None
    sup.sync()
    assert states(hive, rt)["alice"] == ("stopped", None)

    sup.exited("alice", 1)  # once: failing while it waits for its restart
    state, error = states(hive, rt)["alice"]
    assert state == "failing"
    assert error == ("the harness exited unexpectedly (exit status 1); its log ends: alice line 2")
    rt.running = True
    assert states(hive, rt)["alice"] == ("running", None)
    sup.exited("alice", -9)
    state, error = states(hive, rt)["alice"]
    assert state == "crash-looping" and "killed by SIGKILL), 2 times in a row" in error
    now = supervisor.time.time()
    monkeypatch.setattr(supervisor.time, "time", lambda: now + supervisor.CALM_SECONDS + 1)
    sup.sync()  # ten calm minutes: the episode is over
    assert states(hive, rt)["alice"] == ("running", None)
    sup.exited("alice", 1)
    sup.exited("alice", 1)
    assert states(hive, rt)["alice"][0] == "crash-looping"
    sup.stop()  # the daemon's stop: its knowledge of crashes goes with it
    rt.running = False
    assert states(hive, rt)["alice"] == ("stopped", None)
    claude.unlink()
    record.forget(hive, "alice")  # undeployed: its problems go
    Health(hive).set("alice", "claude", "x")
    sup.check_claude()
    assert Health(hive).all() == {}


# -- the forge -------------------------------------------------------------------------


@pytest.fixture
def client(hive):
    operator.set_password(hive, PASSWORD)
    rt = Failing()
    rt.home = hive
    app = create_app(Hive(hive, rt))
    return log_in(app.test_client(), hive, "ops")


def test_the_dashboard_and_the_api_show_failing_agents_and_the_banner(hive, client):
    set_deployed(hive, "alice", "r1")
    Health(hive).set("alice", "turn", "cannot run claude: [Errno 2] No such file: 'claude'")
    Health(hive).set("bob", "claude", "its claude cannot be found: /opt/claude does not exist")
    data = client.get("/api/state").get_json()
    agents = {a["name"]: a["runtime"] for a in data["agents"]}
    assert agents["alice"]["state"] == "failing"
    assert agents["alice"]["error"] == "cannot run claude: [Errno 2] No such file: 'claude'"
    assert data["alerts"]["claude"] == [
        {
            "agent": "bob",
            "error": "its claude cannot be found: /opt/claude does not exist",
            "since": Health(hive).get("claude", "bob")["at"],
        }
    ]
    page = client.get("/").get_data(as_text=True)
    agents_panel = page[page.index('id="section-agents"') :]
    assert 'class="badge runtime-failing">failing</span>' in agents_panel
    assert "No such file: &#39;claude&#39;" in agents_panel
    banner = page[page.index('id="section-alerts"') : page.index('class="grid"')]
    assert (
        "claude cannot be found for 1 agent:" in banner and "/opt/claude does not exist" in banner
    )
    Health(hive).clear("bob")
    page = client.get("/").get_data(as_text=True)
    assert "claude cannot be found for" not in page


def test_dead_letters_on_the_dashboard_and_the_agent_page_with_a_requeue(hive, client):
    broker = Broker(hive)
    ids = [broker.send("operator", "alice", f"<b>msg {i}</b>") for i in range(3)]
    broker.give_up("alice", ids, "given up after 3 failed turns: <script>")
    page = client.get("/").get_data(as_text=True)
    dead_panel = page[page.index('id="section-dead"') :]
    assert dead_panel.count('data-dead="') == 3 and "&lt;b&gt;msg 1&lt;/b&gt;" in dead_panel
    assert "failed turns: &lt;script&gt;" in dead_panel
    agent_page = client.get("/agents/alice").get_data(as_text=True)
    assert agent_page.count('data-dead="') == 3

    token = csrf_in(agent_page)
    url = f"/agents/alice/dead/{ids[1]}/requeue"
    assert client.post(url, data={"next": "/agents/alice"}).status_code == 403  # no CSRF
    r = client.post(url, data={"csrf_token": token, "next": "/agents/alice"})
    assert r.status_code == 302 and r.headers["Location"] == "/agents/alice"
    assert [m["id"] for m in broker.inbox("alice")] == [ids[1]]
    r = client.post(url, data={"csrf_token": token, "next": "https://evil.example/"})
    assert r.status_code == 404 and "alice has no dead letter" in r.get_data(as_text=True)
    r = client.post(
        f"/agents/alice/dead/{ids[0]}/requeue",
        data={"csrf_token": token, "next": "//evil.example/"},
    )
    assert r.headers["Location"] == "/"  # only a path on this site

    # the JSON API: a page, bad queries, an unknown id
    auth = {"Authorization": f"Bearer {operator.token(hive)}"}
    listed = client.get("/api/agents/alice/dead?limit=1", headers=auth).get_json()
    assert [m["id"] for m in listed["messages"]] == [ids[2]] and listed["next"] is None
    for query in ("limit=0", "limit=501", "limit=x", "before=-1"):
        r = client.get(f"/api/agents/alice/dead?{query}", headers=auth)
        assert r.status_code == 400, query
    assert client.get("/api/agents/nobody/dead", headers=auth).status_code == 404
    r = client.post(f"/api/agents/alice/dead/{ids[0]}/requeue", headers=auth)
    assert r.status_code == 404 and "no dead letter" in r.get_json()["error"]
    r = client.post(f"/api/agents/alice/dead/{ids[2]}/requeue", headers=auth)
    assert r.status_code == 200 and r.get_json()["body"] == "<b>msg 2</b>"
    assert client.get("/").get_data(as_text=True).count('data-dead="') == 0


def test_the_agent_page_pages_its_dead_letters_and_shows_the_log_tail(hive, client, monkeypatch):
    from forge_ui import harness_log

    monkeypatch.setattr("forge_ui.views.dead.DEAD_PAGE", 2)
    broker = Broker(hive)
    ids = [broker.send("operator", "alice", f"m{i}") for i in range(5)]
    broker.give_up("alice", ids, "r")
    first = client.get("/agents/alice").get_data(as_text=True)
    assert re.findall(r'data-dead="(\d+)"', first) == [str(ids[4]), str(ids[3])]
    older = re.search(r'href="([^"#]+)#dead" id="dead-older"', first).group(1)
    second = client.get(older).get_data(as_text=True)
    assert re.findall(r'data-dead="(\d+)"', second) == [str(ids[2]), str(ids[1])]

    log = hive.log_dir("alice") / "harness.log"
    monkeypatch.setattr(harness_log, "TAIL_BYTES", 100)
    log.write_text("".join(f"line {i:03}\n" for i in range(100)))
    page = client.get("/agents/alice").get_data(as_text=True)
    shown = re.search(r'id="harness-log"[^>]*>([^<]*)</pre>', page).group(1)
    assert shown.splitlines() == [f"line {i:03}" for i in range(89, 100)]  # whole lines
    assert f'data-offset="{log.stat().st_size}"' in page
    raw = client.get("/agents/alice/harness.log")
    assert raw.data == log.read_bytes() and raw.headers["Content-Security-Policy"] == "sandbox"


def test_the_log_follower_reads_whole_lines_and_starts_over_after_a_rotation(tmp_path):
    from forge_ui.harness_log import CHUNK, Follower

    log = tmp_path / "harness.log"
    log.write_text("one\ntw")
    f = Follower(log, 0)
    assert f.read() == ("one\n", False) and f.read() == ("", False)
    with log.open("a") as out:
        out.write("o\n")
    assert f.read() == ("two\n", False)
    log.rename(tmp_path / "harness.log.1")  # a start rotated it
    log.write_text("fresh\n")
    assert f.read() == ("fresh\n", True)
    log.write_text("x" * (CHUNK + 10))  # a line longer than a chunk comes in pieces
    f = Follower(log, 0)
    assert len(f.read()[0]) == CHUNK and f.offset == CHUNK


def test_listing_agents_reads_health_without_migrating_or_creating_hive_db(home, runtime):
    from hyperhive.broker.health import problems

    create_agent(home, "alice", runtime, "operator")
    assert not db.db_path(home).exists()
    assert [a["runtime"]["error"] for a in list_agents(home, runtime)] == [None, None]
    assert not db.db_path(home).exists()  # a listing writes nothing
    db.migrate(home, db.MIGRATIONS[:7])  # a hive.db from before the health table
    assert problems(home) == {}
    Health(home).set("alice", "start", "x")  # migrates
    assert problems(home)["alice"]["start"]["error"] == "x"

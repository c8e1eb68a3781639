"""What `GET /api/state` and the dashboard keep between loads (forge_ui/state_json.py,
the per-agent caches of forge_ui/state.py and Approvals.derived, Home's paths): a warm
load answers, byte for byte, what the state read afresh and encoded by jsonify says, as
the hive changes under it."""

import heapq
import json
import os
import time

import pytest
from flask import jsonify
from support.hive import PASSWORD, fresh_commit, git, log_in

from forge_ui import charts, create_app, state, state_json
from hyperhive import home as home_module
from hyperhive import operator
from hyperhive.agents import create_agent
from hyperhive.daemon.checker import CheckWorker
from hyperhive.errors import InvalidName
from hyperhive.gitstore import refs, tags
from hyperhive.gitstore.cache import LRU, RefListings
from hyperhive.gitstore.repos import LazyRepo, open_repo
from hyperhive.gitstore.tags import write_tag
from hyperhive.hive import Hive
from hyperhive.home import Home
from hyperhive.settings import Checks
from hyperhive.workflow import approvals as approvals_module
from hyperhive.workflow import checks, policydiff
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.states import State, tag_ref


@pytest.fixture
def worker(home, runtime) -> CheckWorker:
    return CheckWorker(home, runtime, None, Checks())  # not started: what is queued stays


@pytest.fixture
def app(home, runtime, worker):
    operator.set_password(home, PASSWORD)
    return create_app(Hive(home, runtime, checks=worker))


def settle(home: Home) -> None:
    """Date every applied repo's ref directories a minute back: settled listings are kept
    (gitstore/cache.py), so the next loads go through every cache."""
    old = time.time() - 60
    for control in (home.root / "applied").glob("*.git"):
        for top, dirs, _ in os.walk(control / "refs"):
            for d in [*dirs, ""]:
                os.utime(os.path.join(top, d), (old, old))


def evaluate_pending(home: Home) -> None:
    """Each pending approval's policy diff evaluated now (nix), as the background warmer
    would: no load queues one, so no evaluation ends between two loads compared."""
    for name in home.agent_names():
        for a in Approvals(home, name).all(pending_only=True):
            assert policydiff.of_approval(home, a)["error"] is None


def afresh(app, monkeypatch) -> bytes:
    """jsonify of the state read with every cache of the read path empty (parsed tags
    aside: a tag object never changes)."""
    with monkeypatch.context() as m:
        m.setattr(state, "_rows", LRU(8))
        m.setattr(approvals_module, "_derived", LRU(8))
        m.setattr(approvals_module, "_built", LRU(8))
        m.setattr(checks, "_built", LRU(8))
        m.setattr(refs, "_listings", RefListings())
        m.setattr(charts, "_sparklines", LRU(8))
        with app.test_request_context():
            return jsonify(state.collect(app.extensions["hive"])).data


def test_a_warm_state_is_the_state_read_afresh_as_the_hive_changes(
    app, home, runtime, worker, monkeypatch
):
    client = log_in(app.test_client(), home)
    create_agent(home, "worker", runtime, "operator")
    for name in ("manager", "worker"):
        for _ in range(2):
            Approvals(home, name).propose(fresh_commit(home, name), "operator")

    def loads(refs_moved: bool = True) -> dict:
        evaluate_pending(home)
        if refs_moved:  # (dating them again is a change of its own)
            settle(home)
        first, again = client.get("/api/state"), client.get("/api/state")
        assert first.status_code == again.status_code == 200
        assert first.data == again.data == afresh(app, monkeypatch)
        body = json.loads(first.data)
        assert body["errors"] == []
        return body

    body = loads()
    targets = [a["target"] for a in body["approvals"]]
    assert sorted(targets) == [f"{n}#{i}" for n in ("manager", "worker") for i in (1, 2, 3)]
    assert state._rows.get((str(home.root), "manager")) is not None  # kept: the cache is used
    assert {a["name"]: a["pending"] for a in body["agents"]} == {
        "manager": [1, 2, 3],
        "worker": [1, 2, 3],
    }

    # a check recorded for manager#2: its row says so
    with open_repo(home.applied_dir("manager")) as repo:
        commit = repo[repo.refs[tag_ref(State.PROPOSAL, 2)]].object[1]
        trailers = {"Result": "passed", "Duration": "1.00s", "Check-Log": "x.log"}
        write_tag(repo, checks.tag_ref(2, 1), commit, checks.ACTOR, "check", trailers)
    rows = {a["target"]: a for a in loads()["approvals"]}
    assert rows["manager#2"]["check"]["result"] == "passed"
    assert rows["manager#3"]["check"]["result"] is None

    # manager#3's check queued in the daemon (no tag written): its row says so
    worker.submit("manager", 3)
    rows = {a["target"]: a for a in loads(refs_moved=False)["approvals"]}
    assert rows["manager#3"]["check"]["state"] == "queued"
    assert rows["manager#2"]["check"]["state"] == "passed"

    # manager#1 denied: gone from the pending ones
    Approvals(home, "manager").deny(1, "alice", "no")
    assert "manager#1" not in {a["target"] for a in loads()["approvals"]}

    # worker#1 approved and deployed (the hook builds it): the recent deploys, the agent's
    # deployed commit, and the base its other pending rows are reviewed against all move
    Approvals(home, "worker").approve(1, "alice")
    body = loads()
    assert [(r["target"], r["state"]) for r in body["recent"]] == [("worker#1", "deployed")]
    worker = next(a for a in body["agents"] if a["name"] == "worker")
    assert worker["deployed_approval"] == 1 and worker["pending"] == [2, 3]
    deployed = git(home.applied_dir("worker"), "rev-parse", "main").strip()
    (row,) = [a for a in body["approvals"] if a["target"] == "worker#2"]
    assert row["policy_diff"]["before"] == deployed


def test_the_newest_deploys_across_agents_are_those_of_every_tag(home, runtime, monkeypatch):
    """`recent` takes each agent's newest (once per listing of its tags) and then the
    newest of those: the same rows, ties in the same order, as the newest of all tags."""
    create_agent(home, "worker", runtime, "operator")
    monkeypatch.setattr(state, "RECENT", 3)
    for name in ("manager", "worker"):
        with open_repo(home.applied_dir(name)) as repo:
            commit = repo[repo.refs[tag_ref(State.PROPOSAL, 1)]].object[1]
            for i, (state_, when) in enumerate(
                [(State.DEPLOYED, 100), (State.FAILED, 100), (State.DEPLOYED, 300)], start=10
            ):
                write_tag(repo, tag_ref(state_, i), commit, "hyperhive", "x", {}, when=when)
    settle(home)
    hive = Hive(home, runtime)
    every = (
        (tag.time, i, name, s, tag)
        for name in home.agent_names()
        for s in (State.DEPLOYED, State.FAILED)
        for i, tag in Approvals(home, name).tags_in(s).items()
    )
    expected = [
        (name, i, str(s))
        for _, i, name, s, _ in heapq.nlargest(3, every, key=lambda e: (e[0], e[1]))
    ]
    for _ in range(2):  # read, then from what was derived
        got = [(r["agent"], r["id"], r["state"]) for r in state.recent(hive)]
        assert (
            got
            == expected
            == [("manager", 12, "deployed"), ("worker", 12, "deployed")]
            + [("manager", 11, "failed")]
        )


def test_section_texts_are_kept_while_the_data_is_equal():
    made = []

    def encode(value):
        made.append(value)
        return state_json.plain(value)

    texts = state_json.SectionTexts(encode)
    data = {"b": [{"x": 1, "é": "ü"}], "a": None, "errors": []}
    doc = texts.document(data)
    assert doc == json.dumps(data, sort_keys=True, separators=(",", ":"))
    assert texts.document({**data, "b": [{"x": 1, "é": "ü"}]}) == doc  # equal, a new object
    assert len(made) == 3
    changed = texts.document({**data, "b": [{"x": 2}]})
    assert len(made) == 4 and json.loads(changed) == {**data, "b": [{"x": 2}]}
    assert texts.digest("b", [{"x": 2}]) != texts.digest("b", [{"x": 1}])


def test_an_app_in_debug_mode_gets_jsonifys_indented_state(app, home):
    app.debug = True
    client = log_in(app.test_client(), home)
    text = client.get("/api/state").get_data(as_text=True)
    assert text.startswith('{\n  "activity"') and json.loads(text)["approvals"]


def test_home_builds_an_agents_paths_once(tmp_path, monkeypatch):
    h = Home(tmp_path)
    assert h.applied_dir("a") == tmp_path / "applied" / "a.git"
    assert h.applied_dir("a") is h.applied_dir("a")
    assert h.agent_dir("a") == tmp_path / "agents" / "a"
    assert h.deployed_dir("a") == tmp_path / "agents" / "a" / "deployed"
    assert h.log_dir("a") == tmp_path / "logs" / "a"
    for bad in ("../x", "A", "", "a/b"):
        with pytest.raises(InvalidName):
            h.agent_dir(bad)
    monkeypatch.setattr(home_module, "MAX_PATHS", 3)
    for name in "bcdefg":
        assert h.agent_dir(name) == tmp_path / "agents" / name
    assert len(h._paths) <= 3
    assert h == Home(tmp_path) and hash(h) == hash(Home(tmp_path))


def test_a_lazy_repo_reads_a_loose_tag_without_opening_and_a_packed_one_through_dulwich(home):
    """The applied repo (bare) and a config repo (a work tree with .git/): a loose tag is
    parsed from the object store's file; once `git gc` packed it, dulwich reads it."""
    for control, git_dir, target in (
        (home.applied_dir("manager"), home.applied_dir("manager"), "proposal/1^{commit}"),
        (home.config_dir("manager"), home.config_dir("manager") / ".git", "HEAD"),
    ):
        who = ("-c", "user.name=t", "-c", "user.email=t@t")
        git(git_dir, *who, "tag", "-a", "-m", "lazy\n\nKey: v", "lazy", target)
        sha = git(git_dir, "rev-parse", "refs/tags/lazy").strip().encode()
        with open_repo(control) as repo:
            theirs = tags._info(b"refs/tags/lazy", repo[sha])
        with LazyRepo(control) as lazy:
            assert tags._parse_tag(lazy, b"refs/tags/lazy", sha) == theirs
            assert lazy._repo is None  # loose: never opened
        assert theirs.trailers == {"Key": "v"}
        git(git_dir, "gc", "-q", "--prune=now")
        assert not (git_dir / "objects" / sha[:2].decode() / sha[2:].decode()).exists()
        with LazyRepo(control) as lazy:
            assert tags._parse_tag(lazy, b"refs/tags/lazy", sha) == theirs
            assert lazy._repo is not None  # packed: dulwich found it

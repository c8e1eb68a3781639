"""The spawn flow (one shot, draft, commit, init_config), destroy (keep / purge), their
refusals with nothing half-created, the CLI command and the dashboard sections."""

import json
import re
import threading

import pytest
from support.hive import commit_config, csrf, git, log_in, run_cli

from forge_ui import create_app
from hyperhive import operator, spawn
from hyperhive.agents import initial_agent_nix
from hyperhive.errors import AgentExists, BadInput, InvalidName, UnknownAgent, UnknownCommit
from hyperhive.hive import Hive
from hyperhive.policy import deployed_policy
from hyperhive.workflow import meta
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.deploy import deploy

BAD_NAMES = ["", "Bad", "1abc", "a/b", "../etc", "a" * 32, "a b", "x\n"]


def for_each_ref(repo) -> list[str]:
    return git(repo, "for-each-ref", "--format=%(refname)").split()


def files(home) -> list[str]:
    """Every path in the home, lock files aside (reads may create those)."""
    return sorted(
        str(p.relative_to(home.root))
        for p in home.root.rglob("*")
        if not p.name.endswith(".lock") and "hive.db" not in p.name
    )


def no_hook(home, name):
    (home.applied_dir(name) / "hooks" / "post-receive").unlink()


def meta_subjects(home) -> list[str]:
    return git(home.meta_dir, "log", "--format=%s", "main").splitlines()


def meta_pins(home) -> dict:
    return json.loads(git(home.meta_dir, "show", "main:hyperhive.json"))["agents"]


# -- spawn ------------------------------------------------------------------------------


def test_spawn_creates_repos_and_proposes(home, runtime):
    a = spawn.spawn(home, "worker", runtime, "manager")
    assert (a.target, a.state) == ("worker#1", "proposal")
    config = home.config_dir("worker")
    assert (config / "agent.nix").read_text() == initial_agent_nix("worker")
    assert git(config, "status", "--porcelain") == ""
    assert a.commit == git(config, "rev-parse", "HEAD").strip()
    applied = home.applied_dir("worker")
    assert for_each_ref(applied) == [
        "refs/hyperhive/last-id",
        "refs/tags/proposal/1",
    ]
    assert "Actor: manager" in git(applied, "cat-file", "-p", "proposal/1")
    assert (applied / "hooks" / "post-receive").stat().st_mode & 0o111
    assert home.state_dir("worker").is_dir()
    assert "worker" in home.agent_names()
    assert runtime.status("worker")["state"] == "not deployed"
    assert spawn.drafts(home) == []


def test_spawn_draft_then_commit(home, runtime):
    config = spawn.spawn_draft(home, "drafty", "manager")
    assert config == home.config_dir("drafty")
    assert git(config, "log", "--format=%s").splitlines() == ["create agent drafty"]
    assert git(config, "status", "--porcelain") == ""
    assert home.state_dir("drafty").is_dir()
    assert not home.applied_dir("drafty").exists()
    assert not home.log_dir("drafty").exists()
    assert "drafty" not in home.agent_names()
    [d] = spawn.drafts(home)
    assert d["name"] == "drafty" and d["subject"] == "create agent drafty"
    assert d["commit"] == git(config, "rev-parse", "HEAD").strip() and d["time"] > 0

    first = git(config, "rev-parse", "HEAD").strip()
    second = commit_config(home, "drafty", {"notes.md": "hello\n"}, "add notes")
    [d] = spawn.drafts(home)
    assert (d["commit"], d["subject"]) == (second, "add notes")

    a = spawn.spawn_commit(home, "drafty", first[:10], runtime, "manager")
    assert (a.target, a.state, a.commit) == ("drafty#1", "proposal", first)
    assert for_each_ref(home.applied_dir("drafty")) == [
        "refs/hyperhive/last-id",
        "refs/tags/proposal/1",
    ]
    assert spawn.drafts(home) == []
    assert "drafty" in home.agent_names()
    # The draft's later commit can be proposed as the next change.
    assert Approvals(home, "drafty").propose(second, "manager").target == "drafty#2"


def test_approving_a_spawn_commit_deploys_the_agent(home, runtime):
    spawn.spawn_draft(home, "scout", "manager")
    nix = '{ config, pkgs, ... }:\n{\n  hyperhive.allowedRecipients = [ "manager" ];\n}\n'
    commit = commit_config(home, "scout", {"agent.nix": nix}, "restrict scout")
    a = spawn.spawn_commit(home, "scout", "HEAD", runtime, "manager")
    assert runtime.status("scout")["state"] == "not deployed"
    Approvals(home, "scout").approve(a.id, "operator")  # the shipped hook deploys it
    assert Approvals(home, "scout").get(a.id).state == "deployed"
    assert runtime.status("scout") == {"state": "stopped", "revision": commit}
    assert deployed_policy(home, "scout")["allowedRecipients"] == ["manager"]
    pin = meta_pins(home)["scout"]
    assert (pin["rev"], pin["approval"]) == (commit, a.id)
    assert pin["policy"]["allowedRecipients"] == ["manager"]  # committed beside the pin


def test_init_config(home, runtime):
    # a new name: a draft
    path = spawn.init_config(home, "fresh", "manager")
    assert path == home.config_dir("fresh") and [d["name"] for d in spawn.drafts(home)] == ["fresh"]
    # a draft or an agent with a config repo: its path, nothing written
    before = files(home)
    assert spawn.init_config(home, "fresh", "manager") == path
    assert spawn.init_config(home, "manager", "manager") == home.config_dir("manager")
    assert files(home) == before


def test_init_config_recreates_a_missing_config_repo(home, runtime):
    import shutil

    no_hook(home, "manager")
    Approvals(home, "manager").approve(1, "operator")
    deploy(home, "manager", 1, runtime)
    deployed = Approvals(home, "manager").deployed_commit()
    commit_config(home, "manager", {"x.nix": "{ }\n"}, "never proposed")
    shutil.rmtree(home.config_dir("manager"))
    path = spawn.init_config(home, "manager", "manager")
    assert git(path, "rev-parse", "HEAD").strip() == deployed
    assert git(path, "status", "--porcelain") == ""
    assert (path / "agent.nix").read_text() == initial_agent_nix("manager")
    # not deployed yet: from the template
    spawn.spawn(home, "worker", runtime, "manager")
    shutil.rmtree(home.config_dir("worker"))
    path = spawn.init_config(home, "worker", "manager")
    assert git(path, "log", "--format=%s").splitlines() == ["create agent worker"]


# -- refusals: nothing half-created ----------------------------------------------------


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_bad_names_are_refused_before_anything_is_written(home, runtime, bad):
    before = files(home)
    calls = [
        lambda: spawn.spawn(home, bad, runtime, "manager"),
        lambda: spawn.spawn_draft(home, bad, "manager"),
        lambda: spawn.spawn_commit(home, bad, "HEAD", runtime, "manager"),
        lambda: spawn.init_config(home, bad, "manager"),
        lambda: spawn.destroy(home, bad, runtime, purge=True),
    ]
    for call in calls:
        with pytest.raises(InvalidName, match="invalid agent name"):
            call()
    assert files(home) == before


def test_taken_names_are_refused(home, runtime):
    spawn.spawn_draft(home, "drafty", "manager")
    spawn.spawn(home, "worker", runtime, "manager")
    spawn.spawn(home, "gone", runtime, "manager")
    spawn.destroy(home, "gone", runtime, purge=False)
    before = files(home)
    refs_before = {n: for_each_ref(home.applied_dir(n)) for n in ("manager", "worker", "gone")}
    cases = [
        (lambda: spawn.spawn(home, "manager", runtime, "x"), "agent 'manager' already exists"),
        (lambda: spawn.spawn_draft(home, "worker", "x"), "agent 'worker' already exists"),
        (lambda: spawn.spawn(home, "drafty", runtime, "x"), "a draft of agent 'drafty'"),
        (lambda: spawn.spawn_draft(home, "drafty", "x"), "a draft of agent 'drafty'"),
        (lambda: spawn.spawn(home, "gone", runtime, "x"), "destroyed and its state kept"),
        (lambda: spawn.spawn_draft(home, "gone", "x"), "destroyed and its state kept"),
        (lambda: spawn.init_config(home, "gone", "x"), "destroyed and its state kept"),
        (
            lambda: spawn.spawn_commit(home, "worker", "HEAD", runtime, "x"),
            "agent 'worker' already exists",
        ),
        (
            lambda: spawn.spawn_commit(home, "gone", "HEAD", runtime, "x"),
            "destroyed and its state kept",
        ),
    ]
    for call, message in cases:
        with pytest.raises(AgentExists, match=re.escape(message)):
            call()
    with pytest.raises(UnknownAgent, match="no draft 'nobody'"):
        spawn.spawn_commit(home, "nobody", "HEAD", runtime, "x")
    assert files(home) == before
    assert {n: for_each_ref(home.applied_dir(n)) for n in refs_before} == refs_before


def test_a_leftover_directory_is_refused_and_purgeable(home, runtime):
    home.state_dir("odd").mkdir(parents=True)
    with pytest.raises(AgentExists, match="already exists: `hyperhive agent destroy odd --purge`"):
        spawn.spawn(home, "odd", runtime, "x")
    spawn.destroy(home, "odd", runtime, purge=True)
    assert not home.agent_dir("odd").exists()
    assert spawn.spawn(home, "odd", runtime, "x").target == "odd#1"


@pytest.mark.parametrize("ref", ["nope", "0" * 40, "deadbeef", "main~5"])
def test_spawn_commit_of_an_unknown_commit_creates_nothing(home, runtime, ref):
    spawn.spawn_draft(home, "drafty", "manager")
    before = files(home)
    with pytest.raises(UnknownCommit, match=f"unknown commit '{re.escape(ref)}' in drafty's"):
        spawn.spawn_commit(home, "drafty", ref, runtime, "manager")
    assert files(home) == before
    assert not home.applied_dir("drafty").exists()
    assert [d["name"] for d in spawn.drafts(home)] == ["drafty"]


def test_a_failing_step_undoes_what_the_call_made(home, runtime, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    spawn.spawn_draft(home, "drafty", "manager")
    draft_head = git(home.config_dir("drafty"), "rev-parse", "HEAD")
    before = files(home)
    monkeypatch.setattr(Approvals, "propose", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        spawn.spawn(home, "worker", runtime, "manager")
    with pytest.raises(RuntimeError, match="disk on fire"):
        spawn.spawn_commit(home, "drafty", "HEAD", runtime, "manager")
    assert files(home) == before  # the draft is intact, nothing of worker exists
    assert git(home.config_dir("drafty"), "rev-parse", "HEAD") == draft_head
    monkeypatch.undo()
    monkeypatch.setattr(type(runtime), "create", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        spawn.spawn(home, "worker", runtime, "manager")
    assert files(home) == before


def test_concurrent_drafts_of_one_name_have_one_winner(home):
    results = []

    def attempt():
        try:
            results.append(spawn.spawn_draft(home, "racer", "manager"))
        except AgentExists as e:
            results.append(e)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert git(home.config_dir("racer"), "log", "--format=%s").splitlines() == [
        "create agent racer"
    ]


# -- destroy ------------------------------------------------------------------------------


@pytest.fixture
def deployed_worker(home, runtime):
    a = spawn.spawn(home, "worker", runtime, "manager")
    Approvals(home, "worker").approve(a.id, "operator")  # the shipped hook deploys it
    assert runtime.status("worker")["state"] == "stopped"
    return Approvals(home, "worker").deployed_commit()


def test_destroy_keeps_state_and_repos(home, runtime, deployed_worker):
    (home.state_dir("worker") / "notes.md").write_text("remember\n")
    commit_config(home, "worker", {"x.nix": "{ }\n"}, "pending change")
    pending = Approvals(home, "worker").propose("HEAD", "manager")
    assert "worker" in meta_pins(home)

    result = spawn.destroy(home, "worker", runtime, purge=False, actor="alice")
    assert result["purged"] is False and result["denied"] == [pending.id]
    assert runtime.status("worker") == {"state": "destroyed", "revision": None}
    for gone in ("deployed", "deployed.rev", "policy.json"):
        assert not (home.agent_dir("worker") / gone).exists()
    assert (home.state_dir("worker") / "notes.md").read_text() == "remember\n"
    assert (home.config_dir("worker") / ".git").is_dir()
    assert "refs/tags/deployed/1" in for_each_ref(home.applied_dir("worker"))
    denial = git(home.applied_dir("worker"), "cat-file", "-p", f"denied/{pending.id}")
    assert "Reason: agent destroyed" in denial and "Actor: alice" in denial
    marker = json.loads(home.destroyed_file("worker").read_text())
    assert marker["actor"] == "alice" and marker["commit"] == deployed_worker

    assert meta_subjects(home)[0] == "destroy worker"
    assert git(home.meta_dir, "rev-parse", "main").strip() == result["meta"]
    assert "worker" not in meta_pins(home) and "worker" not in meta.pins(home)
    assert "worker" not in git(home.meta_dir, "show", "main:flake.nix")

    assert "worker" not in home.agent_names()
    listed = json.loads(run_cli(home.root, "agent", "list", "--json", check=True).stdout)
    assert [a["name"] for a in listed] == ["manager"]
    [k] = spawn.kept(home)
    assert (k["name"], k["actor"], k["commit"]) == ("worker", "alice", deployed_worker)
    assert k["state"] and k["config"] and k["applied"]
    # Its history stays readable.
    assert Approvals(home, "worker").get(1).state == "deployed"


def test_a_destroyed_agent_is_never_deployed_or_pinned_again(home, runtime, deployed_worker):
    commit_config(home, "worker", {"x.nix": "{ }\n"}, "change")
    no_hook(home, "worker")
    a = Approvals(home, "worker").propose("HEAD", "manager")
    Approvals(home, "worker").approve(a.id, "operator")  # approved, build not yet run
    spawn.destroy(home, "worker", runtime, purge=False)
    head = git(home.meta_dir, "rev-parse", "main")
    done = deploy(home, "worker", a.id, runtime)
    assert done.state == "failed"
    assert "was destroyed" in done.states["failed"].trailers["Reason"]
    assert not home.deployed_dir("worker").exists()
    assert git(home.meta_dir, "rev-parse", "main") == head


def test_destroy_with_purge_deletes_everything(home, runtime, deployed_worker):
    result = spawn.destroy(home, "worker", runtime, purge=True)
    assert result["purged"] is True
    for path in (home.agent_dir("worker"), home.applied_dir("worker"), home.log_dir("worker")):
        assert not path.exists()
    assert meta_subjects(home)[0] == "destroy worker"
    assert "worker" not in meta_pins(home)
    assert spawn.kept(home) == [] and "worker" not in home.agent_names()
    # The name is free again.
    assert spawn.spawn(home, "worker", runtime, "manager").target == "worker#1"


def test_destroy_refusals_and_purging_kept_state(home, runtime, deployed_worker):
    with pytest.raises(BadInput, match="the manager cannot be destroyed"):
        spawn.destroy(home, "manager", runtime, purge=True)
    with pytest.raises(UnknownAgent, match="unknown agent 'nobody'"):
        spawn.destroy(home, "nobody", runtime, purge=False)
    spawn.spawn_draft(home, "drafty", "manager")
    with pytest.raises(BadInput, match="'drafty' is a draft, nothing runs: `--purge`"):
        spawn.destroy(home, "drafty", runtime, purge=False)
    spawn.destroy(home, "worker", runtime, purge=False)
    commits = len(meta_subjects(home))
    with pytest.raises(spawn.AlreadyDestroyed, match="already destroyed by operator"):
        spawn.destroy(home, "worker", runtime, purge=False)
    spawn.destroy(home, "worker", runtime, purge=True)
    spawn.destroy(home, "drafty", runtime, purge=True)
    assert not home.agent_dir("worker").exists() and not home.applied_dir("worker").exists()
    assert not home.agent_dir("drafty").exists()
    assert len(meta_subjects(home)) == commits  # purging kept state pins nothing
    assert spawn.kept(home) == [] and spawn.drafts(home) == []


def test_destroy_of_a_never_deployed_agent(home, runtime):
    spawn.spawn(home, "worker", runtime, "manager")
    result = spawn.destroy(home, "worker", runtime, purge=False)
    assert result["denied"] == [1]
    assert meta_subjects(home)[0] == "destroy worker"
    [k] = spawn.kept(home)
    assert k["commit"] is None


def test_cli_agent_destroy(home, runtime, deployed_worker):
    r = run_cli(home.root, "agent", "destroy", "worker")
    assert r.returncode == 0, r.stderr
    assert "state and repos are kept" in r.stdout
    r = run_cli(home.root, "agent", "destroy", "worker")
    assert r.returncode == 1 and "already destroyed" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run_cli(home.root, "agent", "destroy", "worker", "--purge")
    assert r.returncode == 0 and "deleted" in r.stdout
    assert not home.applied_dir("worker").exists()
    r = run_cli(home.root, "agent", "destroy", "worker")
    assert r.returncode == 1 and "unknown agent 'worker'" in r.stderr
    r = run_cli(home.root, "agent", "destroy", "Bad/Name")
    assert r.returncode == 2 and "invalid agent name" in r.stderr


# -- the dashboard ----------------------------------------------------------------------


@pytest.fixture
def client(home, runtime):
    operator.set_password(home, "correct horse battery")
    c = create_app(Hive(home, runtime)).test_client()
    log_in(c, home, "alice")
    return c


def test_dashboard_shows_drafts_and_kept_state(client, home, runtime):
    page = client.get("/").get_data(as_text=True)
    assert "No drafts." in page and "No destroyed agents with kept state." in page
    assert 'action="/agents/spawn"' in page and 'name="csrf_token"' in page
    spawn.spawn_draft(home, "drafty", "manager")
    commit = commit_config(home, "drafty", {"notes.md": "x\n"}, "draft notes")
    spawn.spawn(home, "gone", runtime, "manager")
    spawn.destroy(home, "gone", runtime, purge=False, actor="alice")
    page = client.get("/").get_data(as_text=True)
    assert 'data-draft="drafty"' in page and commit[:12] in page and "draft notes" in page
    assert 'data-kept="gone"' in page and "alice" in page
    state = client.get("/api/state").get_json()
    assert state["errors"] == []
    assert [d["name"] for d in state["drafts"]] == ["drafty"]
    assert [k["name"] for k in state["kept"]] == ["gone"]


def test_spawn_from_the_dashboard(client, home):
    r = client.post("/agents/spawn", data={"csrf_token": csrf(client), "name": "web"})
    assert r.status_code == 302 and r.headers["Location"] == "/review/web/1"
    assert "Actor: alice" in git(home.applied_dir("web"), "cat-file", "-p", "proposal/1")
    page = client.get("/review/web/1")
    assert page.status_code == 200
    r = client.post("/agents/spawn", data={"csrf_token": csrf(client), "name": "web"})
    assert r.status_code == 409 and b"agent &#39;web&#39; already exists" in r.data
    r = client.post("/agents/spawn", data={"csrf_token": csrf(client), "name": "No!"})
    assert r.status_code == 400 and b"invalid agent name" in r.data


def test_spawn_from_the_dashboard_needs_csrf(client, home):
    before = files(home)
    for data in ({"name": "web"}, {"name": "web", "csrf_token": "forged"}):
        r = client.post("/agents/spawn", data=data)
        assert r.status_code == 403 and b"CSRF" in r.data
    assert files(home) == before
    assert client.get("/agents/spawn").status_code == 404  # GET is the agent page: no agent


def test_destroy_ends_an_interrupted_build(home, runtime):
    from hyperhive.workflow.states import State

    spawn.spawn(home, "worker", runtime, "manager")
    no_hook(home, "worker")
    approvals = Approvals(home, "worker")
    approvals.approve(1, "operator")
    approvals.transition(1, State.BUILDING, "hyperhive")  # a build that crashed
    spawn.destroy(home, "worker", runtime, purge=False)
    failed = approvals.get(1)
    assert failed.state == "failed" and failed.states["failed"].trailers["Reason"] == "interrupted"


def test_a_kept_agent_takes_no_proposals(home, runtime):
    from hyperhive.errors import UnknownAgent
    from hyperhive.spawn import destroy, spawn
    from hyperhive.workflow.approvals import Approvals

    spawn(home, "gone", runtime, "operator")
    destroy(home, "gone", runtime, False, "operator")
    before = git(home.applied_dir("gone"), "for-each-ref")
    with pytest.raises(UnknownAgent, match="was destroyed"):
        Approvals(home, "gone").propose("HEAD", "manager")
    assert git(home.applied_dir("gone"), "for-each-ref") == before


# -- a draft's initial state --------------------------------------------------------------


def test_draft_write_state_writes_under_the_drafts_state(home):
    spawn.spawn_draft(home, "scout", "manager")
    state = home.state_dir("scout")
    got = spawn.write_draft_state(home, "scout", "notes.md", "# scout\nfind things\n")
    assert got == {"name": "scout", "path": "notes.md", "bytes": 20}
    assert (state / "notes.md").read_text() == "# scout\nfind things\n"
    spawn.write_draft_state(home, "scout", "brief/deep/task.md", "é" * 10)
    assert (state / "brief" / "deep" / "task.md").read_text() == "é" * 10
    spawn.write_draft_state(home, "scout", "notes.md", "replaced\n")  # whole, atomically
    assert (state / "notes.md").read_text() == "replaced\n"
    assert sorted(p.name for p in state.iterdir()) == ["brief", "notes.md"]  # no temp files


@pytest.mark.parametrize(
    "path, said",
    [
        ("", "non-empty path"),
        ("/etc/passwd", "relative"),
        ("../manager/state/notes.md", "'..'"),
        ("a/../../x", "'..'"),
        ("a//b", "empty parts"),
        ("./notes.md", "'.'"),
        ("a\\b", "bad state path"),
        ("x" * 256, "at most 255"),
        ("/".join("d" * 9), "at most 8 levels"),
        ("hyperhive-token", "belongs to hyperhive"),
        ("hyperhive.env", "belongs to hyperhive"),
        (".hyperhive/session", "belongs to hyperhive"),
    ],
)
def test_draft_write_state_refuses_paths_out_of_the_state(home, path, said):
    spawn.spawn_draft(home, "scout", "manager")
    with pytest.raises(BadInput, match=re.escape(said)):
        spawn.write_draft_state(home, "scout", path, "x")
    assert list(home.state_dir("scout").iterdir()) == []


def test_draft_write_state_never_follows_a_symlink(home, tmp_path):
    spawn.spawn_draft(home, "scout", "manager")
    state = home.state_dir("scout")
    outside = tmp_path / "outside"
    outside.mkdir()
    (state / "link").symlink_to(outside)
    (state / "notes.md").symlink_to(outside / "victim")
    with pytest.raises(BadInput, match="link is not a directory"):
        spawn.write_draft_state(home, "scout", "link/x.md", "x")
    with pytest.raises(BadInput, match="not a plain file"):
        spawn.write_draft_state(home, "scout", "notes.md", "x")
    assert list(outside.iterdir()) == []


def test_draft_write_state_limits_sizes_and_drafts_only(home, monkeypatch):
    spawn.spawn_draft(home, "scout", "manager")
    limit = spawn.MAX_STATE_FILE_BYTES
    spawn.write_draft_state(home, "scout", "big", "x" * limit)
    with pytest.raises(BadInput, match=f"{limit + 1} bytes; one state file holds at most"):
        spawn.write_draft_state(home, "scout", "bigger", "x" * (limit + 1))
    monkeypatch.setattr(spawn, "MAX_DRAFT_STATE_BYTES", limit + 10)
    spawn.write_draft_state(home, "scout", "big", "y" * limit)  # a replaced file counts once
    with pytest.raises(BadInput, match="state would pass"):
        spawn.write_draft_state(home, "scout", "more", "x" * 11)
    with pytest.raises(BadInput, match="content"):
        spawn.write_draft_state(home, "scout", "n", None)
    # an agent's state is its own; an unknown name has none
    with pytest.raises(AgentExists, match="request_apply_commit"):
        spawn.write_draft_state(home, "manager", "notes.md", "x")
    with pytest.raises(UnknownAgent, match="no draft 'ghost'"):
        spawn.write_draft_state(home, "ghost", "notes.md", "x")

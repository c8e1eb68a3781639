"""Every legal and illegal transition of the approval state machine, through the
`Approvals` API, checked in the applied repo with the git CLI."""

import subprocess
from pathlib import Path

import pytest
from support.hive import SHORT_STATES, commit_config, fresh_commit, git, run_cli

from hyperhive.agents import create_agent
from hyperhive.errors import (
    AlreadyDecided,
    BadInput,
    IllegalTransition,
    InvalidName,
    NotInitialized,
    UnknownAgent,
    UnknownApproval,
    UnknownCommit,
)
from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.deploy import deploy
from hyperhive.workflow.states import State

P, A, D, B, OK, F = SHORT_STATES
NAME = "manager"


def install_recorder(home: Home, record: Path, name: str = NAME) -> None:
    """Replace the shipped post-receive (which deploys) by one that only records its
    stdin, so a transition is just a transition."""
    hook = home.applied_dir(name) / "hooks" / "post-receive"
    hook.write_text(f"#!/bin/sh\ncat >> '{record}'\n")
    hook.chmod(0o755)


@pytest.fixture
def record(home: Home, tmp_path: Path) -> Path:
    path = tmp_path / "hook-stdin"
    path.touch()
    install_recorder(home, path)
    return path


def snapshot(home: Home) -> tuple[str, list[tuple[str, int]]]:
    """Every ref of the agent's applied repo (as git sees them) and every file in the home
    with its size, lock files aside: equal snapshots mean nothing was written."""
    refs = git(home.applied_dir(NAME), "for-each-ref", "--format=%(objectname) %(refname)")
    files = sorted(
        (str(p.relative_to(home.root)), p.stat().st_size if p.is_file() else -1)
        for p in home.root.rglob("*")
        if not p.name.endswith(".lock")
    )
    return refs, files


def tags_of(home: Home, approval_id: int, name: str = NAME) -> set[str]:
    out = git(home.applied_dir(name), "for-each-ref", "--format=%(refname)", "refs/tags/")
    return {r.split("/")[2] for r in out.split() if r.split("/")[3:] == [str(approval_id)]}


def apply(approvals: Approvals, approval_id: int, state: State, actor: str):
    if state is A:
        return approvals.approve(approval_id, actor)
    if state is D:
        return approvals.deny(approval_id, actor, f"{actor} says no")
    return approvals.transition(approval_id, state, actor)


# The states an approval can be in, with the path that leads there.
PATHS = {
    P: [],
    A: [A],
    D: [D],
    B: [A, B],
    OK: [A, B, OK],
    F: [A, B, F],
}
# What may follow each of them (the DESIGN.md table, written out independently).
LEGAL = {
    P: {A, D},
    A: {B},
    D: set(),
    B: {OK, F},
    OK: set(),
    F: set(),
}
CASES = [(at, to) for at in PATHS for to in State]


@pytest.mark.parametrize(("at", "to"), CASES, ids=[f"{a}->{t}" for a, t in CASES])
def test_transition(home: Home, record: Path, at: State, to: State):
    approvals = Approvals(home, NAME)
    commit = git(home.config_dir(NAME), "rev-parse", "HEAD").strip()
    for step in PATHS[at]:
        apply(approvals, 1, step, f"actor-{step}")
    assert approvals.get(1).state is at
    before = snapshot(home)
    hook_input = record.read_text()

    if to in LEGAL[at]:
        after = apply(approvals, 1, to, "zoe")
        assert after.state is to
        assert tags_of(home, 1) == {P, *PATHS[at], to}
        ref = f"refs/tags/{to}/1"
        shown = git(home.applied_dir(NAME), "cat-file", "-p", ref)
        assert shown.startswith(f"object {commit}\ntype commit\ntag {to}/1\ntagger zoe <")
        assert f"\n{to} {NAME}#1\n" in "\n" + shown.split("\n\n", 1)[1]
        assert "\nActor: zoe\n" in shown
        if to is D:
            assert "\nReason: zoe says no\n" in shown
        tag_sha = git(home.applied_dir(NAME), "rev-parse", ref).strip()
        # the hook saw exactly this one tag
        assert record.read_text() == hook_input + f"{'0' * 40} {tag_sha} {ref}\n"
        # and the state read back from refs alone agrees
        assert Approvals(home, NAME).get(1).state is to
    else:
        decided = {A, D} & set(PATHS[at])
        expected = AlreadyDecided if to in (A, D) and decided else IllegalTransition
        with pytest.raises(expected) as e:
            apply(approvals, 1, to, "zoe")
        assert type(e.value) is expected
        message = str(e.value)
        assert f"{NAME}#1" in message
        if expected is AlreadyDecided:
            (state,) = decided
            assert f"already {state} by actor-{state}" in message
        else:
            assert str(to) in message
        assert "zoe" not in message
        assert snapshot(home) == before
        assert record.read_text() == hook_input  # no hook ran
        assert approvals.get(1).state is at


def test_already_decided_names_who_decided_and_how(home: Home, record: Path):
    approvals = Approvals(home, NAME)
    approvals.approve(1, "alice")
    with pytest.raises(AlreadyDecided, match=r"manager#1 was already approved by alice at "):
        approvals.deny(1, "bob", "too late")
    with pytest.raises(AlreadyDecided, match=r"already approved by alice"):
        approvals.approve(1, "carol")

    second = approvals.propose(fresh_commit(home, NAME), "manager")
    approvals.deny(second.id, "dave", "no thanks")
    with pytest.raises(AlreadyDecided, match=rf"manager#{second.id} was already denied by dave"):
        approvals.approve(second.id, "erin")
    shown = git(home.applied_dir(NAME), "cat-file", "-p", f"refs/tags/denied/{second.id}")
    assert "Actor: dave\nReason: no thanks\n" in shown


def test_approving_a_denied_id_on_the_cli_is_refused_with_one_line(home: Home, record: Path):
    Approvals(home, NAME).deny(1, "alice", "not now")
    before = snapshot(home)
    proc = run_cli(home.root, "approve", "manager#1", env={"HYPERHIVE_ACTOR": "bob"})
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], "one line on stderr"
    assert "manager#1 was already denied by alice" in proc.stderr
    assert snapshot(home) == before


@pytest.mark.parametrize("reason", ["", "   ", "\n"])
def test_a_denial_needs_a_reason(home: Home, record: Path, reason: str):
    before = snapshot(home)
    with pytest.raises(BadInput, match="reason"):
        Approvals(home, NAME).deny(1, "alice", reason)
    assert snapshot(home) == before
    assert record.read_text() == ""


def test_unknown_approvals_are_refused(home: Home, record: Path, runtime: LocalRuntime):
    approvals = Approvals(home, NAME)
    before = snapshot(home)
    calls = [
        lambda: approvals.get(99),
        lambda: approvals.approve(99, "alice"),
        lambda: approvals.deny(99, "alice", "no"),
        lambda: approvals.transition(99, B, "alice"),
        lambda: approvals.transition(99, F, "alice"),
        lambda: deploy(home, NAME, 99, runtime),
    ]
    for call in calls:
        with pytest.raises(UnknownApproval, match=r"unknown approval manager#99"):
            call()
    assert snapshot(home) == before
    assert record.read_text() == ""


@pytest.mark.parametrize("decide", [None, "deny"])
def test_deploying_an_unapproved_id_is_refused(
    home: Home, record: Path, runtime: LocalRuntime, decide
):
    approvals = Approvals(home, NAME)
    if decide:
        approvals.deny(1, "alice", "no")
    before = snapshot(home)
    state = approvals.get(1).state
    with pytest.raises(IllegalTransition, match=rf"cannot mark manager#1 building: it is {state}"):
        deploy(home, NAME, 1, runtime)
    assert snapshot(home) == before
    assert not home.build_log(NAME, 1).exists()
    assert not home.deployed_dir(NAME).exists()
    assert runtime.status(NAME)["state"] == "not deployed"


def test_deploying_an_unapproved_id_on_the_cli(home: Home, record: Path):
    before = snapshot(home)
    proc = run_cli(home.root, "deploy", "manager#1")
    assert proc.returncode == 1
    assert "cannot mark manager#1 building: it is proposal, not approved" in proc.stderr
    assert snapshot(home) == before


def test_a_deployed_id_cannot_be_deployed_again(home: Home, record: Path, runtime):
    Approvals(home, NAME).approve(1, "alice")
    done = deploy(home, NAME, 1, runtime)
    assert done.state is OK
    before = snapshot(home)
    with pytest.raises(IllegalTransition, match="already deployed"):
        deploy(home, NAME, 1, runtime)
    assert snapshot(home) == before


# -- ids -------------------------------------------------------------------------------


def last_id(home: Home) -> int:
    return int(git(home.applied_dir(NAME), "cat-file", "-p", "refs/hyperhive/last-id"))


def test_ids_count_up_and_are_never_reused_after_tags_are_deleted(home: Home, record: Path):
    approvals = Approvals(home, NAME)
    repo = home.applied_dir(NAME)
    assert [approvals.propose(fresh_commit(home, NAME), "m").id for _ in range(3)] == [2, 3, 4]
    approvals.approve(4, "alice")
    assert last_id(home) == 4

    # the newest approval's tags go, one with `git tag -d`, one with `git update-ref -d`
    git(repo, "tag", "-d", "proposal/4")
    git(repo, "update-ref", "-d", "refs/tags/approved/4")
    assert tags_of(home, 4) == set()
    assert approvals.propose(fresh_commit(home, NAME), "m").id == 5

    # every state tag gone, packed or loose: still no reuse
    git(repo, "pack-refs", "--all")
    for ref in git(repo, "for-each-ref", "--format=%(refname)", "refs/tags/").split():
        git(repo, "update-ref", "-d", ref)
    assert git(repo, "for-each-ref", "refs/tags/") == ""
    assert approvals.all() == []
    assert approvals.propose(fresh_commit(home, NAME), "m").id == 6
    assert git(repo, "for-each-ref", "--format=%(refname)", "refs/tags/").split() == [
        "refs/tags/proposal/6"
    ]
    assert last_id(home) == 6


def test_ids_follow_existing_tags_when_the_counter_is_behind(home: Home, record: Path):
    """A counter lost or behind (say, restored from an old backup) never hands out an id a
    tag already carries."""
    approvals = Approvals(home, NAME)
    approvals.propose(fresh_commit(home, NAME), "m")
    approvals.propose(fresh_commit(home, NAME), "m")
    git(home.applied_dir(NAME), "update-ref", "-d", "refs/hyperhive/last-id")
    assert approvals.propose(fresh_commit(home, NAME), "m").id == 4
    assert last_id(home) == 4


def test_ids_are_per_agent(home: Home, record: Path, runtime: LocalRuntime):
    create_agent(home, "worker", runtime, "operator")
    assert Approvals(home, "worker").get(1).state is P
    assert Approvals(home, NAME).propose(fresh_commit(home, NAME), "m").id == 2
    assert Approvals(home, "worker").propose(fresh_commit(home, "worker"), "m").id == 2


# -- bad input -------------------------------------------------------------------------


def all_paths(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


BAD_NAMES = ["../x", "A", "", "a" * 40, "a/b", "a" * 32, "-a", "1a", "a_b", "a.git", "a b"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_bad_names_are_refused_before_any_path_is_touched(
    home: Home, runtime: LocalRuntime, bad: str
):
    before = all_paths(home.root.parent)
    for call in (
        lambda: Approvals(home, bad),
        lambda: create_agent(home, bad, runtime, "operator"),
        lambda: home.applied_dir(bad),
        lambda: home.config_dir(bad),
        lambda: home.build_log(bad, 1),
        lambda: deploy(home, bad, 1, runtime),
    ):
        with pytest.raises(InvalidName, match="invalid agent name"):
            call()
    assert all_paths(home.root.parent) == before


def test_bad_names_on_the_cli_are_usage_errors(home: Home):
    before = all_paths(home.root.parent)
    for args in (
        ["agent", "create", "../x"],
        ["propose", "A"],
        ["approve", "a/b#1"],
        ["deny", "a" * 40 + "#1", "--reason", "no"],
    ):
        proc = run_cli(home.root, *args)
        assert proc.returncode == 2, args
        assert "invalid" in proc.stderr
    assert all_paths(home.root.parent) == before


def test_longest_name_is_accepted(home: Home, runtime: LocalRuntime):
    name = "a" + "b-9" * 10  # 31 characters
    assert len(name) == 31
    proposal = create_agent(home, name, runtime, "operator")
    assert proposal.target == f"{name}#1"
    assert (home.root / "applied" / f"{name}.git" / "HEAD").is_file()


def test_unknown_agent_is_refused_and_nothing_is_created(home: Home, runtime: LocalRuntime):
    before = all_paths(home.root.parent)
    with pytest.raises(UnknownAgent, match="unknown agent 'ghost'"):
        Approvals(home, "ghost")
    with pytest.raises(UnknownAgent):
        deploy(home, "ghost", 1, runtime)
    proc = run_cli(home.root, "propose", "ghost")
    assert proc.returncode == 1 and "unknown agent 'ghost'" in proc.stderr
    proc = run_cli(home.root, "approve", "ghost#1")
    assert proc.returncode == 1 and "unknown agent 'ghost'" in proc.stderr
    assert all_paths(home.root.parent) == before


def test_an_uninitialized_home_is_refused(tmp_path: Path):
    empty = Home(tmp_path / "nothing")
    with pytest.raises(NotInitialized, match="hyperhive init"):
        Approvals(empty, NAME)
    assert not empty.root.exists()


@pytest.mark.parametrize("spec", ["0" * 40, "nope", "deadbeef", "HEAD~3", "tree"])
def test_proposing_an_unknown_commit_is_refused_and_writes_nothing(
    home: Home, record: Path, spec: str
):
    if spec == "tree":
        spec = git(home.config_dir(NAME), "rev-parse", "HEAD^{tree}").strip()
    before = snapshot(home)
    with pytest.raises(UnknownCommit, match="commit"):
        Approvals(home, NAME).propose(spec, "manager")
    assert snapshot(home) == before
    assert record.read_text() == ""
    # the id counter did not move either: the next proposal is #2
    assert Approvals(home, NAME).propose(fresh_commit(home, NAME), "manager").id == 2


def test_proposing_an_unknown_commit_on_the_cli(home: Home):
    before = snapshot(home)
    proc = run_cli(home.root, "propose", NAME, "0" * 40)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "unknown commit" in proc.stderr and "0" * 40 in proc.stderr
    assert snapshot(home) == before


def test_propose_records_the_commit_subject_actor_and_reason(home: Home, record: Path):
    sha = commit_config(home, NAME, {"notes.md": "hi\n"}, "add notes\n\nbecause")
    approval = Approvals(home, NAME).propose(sha[:8], "manager", reason="try notes")
    assert approval.commit == sha
    assert approval.state is P
    repo = home.applied_dir(NAME)
    assert git(repo, "rev-parse", f"refs/tags/proposal/{approval.id}^{{commit}}").strip() == sha
    fmt = "--format=%(taggername)|%(subject)|%(contents:trailers:only,unfold)"
    out = git(repo, "for-each-ref", fmt, f"refs/tags/proposal/{approval.id}")
    assert out.strip() == (
        "manager|proposal manager#2|Actor: manager\nSubject: add notes\nReason: try notes"
    )
    # the commit and its tree came along into the applied repo
    assert git(repo, "show", f"{sha}:notes.md") == "hi\n"


# -- rollback --------------------------------------------------------------------------


def main_of(home: Home) -> str:
    return git(home.applied_dir(NAME), "rev-parse", "refs/heads/main").strip()


def test_rollback_proposes_an_earlier_deployed_commit_again(
    home: Home, record: Path, runtime: LocalRuntime
):
    approvals = Approvals(home, NAME)
    first = approvals.get(1).commit
    approvals.approve(1, "alice")
    assert deploy(home, NAME, 1, runtime).state is OK
    assert main_of(home) == first

    second = commit_config(home, NAME, {"agent.nix": "{ ... }: { x = 1; }\n"}, "change")
    assert approvals.propose("HEAD", "manager").id == 2
    approvals.approve(2, "alice")
    assert deploy(home, NAME, 2, runtime).state is OK
    assert main_of(home) == second
    old_tags = git(home.applied_dir(NAME), "for-each-ref", "refs/tags/")

    rollback = approvals.propose(first, "operator", reason="roll back", rollback=True)
    assert rollback.id == 3 and rollback.commit == first
    assert rollback.states[P].trailers["Rollback"] == "manager#1"
    approvals.approve(3, "alice")
    assert deploy(home, NAME, 3, runtime).state is OK
    assert main_of(home) == first
    assert (home.deployed_dir(NAME) / "agent.nix").read_text() == (
        git(home.config_dir(NAME), "show", f"{first}:agent.nix")
    )

    # history is never rewritten: earlier tags are untouched, and all three deploys show
    tags_now = git(home.applied_dir(NAME), "for-each-ref", "refs/tags/")
    assert set(old_tags.splitlines()) < set(tags_now.splitlines())
    assert [tags_of(home, i) for i in (1, 2, 3)] == [{P, A, B, OK}] * 3
    meta_log = git(home.meta_dir, "log", "--format=%s").splitlines()
    assert meta_log == [
        f"deploy manager#3 {first[:12]}",
        f"deploy manager#2 {second[:12]}",
        f"deploy manager#1 {first[:12]}",
        "init hive",
    ]


def test_rollback_to_a_commit_only_the_applied_repo_still_has(
    home: Home, record: Path, runtime: LocalRuntime
):
    """The manager rewrote its config history; the deployed commit lives on in applied."""
    approvals = Approvals(home, NAME)
    config = home.config_dir(NAME)
    gone = commit_config(home, NAME, {"agent.nix": "{ ... }: { gone = true; }\n"}, "gone")
    approvals.propose("HEAD", "manager")
    approvals.approve(2, "alice")
    assert deploy(home, NAME, 2, runtime).state is OK
    git(config, "reset", "-q", "--hard", "HEAD~1")
    git(config, "reflog", "expire", "--expire=now", "--all")
    git(config, "gc", "-q", "--prune=now")
    missing = subprocess.run(["git", "cat-file", "-e", gone], cwd=config)
    assert missing.returncode != 0

    approvals.deny(1, "alice", "superseded")  # else #3 would have #1's tree: nothing new
    approvals.propose("HEAD", "manager", rollback=True)  # #3: back to the first config
    approvals.approve(3, "alice")
    assert deploy(home, NAME, 3, runtime).state is OK
    again = approvals.propose(gone, "operator", reason="roll forward")
    assert (again.id, again.commit) == (4, gone)
    approvals.approve(4, "alice")
    assert deploy(home, NAME, 4, runtime).state is OK
    assert main_of(home) == gone

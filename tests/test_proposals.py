"""Proposals that make sense: a commit with nothing new is refused ("no new changes", as
Gerrit does) on every path; a rollback (an ancestor of the deployed commit) must say so
and its review names the deploy it returns to; `propose` without a commit warns when the
checkout's HEAD is behind a pending proposal a push made."""

import subprocess

import pytest
from support.hive import commit_config, fresh_commit, git, log_in, run_cli

from forge_ui import create_app
from forge_ui.filters import utc
from hyperhive.errors import HistoryTooLarge, NoNewChanges, RollbackNotSaid
from hyperhive.hive import Hive
from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.deploy import deploy


def quiet(home: Home) -> None:
    (home.applied_dir("manager") / "hooks" / "post-receive").unlink()  # no deploys by hook


def deployed(home: Home, runtime: LocalRuntime, approval_id: int) -> str:
    Approvals(home, "manager").approve(approval_id, "operator")
    a = deploy(home, "manager", approval_id, runtime)
    assert a.state == "deployed"
    return a.commit


def test_the_same_tree_again_is_no_new_changes(home: Home, runtime: LocalRuntime):
    quiet(home)
    approvals = Approvals(home, "manager")
    head = git(home.config_dir("manager"), "rev-parse", "HEAD").strip()
    # Pending #1 has HEAD's tree: the CLI exits 1 with one line, and no tag is written.
    proc = run_cli(home.root, "propose", "manager")
    assert proc.returncode == 1
    assert proc.stderr == (
        f"hyperhive: no new changes: {head[:12]} has the tree of manager#1 "
        f"({head[:12]}, proposal)\n"
    )
    assert [a.id for a in approvals.all()] == [1]
    # Another commit with the same tree (an empty commit) is no newer.
    git(
        home.config_dir("manager"),
        "-c",
        "user.name=m",
        "-c",
        "user.email=m@h",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "nothing",
    )
    with pytest.raises(NoNewChanges, match="has the tree of manager#1"):
        approvals.propose("HEAD", "manager")

    first = deployed(home, runtime, 1)
    with pytest.raises(NoNewChanges, match=f"tree of the deployed commit {first[:12]}"):
        approvals.propose("HEAD", "manager")
    # A denied proposal's tree may come again: nothing is on its way with it.
    second = approvals.propose(fresh_commit(home, "manager"), "manager")
    approvals.deny(second.id, "operator", "not yet")
    again = approvals.propose(second.commit, "manager", reason="now")
    assert again.id == second.id + 1
    assert [a.id for a in approvals.all()] == [1, second.id, again.id]


def test_a_rollback_must_say_so_and_its_review_names_the_deploy(home: Home, runtime):
    quiet(home)
    approvals = Approvals(home, "manager")
    first = deployed(home, runtime, 1)
    commit_config(home, "manager", {"notes.md": "two\n"}, "second")
    second = approvals.propose("HEAD", "manager").id
    deployed(home, runtime, second)

    proc = run_cli(home.root, "propose", "manager", first)
    assert proc.returncode == 1
    assert "is an ancestor of the deployed commit" in proc.stderr
    assert "say so with --rollback (a push: -o rollback)" in proc.stderr
    with pytest.raises(RollbackNotSaid, match="not an ancestor of the deployed commit"):
        approvals.propose(fresh_commit(home, "manager"), "manager", rollback=True)

    # A rollback that is also a follow-up of the deploy it undoes: both trailers.
    proc = run_cli(
        home.root, "propose", "manager", first, "--rollback", "--follows", f"#{second}", check=True
    )
    back = approvals.get(int(proc.stdout.strip().partition("#")[2]))
    assert back.commit == first and back.follows == second
    assert back.states["proposal"].trailers["Rollback"] == "manager#1"
    tag = git(home.applied_dir("manager"), "cat-file", "-p", f"proposal/{back.id}")
    assert "Rollback: manager#1" in tag and f"Follows: manager#{second}" in tag

    client = create_app(Hive(home, runtime)).test_client()
    log_in(client, home)
    page = client.get(f"/review/manager/{back.id}").get_data(as_text=True)
    when = utc(approvals.get(1).states["deployed"].time)
    assert "Rolls back to the commit deployed as" in page
    assert f'<a href="/review/manager/1" class="mono">manager#1</a> on {when}.' in page
    assert f'follows <a href="/review/manager/{second}" class="mono">manager#{second}</a>' in page
    # An ancestor no deploy ran exactly is a rollback too, said as such.
    commit_config(home, "manager", {"notes.md": "three\n"}, "third")
    between = git(home.config_dir("manager"), "rev-parse", "HEAD~1").strip()
    assert between == approvals.get(second).commit
    third = approvals.propose("HEAD", "manager").id
    deployed(home, runtime, third)
    mid = approvals.propose(between, "manager", rollback=True)
    assert mid.states["proposal"].trailers["Rollback"] == f"manager#{second}"


def test_propose_head_warns_when_a_pushed_proposal_is_ahead(home: Home, runtime):
    quiet(home)
    deployed(home, runtime, 1)
    pushed = Approvals(home, "manager").propose(fresh_commit(home, "manager"), "manager")
    commit_config(home, "manager", {"notes.md": "mine\n"}, "another line of work")
    proc = run_cli(home.root, "propose", "manager")
    assert proc.returncode == 0  # HEAD moved on: not behind, no warning
    assert proc.stderr == ""
    git(home.config_dir("manager"), "reset", "-q", "--hard", "HEAD~1")  # back behind it
    proc = run_cli(home.root, "propose", "manager")
    assert proc.returncode == 1  # HEAD is the deployed commit: nothing new to propose
    assert proc.stderr.splitlines()[0] == (
        f"warning: HEAD of manager's config repo is behind manager#{pushed.id} "
        f"({pushed.commit[:12]}, pushed over git): `git pull` it first, or propose "
        f"{pushed.commit[:12]}"
    )
    # Naming the commit says what is meant: no warning.
    proc = run_cli(home.root, "propose", "manager", "HEAD")
    assert "warning" not in proc.stderr


def test_a_long_history_is_held_to_max_push_bytes_and_its_rollback_found_by_git(
    home: Home, runtime, monkeypatch
):
    """300 commits on the deployed one: past LOOSE_MAX objects (git packs the copy) and
    past ANCESTRY_WALK commits (git answers whether a proposal rolls back)."""
    quiet(home)
    approvals = Approvals(home, "manager")
    deployed(home, runtime, 1)
    config, applied = home.config_dir("manager"), home.applied_dir("manager")
    stream = b"".join(
        b"commit refs/heads/main\ncommitter m <m@h> %d +0000\ndata 4\nc%03d\n"
        % (1_800_000_000 + i, i % 1000)
        + (b"from refs/heads/main^0\n" if i == 0 else b"")
        + b"M 100644 inline notes/long.md\ndata %d\n%d\n" % (len(str(i)), i)
        for i in range(300)
    )
    subprocess.run(["git", "fast-import", "--quiet"], cwd=config, input=stream, check=True)
    packs = sorted((applied / "objects" / "pack").iterdir())
    monkeypatch.setenv("HYPERHIVE_GIT_MAX_PUSH_BYTES", "2000")
    with pytest.raises(HistoryTooLarge, match=r"more than 2000 bytes packed \(git.max_push"):
        approvals.propose("HEAD", "manager")
    assert [a.id for a in approvals.all()] == [1]
    assert sorted((applied / "objects" / "pack").iterdir()) == packs  # nothing kept
    monkeypatch.delenv("HYPERHIVE_GIT_MAX_PUSH_BYTES")
    long = approvals.propose("HEAD", "manager")
    git(applied, "fsck", "--strict", "--no-dangling", "--no-progress")
    deployed(home, runtime, long.id)
    old = git(config, "rev-parse", "main~290").strip()
    with pytest.raises(RollbackNotSaid, match="is an ancestor of the deployed commit"):
        approvals.propose(old, "manager")
    back = approvals.propose(old, "manager", rollback=True)
    assert back.states["proposal"].trailers["Rollback"] == "-"

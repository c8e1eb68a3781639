"""Every dulwich Repo the engine and the forge open is closed again: an open repo keeps its
pack files open, and the daemon serves from many threads for weeks. The check tracks
every Repo constructed in this process and fails naming where each unclosed one was
opened."""

import time
import traceback

import pytest
from dulwich.repo import Repo
from support.hive import commit_config, log_in
from support.wait import wait_for

from forge_ui import create_app, policy_view
from hyperhive import operator
from hyperhive.hive import Hive
from hyperhive.spawn import destroy, drafts, spawn
from hyperhive.workflow import checks, comments, meta
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.deploy import deploy
from hyperhive.workflow.retention import prune


@pytest.fixture
def open_repos(monkeypatch) -> dict[int, tuple[Repo, str]]:
    """Repos constructed and not closed yet (kept alive, so an id is never reused), with
    the stack that opened each."""
    opened: dict[int, tuple[Repo, str]] = {}
    init, close = Repo.__init__, Repo.close

    def tracked_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        opened[id(self)] = (self, "".join(traceback.format_stack(limit=6)[:-1]))

    def tracked_close(self):
        opened.pop(id(self), None)
        close(self)

    monkeypatch.setattr(Repo, "__init__", tracked_init)
    monkeypatch.setattr(Repo, "close", tracked_close)
    return opened


def unclosed(opened: dict[int, tuple[Repo, str]]) -> str:
    return "\n".join(f"{repo.path} opened at:\n{stack}" for repo, stack in opened.values())


def test_the_tracker_sees_an_unclosed_repo(open_repos, home):
    """The check itself: a repo left open is reported, a closed one is not."""
    with Repo(str(home.meta_dir)):
        pass
    assert not open_repos
    leaked = Repo(str(home.meta_dir))
    assert str(home.meta_dir) in unclosed(open_repos)
    leaked.close()
    assert not open_repos


def test_workflow_and_forge_close_every_repo(open_repos, home, runtime):
    # the shipped post-receive hook deploys in a subprocess; here the deploy runs in-process
    (home.applied_dir("manager") / "hooks" / "post-receive").chmod(0o644)
    operator.set_password(home, "correct horse battery")
    client = create_app(Hive(home, runtime)).test_client()
    log_in(client, home)
    approvals = Approvals(home, "manager")
    approvals.approve(1, "operator")
    deploy(home, "manager", 1, runtime)
    for round in range(2):  # repeated: a leak per operation would pile up
        head = commit_config(home, "manager", {f"f{round}.txt": f"{round}\n"}, f"change {round}")
        proposed = approvals.propose("HEAD", "manager", reason="more")
        checks.run(home, "manager", proposed.id, runtime, 60)  # its tag, its checkout
        if round % 2:
            approvals.deny(proposed.id, "operator", "not now")
        else:
            approvals.approve(proposed.id, "operator")
            deploy(home, "manager", proposed.id, runtime)
        Approvals(home, "manager").all(with_pruned=True)
        meta.pins(home)
        for path in (
            "/",
            "/agents/manager",
            f"/review/manager/{proposed.id}",
            "/repos",
            "/repos/meta/log",
            "/repos/manager/config/log",
            "/repos/manager/applied/tags",
            "/repos/manager/config/tree",
            f"/repos/manager/config/blob/f{round}.txt",
            f"/repos/manager/config/raw/f{round}.txt",
            f"/repos/manager/config/commit/{head}",
            "/api/state",
            f"/api/approvals/manager/{proposed.id}",  # the check and the policy diff
        ):
            assert client.get(path).status_code == 200, path
    # review comments, a follow-up that rolls back, its interdiff, a prune and its page
    first = approvals.get(1).commit
    comments.add(home, "manager", proposed.id, "alice", "why this?")
    back = approvals.propose(first, "manager", rollback=True, follows=proposed.id)
    for path in (f"/review/manager/{back.id}", f"/review/manager/{back.id}?diff=interdiff"):
        assert client.get(path).status_code == 200, path
    prune(home, 1, now=time.time() + 400 * 86400)
    assert client.get(f"/review/manager/{proposed.id}").status_code == 200
    Approvals(home, "manager").all(with_pruned=True)
    spawned = spawn(home, "worker", runtime, "operator")
    drafts(home)
    destroy(home, "worker", runtime, purge=False)
    assert spawned.agent == "worker"
    # the pages queued policy diffs for the background evaluation: let it finish
    wait_for(lambda: not policy_view.WARMER.pending, what="the policy diffs' evaluation")
    assert not open_repos, unclosed(open_repos)

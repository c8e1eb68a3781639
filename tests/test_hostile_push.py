"""Hostile pushes over the real git remote: tree shapes a checkout would turn into writes
outside the repo (built with dulwich: the git CLI refuses to make some of them), a
checkout that cannot follow main, and racing `git push --atomic`; each checked with the
git CLI afterwards."""

import subprocess
import threading
from pathlib import Path

import pytest
from dulwich.objects import Blob, Commit, Tree
from dulwich.repo import Repo
from support.gitcli import commit, objects_of, ok_git, refs_of, run_git
from support.hive import git
from support.remote import agent, clone, hive  # noqa: F401
from support.wait import wait_for

from hyperhive.errors import UnsafeTree
from hyperhive.gitstore import worktree
from hyperhive.gitstore.repos import open_repo
from hyperhive.runtime.base import BuildError
from hyperhive.runtime.local import LocalRuntime
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.lock import locked
from hyperhive.workflow.push import push_lock

LINK, FILE, DIR = 0o120000, 0o100644, 0o040000


def hostile_commit(work: Path, entries: list) -> str:
    """A commit on HEAD of the clone `work` whose tree is HEAD's plus `entries`: (name,
    mode, bytes) for a blob, (name, [entries]) for a subtree — names taken as they are."""
    repo = Repo(str(work))
    store = repo.object_store

    def tree_of(base: Tree | None, items: list) -> bytes:
        tree = Tree()
        if base is not None:
            for e in base.iteritems():
                tree.add(e.path, e.mode, e.sha)
        for item in items:
            name = item[0].encode() if isinstance(item[0], str) else item[0]
            if isinstance(item[1], list):
                tree.add(name, DIR, tree_of(None, item[1]))
            else:
                blob = Blob.from_string(item[2])
                store.add_object(blob)
                tree.add(name, item[1], blob.id)
        store.add_object(tree)
        return tree.id

    head = repo.head()
    c = Commit()
    c.tree = tree_of(repo[repo[head].tree], entries)
    c.parents = [head]
    c.author = c.committer = b"manager <manager@hyperhive>"
    c.author_time = c.commit_time = 1_700_000_000
    c.author_timezone = c.commit_timezone = 0
    c.message = b"hostile\n"
    store.add_object(c)
    repo.close()
    return c.id.decode()


def push(work: Path, sha: str, *refs: str) -> subprocess.CompletedProcess:
    return run_git(work, "push", "origin", *(f"{sha}:{r}" for r in refs))


SHAPES = {
    # a name with '/' beside a symlink to a host directory: the checkout wrote through it
    "slash-name": lambda out: [("e", LINK, str(out).encode()), ("e/pwned2", FILE, b"x\n")],
    "agent-nix-link": lambda out: [("agent.nix", LINK, str(out / "secret.txt").encode())],
    "absolute-link": lambda out: [("notes", LINK, str(out).encode())],
    "dotdot-link": lambda out: [("up", LINK, b"../../../../../../../../" + str(out)[1:].encode())],
    # lexically inside (dot/sub/../.. is '.'), but dot -> . makes it the repo's parent
    "through-a-link": lambda out: [
        ("dot", LINK, b"."),
        ("sub", [("f", FILE, b"f\n")]),
        ("esc", LINK, b"dot/sub/../.."),
    ],
    "loop": lambda out: [("a", LINK, b"b"), ("b", LINK, b"a")],
    "dotgit": lambda out: [(".GIT", [("config", FILE, b"[core]\n")])],
    "dotdot-name": lambda out: [("..", [("x", FILE, b"x\n")])],
}


@pytest.mark.parametrize("shape", SHAPES)
def test_an_unsafe_tree_is_refused_and_nothing_moves(hive, tmp_path, shape):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret\n")
    name = agent(hive, f"hostile-{shape}")
    work = clone(hive, tmp_path, f"{name}/config.git", hive.manager)
    sha = hostile_commit(work, SHAPES[shape](outside))
    config = hive.home.config_dir(name)
    before = refs_of(config)

    for ref in ("main", "refs/for/main"):
        proc = push(work, sha, ref)
        assert proc.returncode != 0, proc.stderr
        assert "(unsafe tree)" in proc.stderr
        assert "cannot be checked out safely" in proc.stderr

    proc = run_git(work, "push", "--atomic", "origin", f"{sha}:main", f"{sha}:refs/for/main")
    assert proc.returncode != 0
    assert refs_of(config) == before
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert git(config, "status", "--porcelain") == ""
    assert Approvals(hive.home, name).states().keys() == {1}
    # not wedged: an ordinary push still moves main and its checkout
    ok_git(work, "reset", "-q", "--hard", "origin/main")
    good = commit(work, {"notes.md": "fine\n"}, "fine")
    ok_git(work, "push", "origin", "HEAD:main")
    assert git(config, "rev-parse", "main").strip() == good
    assert (config / "notes.md").read_text() == "fine\n"


def test_a_symlink_inside_the_tree_is_kept_as_a_symlink(hive, tmp_path):
    name = agent(hive, "linked")
    work = clone(hive, tmp_path, f"{name}/config.git", hive.manager)
    sha = hostile_commit(
        work,
        [
            ("docs", [("a.md", FILE, b"a\n"), ("up", LINK, b"../notes.md")]),
            ("notes.md", FILE, b"n\n"),
        ],
    )
    ok_git(work, "push", "origin", f"{sha}:main")
    config = hive.home.config_dir(name)
    assert git(config, "rev-parse", "main").strip() == sha
    assert (config / "docs" / "up").is_symlink()
    assert (config / "docs" / "up").read_text() == "n\n"
    assert git(config, "status", "--porcelain") == ""


def test_a_checkout_that_cannot_follow_keeps_main_where_it_was(hive, tmp_path):
    """The filesystem refuses a name (over 255 bytes): main does not move, the checkout is
    as it was, and the next push goes through — nothing is wedged."""
    name = agent(hive, "unwritable")
    work = clone(hive, tmp_path, f"{name}/config.git", hive.manager)
    config = hive.home.config_dir(name)
    before = git(config, "rev-parse", "main").strip()
    sha = hostile_commit(work, [("a.md", FILE, b"a\n"), ("n" * 300, FILE, b"long\n")])

    proc = push(work, sha, "main")

    assert proc.returncode != 0 and "(checkout failed)" in proc.stderr
    assert "main did not move" in proc.stderr
    assert git(config, "rev-parse", "main").strip() == before
    assert git(config, "status", "--porcelain") == ""
    assert not (config / "a.md").exists()
    assert not (config / ".git" / worktree.JOURNAL).exists()
    ok_git(work, "reset", "-q", "--hard", "origin/main")
    good = commit(work, {"b.md": "b\n"}, "b")
    ok_git(work, "push", "origin", "HEAD:main")
    assert git(config, "rev-parse", "main").strip() == good


def test_racing_atomic_pushes_one_wins_whole(hive, tmp_path):
    """Two `git push --atomic HEAD:main HEAD:refs/for/main` from the same main: the loser
    gets neither main nor a proposal."""
    name = agent(hive, "racing")
    for i in (1, 2):
        (tmp_path / str(i)).mkdir()
    works = [clone(hive, tmp_path / str(i), f"{name}/config.git", hive.manager) for i in (1, 2)]
    shas = [commit(w, {"race.md": f"{i}\n"}, f"race {i}") for i, w in enumerate(works)]
    config = hive.home.config_dir(name)
    packs = config / ".git" / "objects" / "pack"
    start = len(list(packs.glob("*.pack")))
    results: list = [None, None]

    def go(i):
        results[i] = run_git(
            works[i], "push", "--atomic", "origin", "HEAD:main", "HEAD:refs/for/main"
        )

    # Both pass their checks and move their objects in while the push lock is held here;
    # then they apply one after the other.
    with locked(push_lock(hive.home, name)):
        threads = [threading.Thread(target=go, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        wait_for(lambda: len(list(packs.glob("*.pack"))) >= start + 2, what="both pushes")
    for t in threads:
        t.join(60)

    won = [i for i in (0, 1) if results[i].returncode == 0]
    assert len(won) == 1, [r.stderr for r in results]
    lost = results[1 - won[0]]
    assert "fetch first" in lost.stderr or "refs/heads/main moved" in lost.stderr
    assert "atomic push failure" in lost.stderr
    assert git(config, "rev-parse", "main").strip() == shas[won[0]]
    assert (config / "race.md").read_text() == f"{won[0]}\n"
    approvals = Approvals(hive.home, name)
    assert approvals.states().keys() == {1, 2}
    assert approvals.get(2).commit == shas[won[0]]


def test_a_failed_proposal_moves_main_back(home, runtime, tmp_path):
    """Atomic the other way: main moved first, then the proposal failed — main and the
    checkout go back to where they were."""
    from dulwich.object_store import DiskObjectStore

    from hyperhive.agents import create_agent
    from hyperhive.gitstore.receive import Command
    from hyperhive.workflow.push import FOR_MAIN, MAIN, ConfigPush

    create_agent(home, "atomic", runtime, "operator")
    config = home.config_dir("atomic")
    old = git(config, "rev-parse", "HEAD").strip()
    (config / "x.md").write_text("x\n")
    git(config, "add", "x.md")
    git(config, "commit", "-qm", "x")
    new = git(config, "rev-parse", "HEAD").strip()
    git(config, "reset", "-q", "--hard", old)  # as if main had not moved yet
    rules = ConfigPush(home, "atomic", "manager", lambda a: "")
    commands = [Command(old.encode(), new.encode(), MAIN), Command(b"0" * 40, b"f" * 40, FOR_MAIN)]
    store = DiskObjectStore(str(config / ".git" / "objects"))
    store.close()

    failed = rules.apply(commands, print)

    assert set(failed) == {FOR_MAIN}
    assert git(config, "rev-parse", "main").strip() == old
    assert git(config, "status", "--porcelain") == ""
    assert not (config / "x.md").exists()
    assert Approvals(home, "atomic").states().keys() == {1}


def test_the_checkout_writes_no_file_through_a_symlink(tmp_path):
    """Even a tree that slipped past the checks: a symlink in the way is replaced, never
    written through."""
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "e").symlink_to(outside)
    root = worktree.Root(dest)
    try:
        root.write(b"e/pwned", 0o100644, b"x\n")
        root.write(b"f", 0o120000, str(outside).encode())
        root.write(b"f", 0o100644, b"plain\n")  # a file over the symlink, not through it
    finally:
        root.close()
    assert list(outside.iterdir()) == []
    assert (dest / "e").is_dir() and not (dest / "e").is_symlink()
    assert (dest / "e" / "pwned").read_text() == "x\n"
    assert not (dest / "f").is_symlink() and (dest / "f").read_text() == "plain\n"


@pytest.mark.parametrize("shape", ["slash-name", "agent-nix-link"])
def test_the_local_runtime_refuses_to_check_out_an_unsafe_tree(home, tmp_path, shape):
    """A commit written straight into the applied repo (no proposal checks): the deploy's
    checkout refuses it, nothing is written outside deployed.new/ and no host file is read
    into the build log (which a failed tag carries to the agent)."""
    from hyperhive.agents import create_agent

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret\n")
    runtime = LocalRuntime(home)
    create_agent(home, "victim", runtime, "operator")
    applied = home.applied_dir("victim")
    work = tmp_path / "w"
    ok_git(tmp_path, "clone", "-q", str(home.config_dir("victim")), str(work))
    sha = hostile_commit(work, SHAPES[shape](outside))
    ok_git(work, "push", "-q", str(applied), f"{sha}:refs/heads/hostile")
    log: list[str] = []

    with pytest.raises(BuildError, match="cannot be checked out"):
        runtime.update("victim", sha, log.append)
    assert not any("top secret" in line for line in log)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert not home.deployed_dir("victim").with_name("deployed.new").exists()
    with pytest.raises(UnsafeTree):
        Approvals(home, "victim").propose(sha, "operator")
    with open_repo(applied) as repo, pytest.raises(UnsafeTree):
        worktree.write_tree(repo, sha.encode(), tmp_path / "x")


# -- what a push inflates to ----------------------------------------------------------


def test_an_object_inflating_over_the_limit_is_refused(hive, tmp_path):
    """20 MiB of text is a pack of a few KiB; git.max_object_bytes (10 MiB) refuses it."""
    name = agent(hive, "inflated")
    work = clone(hive, tmp_path, f"{name}/config.git", hive.manager)
    config = hive.home.config_dir(name)
    files = objects_of(config)
    commit(work, {"big.txt": b"all work and no play\n" * 1_000_000}, "big")

    for ref in ("main", "refs/for/main"):
        proc = run_git(work, "push", "origin", f"HEAD:{ref}")
        assert proc.returncode != 0
        assert "(object too large)" in proc.stderr
        assert "inflates to 21000000 bytes, over the limit of 10485760" in proc.stderr
        assert "git.max_object_bytes in hyperhive.toml" in proc.stderr
    assert objects_of(config) == files
    assert Approvals(hive.home, name).states().keys() == {1}


def test_a_push_inflating_over_the_total_is_refused(hive, tmp_path):
    name = agent(hive, "inflated-total")
    work = clone(hive, tmp_path, f"{name}/config.git", hive.manager)
    config = hive.home.config_dir(name)
    files = objects_of(config)
    commit(work, {f"f{i}.txt": f"{i} repeated line\n".encode() * 40_000 for i in range(3)}, "3")
    settings = hive.root / "hyperhive.toml"
    settings.write_text("[git]\nmax_push_inflated_bytes = 1000000\n")
    try:
        proc = run_git(work, "push", "origin", "HEAD:main")
    finally:
        settings.unlink()
    assert proc.returncode != 0 and "(push too large)" in proc.stderr
    assert "the pack inflates to more than 1000000 bytes" in proc.stderr
    assert "git.max_push_inflated_bytes" in proc.stderr
    assert objects_of(config) == files
    ok_git(work, "push", "origin", "HEAD:main")  # within the default, it goes through


def test_a_checkout_cut_by_a_crash_is_finished_by_the_next_push(hive, tmp_path):
    """A switch recorded but cut half-way (some files of the new commit written, main not
    moved): the next push finishes it instead of refusing a checkout with changes."""
    name = agent(hive, "cutswitch")
    work = clone(hive, tmp_path, f"{name}/config.git", hive.manager)
    config = hive.home.config_dir(name)
    main = git(config, "rev-parse", "main").strip()
    sha = commit(work, {"half.md": "h\n", "agent.nix": "{ }\n"}, "next")
    ok_git(work, "push", "origin", "HEAD:refs/for/main")  # its objects are in the repo now
    (config / ".git" / worktree.JOURNAL).write_text(f"{main} {sha}\n")
    (config / "half.md").write_text("h\n")  # what the cut switch wrote before the crash
    assert git(config, "status", "--porcelain") != ""

    ok_git(work, "push", "origin", "HEAD:main")

    assert git(config, "rev-parse", "main").strip() == sha
    assert git(config, "status", "--porcelain") == ""
    assert (config / "agent.nix").read_text() == "{ }\n"
    assert not (config / ".git" / worktree.JOURNAL).exists()

"""The read views' caches (gitstore/cache.py): parsed tags by id, and listings of refs
kept only while the directories holding them are unchanged and settled."""

import os
import subprocess
import time

from support.hive import commit_config

from hyperhive.gitstore import cache, refs, tags
from hyperhive.home import Home
from hyperhive.workflow.approvals import Approvals, parse_tag_refs
from hyperhive.workflow.states import State


def age_refs(home: Home, name: str, seconds: float = 60) -> None:
    """Make the applied repo's refs look written `seconds` ago (settled)."""
    control = home.applied_dir(name)
    old = time.time() - seconds
    for top, dirs, _ in os.walk(control / "refs"):
        for d in dirs:
            os.utime(os.path.join(top, d), (old, old))
    os.utime(control / "refs", (old, old))


def listed_ids(home: Home, name: str) -> list[int]:
    return [a.id for a in Approvals(home, name).all()]


def test_a_settled_listing_is_reused_and_a_new_tag_ends_it(home: Home):
    age_refs(home, "manager")
    assert listed_ids(home, "manager") == [1]
    control = str(home.applied_dir("manager"))
    key = (control, "refs/tags/", parse_tag_refs)
    assert refs._listings._cache.get(key) is not None  # settled: kept
    first = Approvals(home, "manager")._listed()
    assert Approvals(home, "manager")._listed() is first  # reused, not read again

    commit_config(home, "manager", {"notes.md": "more\n"}, "more notes")
    Approvals(home, "manager").propose("HEAD", "operator")  # a new tag: its dir moved
    assert listed_ids(home, "manager") == [1, 2]
    git = subprocess.run(
        ["git", "--git-dir", control, "tag", "--list", "proposal/*"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert git.stdout.split() == ["proposal/1", "proposal/2"]


def test_a_fresh_listing_is_never_kept(home: Home):
    """Written within SETTLED_NS: a second write in the same mtime step would not show,
    so the listing is read again each time until it settles."""
    stamp, settled = cache.stamp(str(home.applied_dir("manager")), "refs/tags/")
    assert not settled and stamp
    a = Approvals(home, "manager")._listed()
    assert Approvals(home, "manager")._listed() is not a


def test_a_packed_refs_change_ends_a_listing(home: Home):
    age_refs(home, "manager")
    before = Approvals(home, "manager")._listed()
    control = home.applied_dir("manager")
    subprocess.run(["git", "--git-dir", str(control), "pack-refs", "--all"], check=True)
    after = Approvals(home, "manager")._listed()
    assert after is not before and after == before  # read again, same tags


def test_a_deleted_tag_disappears(home: Home):
    age_refs(home, "manager")
    assert State.PROPOSAL in Approvals(home, "manager").get(1).states
    control = home.applied_dir("manager")
    subprocess.run(
        ["git", "--git-dir", str(control), "tag", "-d", "proposal/1"],
        check=True,
        capture_output=True,
    )
    assert listed_ids(home, "manager") == []


def test_a_tag_is_parsed_once_by_id(home: Home, monkeypatch):
    a = Approvals(home, "manager")
    tag = a.get(1).states[State.PROPOSAL]
    calls = []
    monkeypatch.setattr(tags, "_parse_tag", lambda *args: calls.append(args))
    again = tags.read_tag(a.repo(), tag.ref.encode(), tag.sha.encode())
    assert again == tag and calls == []  # from the cache, no object read
    moved = tags.read_tag(a.repo(), b"refs/tags/other", tag.sha.encode())
    assert moved.ref == "refs/tags/other" and moved.sha == tag.sha


def test_the_lru_drops_the_least_recently_used():
    lru: cache.LRU[int, str] = cache.LRU(2)
    lru.put(1, "a")
    lru.put(2, "b")
    assert lru.get(1) == "a"
    lru.put(3, "c")
    assert (lru.get(1), lru.get(2), lru.get(3), len(lru)) == ("a", None, "c", 2)


def test_refs_are_listed_as_dulwich_lists_them_loose_packed_and_odd(tmp_path):
    """refs.under answers what dulwich's as_dict does (and git's for-each-ref lists):
    loose refs, packed ones, a loose one over its packed copy, nested names, a lock file
    being written, a symbolic ref, a file whose name is not a ref's."""
    control = tmp_path / "r.git"

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "--git-dir", str(control), *args], capture_output=True, text=True, check=True
        ).stdout

    subprocess.run(["git", "init", "-q", "--bare", str(control)], check=True)
    tree = git("hash-object", "-t", "tree", "-w", "--stdin")  # the empty tree
    env = {"GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@b", "GIT_COMMITTER_NAME": "a"}
    env = {**os.environ, **env, "GIT_COMMITTER_EMAIL": "a@b"}
    commits = [
        subprocess.run(
            ["git", "--git-dir", str(control), "commit-tree", "-m", str(n), tree.strip()],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout.strip()
        for n in range(2)
    ]
    for name in ("proposal/1", "proposal/2", "checked/1.2", "deep/a/b-c_d+e"):
        git("update-ref", f"refs/tags/{name}", commits[0])
    git("pack-refs", "--all")  # packed, with peeled lines for annotated tags
    git("tag", "-a", "-m", "m", "approved/1", commits[1])
    git("update-ref", "refs/tags/proposal/2", commits[1])  # loose over its packed copy
    (control / "refs" / "tags" / "proposal" / "9.lock").write_text(commits[1] + "\n")

    def dulwich(prefix: bytes) -> dict:
        with refs.Repo(str(control)) as repo:
            return dict(repo.refs.as_dict(prefix))

    for prefix in (b"refs/tags/", b"refs/tags/proposal/", b"refs/heads/", b"refs/nothing/"):
        assert refs.under(control, prefix) == dulwich(prefix), prefix
    listed = git("for-each-ref", "--format=%(refname:lstrip=2) %(objectname)", "refs/tags/")
    expected = dict(line.split(" ") for line in listed.splitlines())
    assert {k.decode(): v.decode() for k, v in refs.under(control, b"refs/tags/").items()} == (
        expected
    )

    git("symbolic-ref", "refs/tags/alias", "refs/tags/proposal/1")
    assert refs.under(control, b"refs/tags/") == dulwich(b"refs/tags/")
    assert refs.under(control, b"refs/tags/")[b"alias"] == commits[0].encode()
    (control / "refs" / "tags" / "alias").unlink()
    (control / "refs" / "tags" / ".hidden").write_text(commits[0] + "\n")  # not a ref name
    assert (
        refs.under(control, b"refs/tags/")
        == dulwich(b"refs/tags/")
        == {k.encode(): v.encode() for k, v in expected.items()}
    )

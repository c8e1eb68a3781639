"""Tags packed past a threshold under the transition lock (gitstore/refs.py): the git CLI,
dulwich and the engine read the same refs after it, a reader never finds a kept tag
missing while it happens, and what cannot be packed is refused or left for later."""

import logging
import os

import pytest
from support.hive import fresh_commit, git

from hyperhive.errors import ConcurrentUpdate
from hyperhive.gitstore import refs
from hyperhive.gitstore.repos import open_repo
from hyperhive.home import Home
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.states import State, tag_ref

THRESHOLD = 4


@pytest.fixture
def small_threshold(monkeypatch):
    monkeypatch.setattr(refs, "PACK_LOOSE_TAGS", THRESHOLD)


def propose_and_deny(home: Home, count: int) -> list[int]:
    """`count` approvals of the manager, each proposed and denied: two tags each."""
    approvals = Approvals(home, "manager")
    ids = []
    for _ in range(count):
        a = approvals.propose(fresh_commit(home, "manager"), "manager")
        approvals.deny(a.id, "operator", "not this one")
        ids.append(a.id)
    return ids


def git_refs(control: os.PathLike, *args: str) -> dict[str, str]:
    out = git(control, "for-each-ref", "--format=%(refname) %(objectname)", *args)
    return dict(line.split(" ") for line in out.splitlines() if line)


def show_ref_peeled(control: os.PathLike) -> dict[str, str]:
    """`git show-ref -d --tags`: tag name -> the commit it peels to (from the ^{} lines)."""
    out = git(control, "show-ref", "-d", "--tags")
    return {
        name.removesuffix("^{}"): sha
        for sha, name in (line.split(" ") for line in out.splitlines())
        if name.endswith("^{}")
    }


def test_tags_are_packed_past_the_threshold_and_git_dulwich_and_we_agree(
    home: Home, small_threshold
):
    control = home.applied_dir("manager")
    ids = propose_and_deny(home, 6)  # 13 tags with manager#1's proposal
    assert refs.count_loose(control) <= THRESHOLD + 2  # packed as they came
    text = (control / "packed-refs").read_bytes()
    assert text.startswith(refs.PACKED_HEADER)  # git's own format: peeled, sorted

    ours = {(refs.TAGS + k).decode(): v.decode() for k, v in refs.under(control, refs.TAGS).items()}
    assert ours == git_refs(control, "refs/tags/")
    assert len(ours) == 13
    with open_repo(control) as repo:
        theirs = {
            (b"refs/tags/" + k).decode(): v.decode()
            for k, v in repo.refs.as_dict(b"refs/tags").items()
        }
        assert theirs == ours
        # every tag peels to its approval's commit, for git and for dulwich alike
        peeled = show_ref_peeled(control)
        assert set(peeled) == set(ours)
        for name, commit in peeled.items():
            assert repo.get_peeled(name.encode()).decode() == commit
            assert git(control, "rev-parse", f"{name}^{{commit}}").strip() == commit
    git(control, "fsck", "--no-dangling")  # raises on any error
    for i in ids:
        assert Approvals(home, "manager").get(i).state == State.DENIED
    assert [a.id for a in Approvals(home, "manager").all()] == [1, *ids]


def test_a_packed_tag_still_cannot_be_written_twice(home: Home, small_threshold):
    control = home.applied_dir("manager")
    (first, *_) = propose_and_deny(home, 3)
    with open_repo(control) as repo:
        refs.pack(repo)
        assert refs.count_loose(control) == 0
        ref = tag_ref(State.PROPOSAL, first)
        assert refs.create(repo, ref, refs.read(repo, refs.MAIN) or b"1" * 40) is False
    with pytest.raises(Exception, match="already"):
        Approvals(home, "manager").deny(first, "operator", "again")


def test_packing_writes_packed_refs_before_any_loose_file_goes(home: Home, monkeypatch):
    """A reader lists loose refs, then reads packed-refs: a tag unlinked after the new
    packed-refs is in place is found there, never missing from both."""
    control = home.applied_dir("manager")
    propose_and_deny(home, 2)
    loose = refs.loose_under(control, refs.TAGS)
    removed = []
    real_remove = os.remove

    def checked_remove(path):
        rest = os.fsencode(os.path.relpath(path, control / "refs" / "tags"))
        assert refs.packed(control).under(refs.TAGS).get(rest) == loose[rest]
        removed.append(rest)
        real_remove(path)

    monkeypatch.setattr(os, "remove", checked_remove)
    with open_repo(control) as repo:
        assert refs.pack(repo) == len(loose)
    assert sorted(removed) == sorted(loose)
    assert refs.under(control, refs.TAGS) == loose


def test_pruning_a_changed_ref_is_refused_and_nothing_is_written(home: Home):
    control = home.applied_dir("manager")
    propose_and_deny(home, 1)
    with open_repo(control) as repo:
        refs.pack(repo)
        before = (control / "packed-refs").read_bytes()
        ref = tag_ref(State.DENIED, 2)
        with pytest.raises(ConcurrentUpdate, match="changed before it could be deleted"):
            refs.pack(repo, refs.TAGS, {ref: b"f" * 40})
        assert (control / "packed-refs").read_bytes() == before
        refs.pack(repo, refs.TAGS, {ref: refs.read(repo, ref)})
    assert "refs/tags/denied/2" not in git_refs(control, "refs/tags/")
    assert Approvals(home, "manager").get(2).state == State.PROPOSAL


def test_a_held_packed_refs_lock_leaves_the_tags_loose_and_the_writes_done(
    home: Home, small_threshold, caplog
):
    control = home.applied_dir("manager")
    (control / "packed-refs.lock").write_text("")
    with caplog.at_level(logging.WARNING, logger="hyperhive.refs"):
        ids = propose_and_deny(home, 3)
    assert "packed-refs.lock exists" in caplog.text
    assert refs.count_loose(control) == 7  # nothing packed, nothing lost
    assert all(Approvals(home, "manager").get(i).state == State.DENIED for i in ids)
    (control / "packed-refs.lock").unlink()
    propose_and_deny(home, 1)  # the next write packs them (the denial after stays loose)
    assert refs.count_loose(control) == 1


def test_a_packed_refs_file_git_wrote_is_read_and_its_changes_seen(home: Home):
    control = home.applied_dir("manager")
    propose_and_deny(home, 2)
    git(control, "pack-refs", "--all")
    assert refs.under(control, refs.TAGS) == {
        k.removeprefix("refs/tags/").encode(): v.encode()
        for k, v in git_refs(control, "refs/tags/").items()
    }
    # git rewrites packed-refs (a tag deleted): the cached parse is not reused
    git(control, "tag", "-d", "denied/3")
    assert b"denied/3" not in refs.under(control, refs.TAGS)
    assert Approvals(home, "manager").get(3).state == State.PROPOSAL


def test_lock_files_bad_names_and_garbage_are_not_refs(home: Home):
    control = home.applied_dir("manager")
    tags = control / "refs" / "tags" / "proposal"
    (tags / "7.lock").write_text("a" * 40 + "\n")  # a write in progress
    (tags / ".hidden").write_text("a" * 40 + "\n")
    (tags / "8").write_text("not an id\n")
    (control / "packed-refs").write_bytes(
        b"# pack-refs with: peeled fully-peeled sorted \n"
        b"zzzz refs/tags/proposal/9\n"  # no id
        + b"b" * 40
        + b" refs/tags/bad..name\n"
        + b"c" * 40
        + b" refs/tags/proposal/10\n^"
        + b"d" * 40
        + b"\n"
    )
    found = refs.under(control, refs.TAGS)
    assert set(found) == {b"proposal/1", b"proposal/10"}
    assert refs.packed(control).peeled == {b"refs/tags/proposal/10": b"d" * 40}
    assert refs.read(control, b"refs/tags/proposal/7.lock") is None
    assert refs.read(control, b"refs/tags/../../config") is None
    with open_repo(control) as repo, pytest.raises(ValueError):
        refs.create(repo, b"refs/tags/x.lock", b"a" * 40)


def test_a_transition_reads_only_its_own_refs(home: Home, small_threshold, monkeypatch):
    """Writing a tag never lists the others: its cost does not grow with the tags."""
    propose_and_deny(home, 3)
    a = Approvals(home, "manager").propose(fresh_commit(home, "manager"), "manager")
    listed = []
    real = refs.loose_under

    def spy(repo, prefix):
        listed.append(prefix)
        return real(repo, prefix)

    monkeypatch.setattr(refs, "loose_under", spy)
    Approvals(home, "manager").deny(a.id, "operator", "no")
    assert listed == []
    control = home.applied_dir("manager")
    git(control, "show-ref", "--verify", "-q", f"refs/tags/denied/{a.id}")

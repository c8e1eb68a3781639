"""gitstore (dulwich) checked against the stock git CLI on real repos."""

import os
import stat
import subprocess
import zlib
from pathlib import Path

import pytest
from dulwich.objects import Tag
from dulwich.repo import Repo
from dulwich.trailers import parse_trailers
from hypothesis import given, settings
from hypothesis import strategies as st
from support.gitcli import fast_import
from support.hive import git
from unidiff import PatchSet

from hyperhive.errors import ConcurrentUpdate, NotARepository, UnknownCommit
from hyperhive.gitstore import history, refs, tags
from hyperhive.gitstore.repos import (
    LOOSE_MAX,
    copy_commit,
    init_bare,
    init_worktree,
    open_repo,
    peel,
    read_loose,
    resolve_commit,
)
from hyperhive.gitstore.tags import make_tag_message, read_tag, write_tag

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


def commit_all(repo_dir: Path, message: str, files: dict[str, str | None], date: int) -> str:
    """Write (or delete, for None) files and commit them with the git CLI at a fixed date."""
    for rel, content in files.items():
        path = repo_dir / rel
        if content is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    env = {
        "GIT_AUTHOR_DATE": f"{date} +0000",
        "GIT_COMMITTER_DATE": f"{date} +0000",
    }
    git_env(repo_dir, env, "add", "-A")
    git_env(
        repo_dir,
        env,
        "-c",
        "user.name=tester",
        "-c",
        "user.email=tester@example.org",
        "commit",
        "-q",
        "-m",
        message,
    )
    return git(repo_dir, "rev-parse", "HEAD").strip()


def git_env(cwd: Path, env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.fixture
def worktree(tmp_path: Path) -> tuple[Repo, Path]:
    path = tmp_path / "work"
    return init_worktree(path), path


@pytest.fixture
def bare(tmp_path: Path) -> tuple[Repo, Path]:
    path = tmp_path / "bare.git"
    return init_bare(path), path


@pytest.fixture
def history_repo(worktree) -> tuple[Repo, Path, list[str]]:
    """A linear history of four commits: add, modify + nested add, delete + rename-ish."""
    repo, path = worktree
    c1 = commit_all(path, "first", {"a.txt": "one\ntwo\n", "b.txt": "bee\n"}, 1_700_000_000)
    c2 = commit_all(
        path,
        "second: edit a, add dir/c",
        {"a.txt": "one\n2\nthree\n", "dir/c.nix": "{ }\n"},
        1_700_000_100,
    )
    c3 = commit_all(path, "third: drop b", {"b.txt": None}, 1_700_000_200)
    c4 = commit_all(
        path, "fourth\n\nwith a body", {"dir/sub/d.txt": "d\n", "a.txt": "x\n"}, 1_700_000_300
    )
    return repo, path, [c1, c2, c3, c4]


# -- repositories ----------------------------------------------------------------------


def test_init_bare_is_a_bare_repo_on_main(bare):
    _, path = bare
    assert git(path, "rev-parse", "--is-bare-repository").strip() == "true"
    assert git(path, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    assert not (path / ".git").exists()


def test_init_worktree_is_a_checkout_on_main(worktree):
    _, path = worktree
    assert git(path, "rev-parse", "--is-bare-repository").strip() == "false"
    assert (path / ".git").is_dir()
    assert git(path, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    # git can commit into it and dulwich sees the commit on main
    sha = commit_all(path, "hello", {"f": "x\n"}, 1_700_000_000)
    assert open_repo(path).refs[b"refs/heads/main"].decode() == sha


def test_open_repo_of_a_non_repository_is_refused(tmp_path: Path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(NotARepository, match="not a git repository"):
        open_repo(tmp_path / "plain")


# -- refs ------------------------------------------------------------------------------


def test_cas_creates_moves_and_refuses_a_stale_expectation(history_repo):
    repo, path, (c1, c2, c3, _) = history_repo
    ref = b"refs/heads/topic"
    refs.cas(repo, ref, None, c1.encode())
    assert git(path, "rev-parse", "refs/heads/topic").strip() == c1

    refs.cas(repo, ref, c1.encode(), c2.encode())
    assert git(path, "rev-parse", "refs/heads/topic").strip() == c2

    # the caller still believes it is at c1: refused, ref untouched
    with pytest.raises(ConcurrentUpdate, match="refs/heads/topic") as e:
        refs.cas(repo, ref, c1.encode(), c3.encode())
    assert c2 in str(e.value) and c1 in str(e.value)
    assert git(path, "rev-parse", "refs/heads/topic").strip() == c2

    # "must not exist" on an existing ref: refused too
    with pytest.raises(ConcurrentUpdate):
        refs.cas(repo, ref, None, c3.encode())
    assert git(path, "rev-parse", "refs/heads/topic").strip() == c2


def test_cas_sees_a_ref_moved_by_git_behind_its_back(history_repo):
    repo, path, (c1, c2, c3, _) = history_repo
    refs.cas(repo, b"refs/heads/topic", None, c1.encode())
    git(path, "update-ref", "refs/heads/topic", c2)
    with pytest.raises(ConcurrentUpdate):
        refs.cas(repo, b"refs/heads/topic", c1.encode(), c3.encode())
    assert git(path, "rev-parse", "refs/heads/topic").strip() == c2


def test_create_returns_false_when_the_ref_exists(history_repo):
    repo, path, (c1, c2, *_) = history_repo
    assert refs.create(repo, b"refs/heads/new", c1.encode()) is True
    assert refs.create(repo, b"refs/heads/new", c2.encode()) is False
    assert git(path, "rev-parse", "refs/heads/new").strip() == c1
    # a ref only in packed-refs exists just the same
    git(path, "pack-refs", "--all")
    assert not (path / ".git" / "refs" / "heads" / "new").exists()
    assert refs.create(repo, b"refs/heads/new", c2.encode()) is False
    assert git(path, "rev-parse", "refs/heads/new").strip() == c1


def test_read_under_and_delete(history_repo):
    repo, path, (c1, c2, *_) = history_repo
    assert refs.read(repo, b"refs/heads/nope") is None
    git(path, "update-ref", "refs/x/one", c1)
    git(path, "update-ref", "refs/x/two", c2)
    git(path, "pack-refs", "--all")
    git(path, "update-ref", "refs/x/three", c1)  # loose beside packed
    assert refs.under(repo, b"refs/x/") == {
        b"one": c1.encode(),
        b"two": c2.encode(),
        b"three": c1.encode(),
    }
    with pytest.raises(ConcurrentUpdate):
        refs.delete(repo, b"refs/x/two", c1.encode())
    assert git(path, "rev-parse", "refs/x/two").strip() == c2
    refs.delete(repo, b"refs/x/two", c2.encode())
    assert git(path, "for-each-ref", "--format=%(refname)", "refs/x/").split() == [
        "refs/x/one",
        "refs/x/three",
    ]


# -- tags ------------------------------------------------------------------------------


def test_write_tag_is_an_annotated_tag_git_reads(history_repo):
    repo, path, (c1, *_) = history_repo
    ref = b"refs/tags/approved/7"
    tag = write_tag(
        repo,
        ref,
        c1.encode(),
        "alice",
        "approved manager#7",
        {"Reason": "looks good", "Build-Log": "/var/log/x.log"},
        when=1_700_000_500,
    )
    assert tag is not None
    assert git(path, "rev-parse", "refs/tags/approved/7").strip() == tag.decode()
    assert git(path, "cat-file", "-t", tag.decode()).strip() == "tag"
    raw = git(path, "cat-file", "-p", "refs/tags/approved/7")
    header, _, message = raw.partition("\n\n")
    assert header.splitlines() == [
        f"object {c1}",
        "type commit",
        "tag approved/7",
        "tagger alice <alice@hyperhive> 1700000500 +0000",
    ]
    assert message.splitlines()[0] == "approved manager#7"
    # git peels the tag to the commit
    assert git(path, "rev-parse", "refs/tags/approved/7^{commit}").strip() == c1
    # the repository is still sound in git's eyes
    git(path, "fsck", "--strict", "--no-dangling")


def test_write_tag_trailers_round_trip_through_read_tag_and_git(history_repo):
    repo, path, (c1, *_) = history_repo
    ref = b"refs/tags/failed/3"
    trailers = {
        "Reason": "nix  failed\nbadly",  # whitespace and newlines fold into one line
        "Build-Log": "/home/hive/logs/manager/3.log",
        "Duration": "1.25s",
        "Empty": "",  # written as "-"
        "Skipped": None,  # None is left out
    }
    body = "| line one\n| Error: two\n"
    tag = write_tag(repo, ref, c1.encode(), "hyperhive", "failed manager#3", trailers, body)
    expected = {
        "Actor": "hyperhive",
        "Reason": "nix failed badly",
        "Build-Log": "/home/hive/logs/manager/3.log",
        "Duration": "1.25s",
        "Empty": "-",
    }

    info = read_tag(repo, ref, tag)
    assert info.trailers == expected
    assert list(info.trailers) == list(expected)  # order kept
    assert info.subject == "failed manager#3"
    assert info.body == "| line one\n| Error: two"
    assert (info.ref, info.sha, info.target, info.actor) == (
        ref.decode(),
        tag.decode(),
        c1,
        "hyperhive",
    )

    # git's own trailer parser finds the same trailers, and only them
    fmt = "--format=%(contents:trailers:only,unfold)"
    git_trailers = git(path, "for-each-ref", fmt, ref.decode()).strip().splitlines()
    assert git_trailers == [f"{k}: {v}" for k, v in expected.items()]
    reason = git(
        path, "for-each-ref", "--format=%(contents:trailers:key=Reason,valueonly)", ref.decode()
    )
    assert reason.strip() == "nix failed badly"
    assert git(path, "for-each-ref", "--format=%(taggername)", ref.decode()).strip() == (
        "hyperhive"
    )
    shown = git(path, "cat-file", "-p", ref.decode())
    assert "| Error: two\n\nActor: hyperhive\nReason: nix failed badly\n" in shown


def test_write_tag_does_not_overwrite_an_existing_tag(history_repo):
    repo, path, (c1, c2, *_) = history_repo
    ref = b"refs/tags/proposal/1"
    first = write_tag(repo, ref, c1.encode(), "alice", "proposal manager#1", {})
    assert write_tag(repo, ref, c2.encode(), "mallory", "proposal manager#1", {}) is None
    assert git(path, "rev-parse", ref.decode()).strip() == first.decode()
    assert git(path, "rev-parse", ref.decode() + "^{commit}").strip() == c1


def test_read_tag_of_a_lightweight_tag(history_repo):
    repo, path, (c1, *_) = history_repo
    git(path, "tag", "approved/9", c1)
    info = read_tag(repo, b"refs/tags/approved/9", c1.encode())
    assert (info.target, info.actor, info.trailers) == (c1, "?", {})


def test_read_tag_of_a_tag_git_wrote(history_repo):
    repo, path, (c1, *_) = history_repo
    git(
        path,
        "-c",
        "user.name=Bob Smith",
        "-c",
        "user.email=bob@example.org",
        "tag",
        "-a",
        "denied/4",
        c1,
        "-m",
        "denied by hand\n\nbecause\n\nActor: Bob Smith\nReason: no",
    )
    sha = git(path, "rev-parse", "refs/tags/denied/4").strip().encode()
    info = read_tag(repo, b"refs/tags/denied/4", sha)
    assert info.actor == "Bob Smith"
    assert info.target == c1
    assert info.subject == "denied by hand"
    assert info.body == "because"
    assert info.trailers == {"Actor": "Bob Smith", "Reason": "no"}
    assert peel(repo, sha).decode() == c1


# -- resolving commits -----------------------------------------------------------------


def test_resolve_commit_accepts_full_and_short_shas_head_branches_and_tags(history_repo):
    repo, path, (c1, c2, _, c4) = history_repo
    git(path, "branch", "old", c2)
    git(path, "tag", "-a", "v1", c1, "-m", "v1")
    assert resolve_commit(repo, c2).decode() == c2
    assert resolve_commit(repo, c2[:7]).decode() == c2
    assert resolve_commit(repo, "HEAD").decode() == c4
    assert resolve_commit(repo, "main").decode() == c4
    assert resolve_commit(repo, "old").decode() == c2
    assert resolve_commit(repo, "refs/heads/old").decode() == c2
    assert resolve_commit(repo, "v1").decode() == c1  # an annotated tag is peeled


@pytest.mark.filterwarnings("ignore:Ref name:DeprecationWarning")  # dulwich on spec ""
@pytest.mark.parametrize("spec", ["nope", "deadbeef", "0" * 40, "", "HEAD~9", "main^{tree}"])
def test_resolve_commit_refuses_unknown_specs(history_repo, spec):
    repo, *_ = history_repo
    with pytest.raises(UnknownCommit, match="unknown commit"):
        resolve_commit(repo, spec)


def test_resolve_commit_refuses_objects_that_are_not_commits(history_repo):
    repo, path, _ = history_repo
    tree = git(path, "rev-parse", "HEAD^{tree}").strip()
    blob = git(path, "rev-parse", "HEAD:a.txt").strip()
    for spec in (tree, blob):
        with pytest.raises(UnknownCommit):
            resolve_commit(repo, spec)


def test_resolve_commit_in_an_empty_repo(bare):
    repo, _ = bare
    with pytest.raises(UnknownCommit):
        resolve_commit(repo, "HEAD")


def test_copy_commit_brings_the_whole_history_into_a_bare_repo(history_repo, bare):
    src, _, commits = history_repo
    dst, dst_path = bare
    copy_commit(src, dst, commits[2].encode())
    for c in commits[:3]:
        assert git(dst_path, "cat-file", "-t", c).strip() == "commit"
    # only what the commit reaches was copied
    missing = subprocess.run(["git", "cat-file", "-e", commits[3]], cwd=dst_path)
    assert missing.returncode != 0
    # the unreferenced objects are complete: git can walk and diff them
    assert git(dst_path, "log", "--format=%H", commits[2]).split() == commits[2::-1]
    git(dst_path, "diff", "--name-only", commits[0], commits[2])
    copy_commit(src, dst, commits[2].encode())  # a second copy is a no-op


def test_copy_commit_of_a_long_history_writes_one_pack_git_reads(worktree, bare):
    """Past LOOSE_MAX objects the copy is one pack (a fetch's shape), not a file each."""
    _, src_path = worktree
    commits = LOOSE_MAX  # each brings a commit, a tree and a blob
    head = fast_import(src_path, commits)[-1]
    dst, dst_path = bare
    copy_commit(Repo(str(src_path)), dst, head.encode())
    assert len(list((dst_path / "objects" / "pack").glob("*.pack"))) == 1
    assert not [p for p in (dst_path / "objects").glob("??/*")], "no loose object"
    git(dst_path, "fsck", "--full", "--no-dangling", "--strict", head)
    assert int(git(dst_path, "rev-list", "--count", head)) == commits
    assert git(dst_path, "cat-file", "-p", f"{head}:f.txt").strip() == str(commits - 1)


# -- history ---------------------------------------------------------------------------


def test_log_matches_git_log(history_repo):
    repo, path, commits = history_repo
    head = commits[-1].encode()
    entries = history.log(repo, head)
    assert [e.sha for e in entries] == git(path, "log", "--format=%H").split()
    assert [e.sha for e in entries] == commits[::-1]
    assert [e.subject for e in entries] == git(path, "log", "--format=%s").splitlines()
    assert [e.time for e in entries] == [int(t) for t in git(path, "log", "--format=%ct").split()]
    assert entries[0].message == "fourth\n\nwith a body\n"
    assert entries[0].author == "tester <tester@example.org>"
    limited = history.log(repo, head, limit=2)
    assert [e.sha for e in limited] == git(path, "log", "-n", "2", "--format=%H").split()


def test_log_of_a_merge_matches_git_log(history_repo):
    repo, path, (c1, *_) = history_repo
    git(path, "checkout", "-q", "-b", "side", c1)
    side = commit_all(path, "side work", {"side.txt": "s\n"}, 1_700_000_250)
    git(path, "checkout", "-q", "main")
    git_env(
        path,
        {"GIT_AUTHOR_DATE": "1700000400 +0000", "GIT_COMMITTER_DATE": "1700000400 +0000"},
        "-c",
        "user.name=tester",
        "-c",
        "user.email=tester@example.org",
        "merge",
        "-q",
        "--no-ff",
        "-m",
        "merge side",
        "side",
    )
    head = git(path, "rev-parse", "HEAD").strip()
    shas = [e.sha for e in history.log(repo, head.encode())]
    assert shas == git(path, "log", "--format=%H", head).split()
    assert side in shas and len(shas) == 6


def _files_and_counts(patch: bytes) -> dict[str, tuple[int, int]]:
    parsed = PatchSet(patch.decode())
    return {
        (f.target_file if f.target_file != "/dev/null" else f.source_file)[2:]: (
            f.added,
            f.removed,
        )
        for f in parsed
    }


def _numstat(path: Path, old: str, new: str) -> dict[str, tuple[int, int]]:
    out = git(path, "diff", "--numstat", "--no-renames", old, new)
    result = {}
    for line in out.splitlines():
        added, removed, name = line.split("\t")
        result[name] = (int(added), int(removed))
    return result


def test_diff_changes_the_same_files_and_lines_as_git_diff(history_repo):
    repo, path, (c1, c2, c3, c4) = history_repo
    for old, new in [(c1, c2), (c2, c3), (c3, c4), (c1, c4), (c4, c1)]:
        patch = history.diff(repo, old.encode(), new.encode())
        assert _files_and_counts(patch) == _numstat(path, old, new), (old, new)
        names = git(path, "diff", "--name-only", "--no-renames", old, new).split()
        assert sorted(_files_and_counts(patch)) == sorted(names)


def test_diff_against_nothing_adds_every_file(history_repo):
    repo, path, (c1, _, _, c4) = history_repo
    for commit in (c1, c4):
        patch = history.diff(repo, None, commit.encode())
        assert _files_and_counts(patch) == _numstat(path, EMPTY_TREE, commit)


def test_diff_is_a_patch_git_apply_accepts(history_repo, tmp_path):
    repo, path, (c1, c2, c3, c4) = history_repo
    patch = tmp_path / "change.patch"
    patch.write_bytes(history.diff(repo, c1.encode(), c4.encode()))
    git(path, "checkout", "-q", c1)
    git(path, "apply", "--index", str(patch))
    assert git(path, "write-tree").strip() == git(path, "rev-parse", f"{c4}^{{tree}}").strip()


def test_diff_of_identical_commits_is_empty(history_repo):
    repo, _, (c1, *_) = history_repo
    assert history.diff(repo, c1.encode(), c1.encode()) == b""


def test_write_commit_stores_exactly_the_files(bare):
    repo, path = bare
    files = {"flake.nix": b"{ }\n", "a/b/c.json": b"{}\n", "a/top": b"t\n"}
    c = history.write_commit(repo, files, "pin\n\nbody\n", "hyperhive", [], when=1_700_000_000)
    refs.cas(repo, b"refs/heads/main", None, c)
    assert sorted(git(path, "ls-tree", "-r", "--name-only", "main").split()) == sorted(files)
    assert git(path, "show", "main:a/b/c.json") == "{}\n"
    assert git(path, "log", "--format=%an <%ae> %at %s").strip() == (
        "hyperhive <hyperhive@hyperhive> 1700000000 pin"
    )
    c2 = history.write_commit(repo, {"flake.nix": b"{ x = 1; }\n"}, "two\n", "hyperhive", [c])
    refs.cas(repo, b"refs/heads/main", c, c2)
    assert git(path, "log", "--format=%H").split() == [c2.decode(), c.decode()]
    assert git(path, "diff", "--name-only", c.decode(), c2.decode()).split() == [
        "a/b/c.json",
        "a/top",
        "flake.nix",
    ]
    git(path, "fsck", "--strict", "--no-dangling")


def test_checkout_writes_the_tree_with_modes_and_links(worktree, tmp_path):
    repo, path = worktree
    (path / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (path / "run.sh").chmod(0o755)
    (path / "link").symlink_to("run.sh")
    c = commit_all(path, "files", {"dir/deep/x.nix": "{ }\n", "plain": "p\n"}, 1_700_000_000)
    dest = tmp_path / "out"
    dest.mkdir()
    written = history.checkout(repo, c.encode(), dest)
    assert sorted(written) == sorted(git(path, "ls-files").split())
    assert (dest / "dir/deep/x.nix").read_text() == "{ }\n"
    assert os.readlink(dest / "link") == "run.sh"
    assert (dest / "run.sh").stat().st_mode & stat.S_IXUSR
    assert not (dest / "plain").stat().st_mode & stat.S_IXUSR


def test_tags_loose_packed_and_lightweight_read_as_dulwich_reads_them(history_repo):
    repo, path, commits = history_repo
    git(path, "tag", "-a", "-m", "a tag\n\nKey: value", "t1", commits[0])
    git(path, "tag", "t2", commits[1])  # lightweight: names a commit
    named = {ref: git(path, "rev-parse", ref).strip() for ref in ("refs/tags/t1", "refs/tags/t2")}

    def same() -> None:
        annotated = tags._parse_tag(repo, b"refs/tags/t1", named["refs/tags/t1"].encode())
        assert annotated == tags._info(b"refs/tags/t1", repo[named["refs/tags/t1"].encode()])
        assert annotated.trailers == {"Key": "value"}
        light = tags._parse_tag(repo, b"refs/tags/t2", named["refs/tags/t2"].encode())
        assert (light.target, light.actor, light.trailers) == (commits[1], "?", {})

    for sha in named.values():  # loose, as the git CLI wrote them
        assert (path / ".git" / "objects" / sha[:2] / sha[2:]).is_file()
    same()
    git(path, "repack", "-a", "-d", "-q")
    git(path, "prune-packed")
    for sha in named.values():  # packed
        assert not (path / ".git" / "objects" / sha[:2] / sha[2:]).exists()
    same()


def test_a_corrupt_loose_tag_fails_as_dulwich_does(history_repo):
    repo, path, commits = history_repo
    git(path, "tag", "-a", "-m", "a tag", "t1", commits[0])
    sha = git(path, "rev-parse", "refs/tags/t1").strip()
    loose = path / ".git" / "objects" / sha[:2] / sha[2:]
    loose.chmod(0o644)
    loose.write_bytes(b"not zlib at all")
    with pytest.raises(Exception) as ours:
        tags._parse_tag(repo, b"refs/tags/t1", sha.encode())
    with pytest.raises(Exception) as theirs:
        repo[sha.encode()]  # noqa: B018
    assert type(ours.value) is type(theirs.value)


def test_tags_are_read_without_dulwich_exactly_as_dulwich_reads_them(history_repo):
    """`read_tag` parses the tags the hive writes from their text (tags._plain_info) and
    leaves every other shape to dulwich; either way the result is dulwich's, and `git
    cat-file` agrees the objects are tags."""
    repo, path, commits = history_repo
    target = commits[0]
    head = f"object {target}\ntype commit\ntag t\n"
    plain = {  # the hive's own shape: parsed without dulwich
        "trailers": f"{head}tagger operator <operator@hyperhive> 1700000000 +0000\n\n"
        "approved manager#3\n\nsecond paragraph\n\nActor: operator\nReason: ok\n",
        "zone": f"{head}tagger A B <a@b> 1700000001 -0130\n\nsubject only\n",
        "latin1": f"{head}tagger \xe9 <e@x> 1700000002 +0000\n\nna\xefve\n\nKey: caf\xe9\n",
        "empty": f"{head}tagger A <a@b> 1700000003 +0000\n\n",
    }
    other = {  # any other shape: dulwich parses it
        "no tagger": f"{head}\nmessage\n",
        "extra header": f"{head}tagger A <a@b> 1 +0000\nextra x\n\nmessage\n",
        "no time": f"{head}tagger A <a@b>\n\nmessage\n",
        "negative time": f"{head}tagger A <a@b> -5 +0000\n\nmessage\n",
        "signed": f"{head}tagger A <a@b> 1 +0000\n\nmsg\n-----BEGIN PGP SIGNATURE-----\n"
        "x\n-----END PGP SIGNATURE-----\n",
        "no message": f"{head}tagger A <a@b> 1 +0000\n",
    }

    def put(text: str) -> bytes:
        body = text.encode("latin-1")
        raw = b"tag %d\0" % len(body) + body
        sha = Tag.from_raw_string(Tag.type_num, body).id
        loose = path / ".git" / "objects" / sha[:2].decode() / sha[2:].decode()
        loose.parent.mkdir(exist_ok=True)
        loose.write_bytes(zlib.compress(raw))
        assert git(path, "cat-file", "-t", sha.decode()).strip() == "tag"
        return sha

    written = write_tag(repo, b"refs/tags/w", target.encode(), "op", "subject", {"K": "v"}, "b")
    shas = {"write_tag": written, **{k: put(v) for k, v in {**plain, **other}.items()}}
    for name, sha in shas.items():
        ref = f"refs/tags/{name.replace(' ', '-')}".encode()
        _, body = read_loose(repo, sha)
        fast = tags._plain_info(ref, sha, body)
        assert (fast is not None) == (name in plain or name == "write_tag"), name
        theirs = tags._info(ref, repo[sha])
        assert tags._parse_tag(repo, ref, sha) == theirs, name
        assert fast in (None, theirs), name
    assert tags.read_tag(repo, b"refs/tags/w", written).trailers == {"Actor": "op", "K": "v"}


def dulwich_trailers(message: bytes) -> tuple[str, dict[str, str]]:
    text, found = parse_trailers(message)
    return text.decode(errors="replace"), {t.key: t.value for t in found}


PIECE = st.text(alphabet="aK-: \t\r\xe9\u2028", max_size=12)
# mostly `Key: value`, sometimes a key with a space, a missing colon, a leading blank
LINE = st.builds(
    lambda indent, key, colon, value: indent + key + colon + value,
    st.sampled_from(["", "", "", " "]),
    st.sampled_from(["Key", "K-e", "\xe9", "", "a b"]),
    st.sampled_from([": ", ":", ": ", ""]),
    st.text(alphabet="aK-: \t\xe9", max_size=8),
)


@settings(max_examples=300, deadline=None)
@given(
    PIECE,
    st.sampled_from(["\n\n", "\n\n", "\n", "\n\n\n", "\n \n", "\n---\n\n"]),
    st.lists(LINE, max_size=4),
    st.sampled_from(["\n", "\n", "\n", "", "\n\n", " \n"]),
)
def test_trailers_read_without_dulwich_are_dulwichs(head, gap, lines, end):
    """tags._plain_trailers answers only for the plain shape, and then as dulwich does
    (messages built as subject, gap, `Key: value`-ish lines, end)."""
    message = (head + gap + "\n".join(lines) + end).encode()
    ours = tags._plain_trailers(message)
    assert ours is None or ours == dulwich_trailers(message)


def test_the_tags_the_hive_writes_take_the_plain_path():
    for trailers, body in (({"Actor": "a"}, ""), ({"Actor": "a", "Reason": "x: y"}, "| a\n\nb")):
        message = make_tag_message("approved agent#1", trailers, body)
        assert tags._plain_trailers(message) == dulwich_trailers(message)

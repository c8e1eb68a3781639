"""gitstore/gitcli.py: long histories copied as one pack by git, and ancestry past a short
walk answered by git; each checked against the stock git CLI (`git fetch`, `git fsck
--strict`, `git merge-base`) on real repos."""

import os
import subprocess
import time
from pathlib import Path

import pytest
from dulwich.repo import Repo
from support.gitcli import fast_import
from support.hive import fake_program, git

from hyperhive.errors import GitFailed, HistoryTooLarge
from hyperhive.gitstore import gitcli
from hyperhive.gitstore.repos import LOOSE_MAX, copy_commit, init_bare, init_worktree

COMMITS = 120  # each brings a commit, two trees and a blob: past LOOSE_MAX objects


@pytest.fixture
def src(tmp_path: Path) -> tuple[Repo, Path, list[str]]:
    path = tmp_path / "src"
    repo = init_worktree(path)
    commits = fast_import(path, COMMITS, "d/f.txt")
    yield repo, path, commits
    repo.close()


def new_bare(path: Path) -> Repo:
    return init_bare(path)


def pack_ids(pack: Path) -> set[str]:
    with pack.with_suffix(".idx").open("rb") as idx:
        out = subprocess.run(["git", "show-index"], stdin=idx, capture_output=True, check=True)
    return {line.split()[1].decode() for line in out.stdout.splitlines()}


def loose(git_dir: Path) -> list[Path]:
    return list((git_dir / "objects").glob("??/*"))


def test_a_long_history_is_exactly_what_git_fetch_brings(src, tmp_path: Path):
    """The destination holds the first half (its main there); the copy of the rest is one
    thin-completed pack of what `git fetch` would send: the objects the head reaches and
    main does not. `git fsck --strict` passes."""
    source, src_path, commits = src
    half, head = commits[COMMITS // 2], commits[-1]
    ours_path, theirs_path = tmp_path / "ours.git", tmp_path / "theirs.git"
    git(tmp_path, "init", "-q", "--bare", str(theirs_path))
    with new_bare(ours_path) as ours:
        for path in (ours_path, theirs_path):
            git(path, "fetch", "-q", str(src_path), f"{half}:refs/heads/main")
        before = set((ours_path / "objects" / "pack").glob("*.pack"))
        copy_commit(source, ours, head.encode())
        new = set((ours_path / "objects" / "pack").glob("*.pack")) - before
    assert len(new) == 1 and not loose(ours_path)
    had = git(theirs_path, "rev-list", "--objects", "--no-object-names", half).split()
    git(theirs_path, "fetch", "-q", str(src_path), "main")
    rev_list = ("rev-list", "--objects", "--no-object-names", "FETCH_HEAD", "--not", half)
    brought = set(git(theirs_path, *rev_list).split())
    assert pack_ids(next(iter(new))) == brought
    assert brought.isdisjoint(had) and len(brought) == 4 * (COMMITS - COMMITS // 2 - 1)
    git(ours_path, "fsck", "--strict", "--no-dangling", "--no-progress", head)
    assert git(ours_path, "rev-list", "--count", head).strip() == str(COMMITS)
    assert not list((ours_path / "objects").glob(f"{gitcli.TEMP_PREFIX}*"))


def test_a_history_over_the_byte_limit_is_refused_and_nothing_is_kept(src, tmp_path: Path):
    source, _, commits = src
    with new_bare(tmp_path / "dst.git") as dst:
        with pytest.raises(HistoryTooLarge, match=r"more than 1000 bytes .*git.max_push_bytes"):
            copy_commit(source, dst, commits[-1].encode(), max_bytes=1000)
        objects = tmp_path / "dst.git" / "objects"
        assert sorted(p.name for p in objects.iterdir()) == ["info", "pack"]
        assert not list((objects / "pack").iterdir())
        copy_commit(source, dst, commits[-1].encode())  # the default: 50 MiB
    assert git(tmp_path / "dst.git", "rev-list", "--count", commits[-1]).strip() == str(COMMITS)


def test_git_reads_neither_the_callers_git_variables_nor_the_sources_config(
    src, tmp_path: Path, monkeypatch
):
    """A hook's GIT_DIR / GIT_OBJECT_DIRECTORY would send git elsewhere; the source's config
    (here one git would die on) is never read: git sees only the source's objects."""
    source, src_path, commits = src
    with (src_path / ".git" / "config").open("a") as f:
        f.write("[core]\n\tbigFileThreshold = not-a-number\n")
    with pytest.raises(subprocess.CalledProcessError):  # git would die on that config
        git(src_path, "rev-parse", "HEAD")
    for var in ("GIT_DIR", "GIT_OBJECT_DIRECTORY", "GIT_INDEX_FILE", "GIT_WORK_TREE"):
        monkeypatch.setenv(var, str(tmp_path / "elsewhere"))
    with new_bare(tmp_path / "dst.git") as dst:
        copy_commit(source, dst, commits[-1].encode())
    monkeypatch.undo()
    git(tmp_path / "dst.git", "fsck", "--strict", "--no-dangling", "--no-progress", commits[-1])


def test_a_short_proposal_stays_loose_without_git_and_a_long_one_needs_it(
    src, tmp_path: Path, monkeypatch
):
    source, _, commits = src
    monkeypatch.setenv("PATH", str(tmp_path / "no-git"))
    dst_path = tmp_path / "dst.git"
    with new_bare(dst_path) as dst:
        copy_commit(source, dst, commits[1].encode())  # 2 commits of 4 objects each
        with pytest.raises(GitFailed, match="`git` is not on PATH"):
            copy_commit(source, dst, commits[-1].encode())
    monkeypatch.undo()
    assert len(loose(dst_path)) == 8 <= LOOSE_MAX
    assert not list((dst_path / "objects" / "pack").iterdir())
    git(dst_path, "fsck", "--strict", "--no-dangling", "--no-progress", commits[1])


def test_a_copy_that_takes_too_long_is_ended(src, tmp_path: Path, monkeypatch):
    _, src_path, commits = src
    fake_program(tmp_path / "bin", "git", "exec sleep 60\n")  # a git that never answers
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    dst_path = tmp_path / "dst.git"
    new_bare(dst_path).close()
    start = time.monotonic()
    with pytest.raises(GitFailed, match="took over 0.2 s"):
        gitcli.copy_pack(
            src_path / ".git" / "objects",
            dst_path,
            commits[-1].encode(),
            [],
            max_bytes=1 << 20,
            timeout=0.2,
        )
    assert time.monotonic() - start < 30  # not the fake's 60 s: both were killed
    assert not list((dst_path / "objects").glob(f"{gitcli.TEMP_PREFIX}*"))


def test_a_crashed_copys_directory_is_removed_by_the_next_once_stale(src, tmp_path: Path):
    source, _, commits = src
    dst_path = tmp_path / "dst.git"
    objects = dst_path / "objects"
    with new_bare(dst_path) as dst:
        old, fresh = objects / f"{gitcli.TEMP_PREFIX}old", objects / f"{gitcli.TEMP_PREFIX}new"
        for d in (old, fresh):
            d.mkdir()
            (d / "incoming.pack").write_bytes(b"PACK")
        an_hour_ago = time.time() - gitcli.STALE_SECONDS - 1
        os.utime(old, (an_hour_ago, an_hour_ago))
        copy_commit(source, dst, commits[-1].encode())
    assert not old.exists() and fresh.exists()  # a copy running alongside keeps its own


def test_is_ancestor_agrees_with_git_merge_base_walked_or_asked(tmp_path: Path):
    """On a history with a side branch merged back: every commit against a few tips,
    answered by the Python walk (long enough) and by git (after a walk of one commit) as
    `git rev-list` says."""
    path = tmp_path / "repo"
    init_worktree(path).close()
    main = fast_import(path, 6, "d/f.txt")
    git(path, "branch", "side", main[2])
    stream = b"commit refs/heads/side\ncommitter t <t@x> 1800000000 +0000\ndata 5\nside\n"
    stream += b"from refs/heads/side^0\nM 100644 inline s.txt\ndata 1\ns\n"
    stream += b"commit refs/heads/main\ncommitter t <t@x> 1800000001 +0000\ndata 6\nmerge\n"
    stream += b"from refs/heads/main^0\nmerge refs/heads/side\n"
    subprocess.run(["git", "fast-import", "--quiet"], cwd=path, input=stream, check=True)
    shas = git(path, "rev-list", "--all").split()
    assert len(shas) == 8
    tips = [git(path, "rev-parse", r).strip() for r in ("main", "main^", "side", main[1])]
    with Repo(str(path)) as repo:
        for new in tips:
            ancestors = set(git(path, "rev-list", new).split())  # `new` and what it reaches
            for old in shas:
                for walk in (1, 100):
                    got = gitcli.is_ancestor(repo.object_store, old.encode(), new.encode(), walk)
                    assert got is (old in ancestors), (old, new, walk)

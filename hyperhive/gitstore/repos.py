"""Creating and opening repositories, resolving commits, moving objects between repos."""

import time
from pathlib import Path

from dulwich.errors import NotGitRepository
from dulwich.objects import S_ISGITLINK, Commit, Tag, Tree
from dulwich.objectspec import parse_commit
from dulwich.repo import Repo

from hyperhive.errors import UnknownCommit

DEFAULT_BRANCH = b"main"


def init_bare(path: Path) -> Repo:
    path.mkdir(parents=True, exist_ok=True)
    return Repo.init_bare(str(path), default_branch=DEFAULT_BRANCH)


def init_worktree(path: Path) -> Repo:
    path.mkdir(parents=True, exist_ok=True)
    return Repo.init(str(path), default_branch=DEFAULT_BRANCH)


def open_repo(path: Path) -> Repo:
    try:
        return Repo(str(path))
    except NotGitRepository as e:
        raise UnknownCommit(f"{path} is not a git repository") from e


def resolve_commit(repo: Repo, spec: str) -> bytes:
    """A commit id from a full or abbreviated sha, a branch, a tag or HEAD."""
    try:
        obj = parse_commit(repo, spec.encode())
    except (KeyError, ValueError, NotImplementedError) as e:
        raise UnknownCommit(f"unknown commit {spec!r} in {repo.path}") from e
    if not isinstance(obj, Commit):
        raise UnknownCommit(f"{spec!r} in {repo.path} is not a commit")
    return obj.id


def copy_commit(src: Repo, dst: Repo, commit: bytes) -> None:
    """Copy `commit` and everything it reaches that `dst` lacks, as loose objects.

    A fetch would write one pack per proposal, and every later object lookup in `dst`
    searches all of its packs before the loose objects: lookups slow down as history grows.
    """
    todo = [commit]
    while todo:
        sha = todo.pop()
        if sha in dst.object_store:
            continue  # present objects bring what they reach with them
        obj = src[sha]
        if isinstance(obj, Commit):
            todo.extend([obj.tree, *obj.parents])
        elif isinstance(obj, Tree):
            todo.extend(entry.sha for entry in obj.iteritems() if not S_ISGITLINK(entry.mode))
        dst.object_store.add_object(obj)


def peel(repo: Repo, sha: bytes) -> bytes:
    obj = repo[sha]
    while isinstance(obj, Tag):
        obj = repo[obj.object[1]]
    return obj.id


STALE_LOCK_SECONDS = 60  # git's lock files live for one write: milliseconds


def sweep_locks(git_dir: Path, min_age: float = STALE_LOCK_SECONDS) -> list[Path]:
    """Remove git lock files (`objects/**/*.lock`, `refs/**/*.lock`, `packed-refs.lock`,
    `index.lock`, `HEAD.lock`) older than `min_age` seconds: a writer that failed in the
    middle (a full disk fails dulwich's flush before it can remove its lock) leaves one, and
    every later write of that object or ref then fails. Never hyperhive's own flock files
    (`hyperhive-*.lock`), which are not git's. Returns what was removed."""
    now = time.time()
    found = [*git_dir.glob("objects/**/*.lock"), *git_dir.glob("refs/**/*.lock")]
    found += [git_dir / n for n in ("packed-refs.lock", "index.lock", "HEAD.lock")]
    removed = []
    for path in found:
        try:
            if now - path.lstat().st_mtime >= min_age and not path.name.startswith("hyperhive-"):
                path.unlink()
                removed.append(path)
        except FileNotFoundError:
            pass
    return removed

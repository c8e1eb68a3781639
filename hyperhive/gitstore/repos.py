"""Creating and opening repositories, resolving commits, moving objects between repos."""

from pathlib import Path

from dulwich.errors import NotGitRepository
from dulwich.objects import Commit, Tag
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
    """Copy `commit` and everything it reaches from `src` into `dst`'s object store."""
    if commit in dst.object_store:
        return
    src.fetch(dst, determine_wants=lambda refs, depth=None: [commit])


def peel(repo: Repo, sha: bytes) -> bytes:
    obj = repo[sha]
    while isinstance(obj, Tag):
        obj = repo[obj.object[1]]
    return obj.id

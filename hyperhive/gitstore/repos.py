"""Creating and opening repositories, resolving commits, moving objects between repos."""

import os
import stat
import time
import zlib
from pathlib import Path

from dulwich.errors import NotGitRepository
from dulwich.objects import S_ISGITLINK, Commit, Tag, Tree
from dulwich.objectspec import parse_commit
from dulwich.repo import Repo

from hyperhive.errors import NotARepository, UnknownCommit
from hyperhive.gitstore.gitcli import copy_pack
from hyperhive.gitstore.refs import DEFAULT_BRANCH
from hyperhive.settings import Git


def init_bare(path: Path) -> Repo:
    path.mkdir(parents=True, exist_ok=True)
    return Repo.init_bare(str(path), default_branch=DEFAULT_BRANCH)


def init_worktree(path: Path) -> Repo:
    path.mkdir(parents=True, exist_ok=True)
    return Repo.init(str(path), default_branch=DEFAULT_BRANCH)


def open_repo(path: Path) -> Repo:
    """The repository at `path`, opened: close it (`with open_repo(path) as repo:`); an
    open repo keeps its pack files open, and the daemon serves from many threads."""
    try:
        return Repo(str(path))
    except NotGitRepository as e:
        raise NotARepository(f"{path} is not a git repository") from e


class LazyRepo:
    """A repository opened on first call and closed on leaving the `with` block: for reads
    that a cache usually answers, so most never open it."""

    def __init__(self, path: Path):
        self.path = path
        self._repo: Repo | None = None

    def __call__(self) -> Repo:
        if self._repo is None:
            self._repo = open_repo(self.path)
        return self._repo

    def loose(self, sha: bytes) -> tuple[bytes, bytes] | None:
        """`read_loose` of `sha`, without opening the repository when its object store is
        where git keeps it (`objects/` of a bare repository, `.git/objects/` of another);
        None when it is not loose there (`self()[sha]` then finds it, or says why)."""
        if self._repo is not None:
            return read_loose(self._repo, sha)
        root = os.fspath(self.path)
        dot_git = os.path.join(root, ".git")
        if os.path.lexists(dot_git):
            if not os.path.isdir(dot_git):  # a `gitdir:` file: dulwich follows it
                return read_loose(self(), sha)
            root = dot_git
        return read_loose_at(os.path.join(root, "objects"), sha)

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None

    def __enter__(self) -> "LazyRepo":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_loose(repo: Repo, sha: bytes) -> tuple[bytes, bytes] | None:
    """The type name and body of the loose object `sha`, inflated, not parsed; None when
    it is not loose (packed) or unreadable (`repo[sha]` then says why)."""
    return read_loose_at(getattr(repo.object_store, "path", ""), sha)


def read_loose_at(objects: str, sha: bytes) -> tuple[bytes, bytes] | None:
    """`read_loose` from the object directory `objects`."""
    path = os.path.join(objects, sha[:2].decode(), sha[2:].decode())
    try:
        with open(path, "rb") as f:
            head, _, body = zlib.decompress(f.read()).partition(b"\0")
    except (OSError, zlib.error):
        return None
    return head.split(b" ", 1)[0], body


def resolve_commit(repo: Repo, spec: str) -> bytes:
    """A commit id from a full or abbreviated sha, a branch, a tag or HEAD."""
    try:
        obj = parse_commit(repo, spec.encode())
    except (KeyError, ValueError, NotImplementedError) as e:
        raise UnknownCommit(f"unknown commit {spec!r} in {repo.path}") from e
    if not isinstance(obj, Commit):
        raise UnknownCommit(f"{spec!r} in {repo.path} is not a commit")
    return obj.id


# A proposal brings a handful of new objects: they stay loose, as dulwich writes them (no
# fsync each). Past this many (a history arriving at once) git walks and packs them: git's
# own `transfer.unpackLimit` (100) draws the same line between loose and one pack.
LOOSE_MAX = 100
MAX_COPY_BYTES = Git.max_push_bytes  # the default of git.max_push_bytes


def copy_commit(src: Repo, dst: Repo, commit: bytes, *, max_bytes: int = MAX_COPY_BYTES) -> None:
    """Copy `commit` and everything it reaches that `dst` lacks: loose when at most
    LOOSE_MAX objects, else as one pack written by git (gitstore/gitcli.py) of what
    `git fetch` would bring (all `dst`'s refs are its haves), refused past `max_bytes`
    (`HistoryTooLarge`). Blobs are copied raw, never parsed."""
    missing = _missing(src, dst, commit, LOOSE_MAX)
    if missing is None:
        haves = sorted(set(dst.refs.as_dict().values()))
        copy_pack(
            Path(src.object_store.path), Path(dst.controldir()), commit, haves, max_bytes=max_bytes
        )
        return
    for sha in missing:
        dst.object_store.add_object(src[sha])


def _missing(src: Repo, dst: Repo, commit: bytes, limit: int) -> list[bytes] | None:
    """The objects `commit` reaches that `dst` lacks, or None once there are more than
    `limit`: the walk stops there, so a long history costs a short walk before git's."""
    missing: list[bytes] = []
    seen: set[bytes] = set()
    todo = [commit]
    while todo:
        sha = todo.pop()
        if sha in seen or sha in dst.object_store:
            continue  # present objects bring what they reach with them
        seen.add(sha)
        missing.append(sha)
        if len(missing) > limit:
            return None
        obj = src[sha]
        if isinstance(obj, Commit):
            todo.extend([obj.tree, *obj.parents])
        elif isinstance(obj, Tree):
            for entry in obj.iteritems():
                if S_ISGITLINK(entry.mode):
                    continue
                if stat.S_ISDIR(entry.mode):
                    todo.append(entry.sha)
                elif entry.sha not in seen and entry.sha not in dst.object_store:
                    seen.add(entry.sha)
                    missing.append(entry.sha)
    return None if len(missing) > limit else missing


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

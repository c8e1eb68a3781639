"""A ref that is a chain of commits, each one record (a message, the empty tree), moved
only forward by compare-and-swap: an append-only log stored in git, which `git log REF`
reads as it is (the review conversations of workflow/comments.py)."""

import time
from dataclasses import dataclass

from dulwich.objects import Commit, Tree
from dulwich.repo import Repo

from hyperhive.gitstore import refs
from hyperhive.gitstore.cache import LRU
from hyperhive.gitstore.tags import identity

EMPTY_TREE = Tree()


@dataclass(frozen=True)
class Record:
    sha: str
    parent: str | None
    actor: str  # the author's name, as tags.identity wrote it
    time: int
    message: str


def append(repo: Repo, ref: bytes, tip: bytes | None, actor: str, message: str) -> bytes:
    """Add one record on top of `tip` (None: the chain starts) and move `ref` to it; raises
    ConcurrentUpdate if `ref` is no longer at `tip`."""
    if EMPTY_TREE.id not in repo.object_store:
        repo.object_store.add_object(EMPTY_TREE)
    commit = Commit()
    commit.tree = EMPTY_TREE.id
    commit.parents = [tip] if tip else []
    commit.author = commit.committer = identity(actor)
    commit.author_time = commit.commit_time = int(time.time())
    commit.author_timezone = commit.commit_timezone = 0
    commit.message = message.encode()
    repo.object_store.add_object(commit)
    refs.cas(repo, ref, tip, commit.id)
    return commit.id


_records: LRU[bytes, Record] = LRU(20_000)  # a commit never changes: parsed once


def record(repo: Repo, sha: bytes) -> Record:
    found = _records.get(sha)
    if found is None:
        c = repo[sha]
        if not isinstance(c, Commit):
            raise ValueError(f"{sha.decode()} is not a commit")
        found = Record(
            sha=sha.decode(),
            parent=c.parents[0].decode() if c.parents else None,
            actor=c.author.decode(errors="replace").split(" <", 1)[0],
            time=c.author_time,
            message=c.message.decode(errors="replace"),
        )
        _records.put(sha, found)
    return found

"""Reading history (log, diffs) and writing commits and trees without a work tree."""

import io
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from dulwich.objects import Blob, Commit, Tree
from dulwich.patch import write_tree_diff
from dulwich.repo import Repo

from hyperhive.gitstore import worktree
from hyperhive.gitstore.tags import identity


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    author: str
    time: int
    subject: str
    message: str


def commit_info(repo: Repo, sha: bytes) -> CommitInfo:
    c = repo[sha]
    message = c.message.decode(errors="replace")
    return CommitInfo(
        sha=c.id.decode(),
        author=c.author.decode(errors="replace"),
        time=c.commit_time,
        subject=message.split("\n", 1)[0],
        message=message,
    )


def log(repo: Repo, head: bytes, limit: int | None = None) -> list[CommitInfo]:
    walker = repo.get_walker(include=[head], max_entries=limit)
    return [commit_info(repo, entry.commit.id) for entry in walker]


def diff(repo: Repo, old: bytes | None, new: bytes) -> bytes:
    """Unified diff (git format) between two commits; `old=None` diffs against nothing."""
    out = io.BytesIO()
    old_tree = repo[old].tree if old else None
    write_tree_diff(out, repo.object_store, old_tree, repo[new].tree)
    return out.getvalue()


def _tree_from_files(repo: Repo, files: dict[str, bytes]) -> bytes:
    """Build (nested) trees for a flat {path: content} map and return the root tree id."""
    root: dict = {}
    for path, content in files.items():
        *dirs, leaf = path.split("/")
        node = root
        for d in dirs:
            node = node.setdefault(d, {})
        node[leaf] = content

    def store(node: dict) -> bytes:
        tree = Tree()
        for name, value in node.items():
            if isinstance(value, dict):
                tree.add(name.encode(), stat.S_IFDIR, store(value))
            else:
                blob = Blob.from_string(value)
                repo.object_store.add_object(blob)
                tree.add(name.encode(), 0o100644, blob.id)
        repo.object_store.add_object(tree)
        return tree.id

    return store(root)


def write_commit(
    repo: Repo,
    files: dict[str, bytes],
    message: str,
    actor: str,
    parents: list[bytes],
    when: int | None = None,
) -> bytes:
    """Store a commit whose tree is exactly `files`; no ref is touched."""
    c = Commit()
    c.tree = _tree_from_files(repo, files)
    c.parents = parents
    c.author = c.committer = identity(actor)
    c.author_time = c.commit_time = int(time.time()) if when is None else when
    c.author_timezone = c.commit_timezone = 0
    c.message = message.encode()
    repo.object_store.add_object(c)
    return c.id


def checkout(repo: Repo, commit: bytes, dest: Path) -> list[str]:
    """Write the tree of `commit` into the empty directory `dest`; return the paths written.
    Never through a symlink; an unsafe tree (treecheck) raises UnsafeTree first."""
    return worktree.write_tree(repo, commit, dest)

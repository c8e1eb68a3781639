"""Writing a commit's tree to disk without ever following a symlink.

Every file is reached from the root's directory fd, one component at a time, each
directory opened with `O_NOFOLLOW | O_DIRECTORY`; files are written under a temporary
name (`O_EXCL | O_NOFOLLOW`) and renamed over their entry, and a symlink in the way is
unlinked, never written through. So a tree — even one that slipped past
`treecheck.unsafe_tree` — writes nothing outside the directory it is checked out in.

`write_tree` fills an empty directory (the local runtime's `deployed.new/`); `switch`
moves a clean checkout with its index from one commit to another (the config checkout
that follows main), recorded in `.git/hyperhive-switch` while it runs so a switch a crash
cut is finished by the next push or start (`finish_interrupted`).
"""

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from dulwich.index import Index, index_entry_from_stat
from dulwich.object_store import iter_tree_contents
from dulwich.objects import S_ISGITLINK
from dulwich.repo import Repo

from hyperhive.errors import UnsafeTree
from hyperhive.gitstore.treecheck import unsafe_tree

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
JOURNAL = "hyperhive-switch"
ABSENT = (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG)  # a name that cannot be there

Files = dict[bytes, tuple[int, bytes]]  # path -> (mode, blob id)


def files_of(repo: Repo, commit: bytes | None) -> Files:
    """The files (regular and symlinks) of a commit's tree, refused if the tree is unsafe."""
    if commit is None:
        return {}
    tree = repo[commit].tree
    if bad := unsafe_tree(repo.object_store, tree):
        raise UnsafeTree(f"commit {commit.decode()[:12]} cannot be checked out: {bad}")
    return {
        e.path: (e.mode, e.sha)
        for e in iter_tree_contents(repo.object_store, tree)
        if not S_ISGITLINK(e.mode)  # submodules are not part of an agent's config
    }


class Root:
    """A directory reached only through fds: nothing below it resolves through a symlink."""

    def __init__(self, path: Path):
        self.fd = os.open(path, DIR_FLAGS)

    def close(self) -> None:
        os.close(self.fd)

    @contextmanager
    def parent(self, path: bytes, create: bool) -> Iterator[tuple[int, bytes] | None]:
        """(fd of the directory holding `path`, its last name); None if a directory on the
        way is missing and not `create`d. A non-directory on the way is replaced when
        creating (a file that became a directory), an error otherwise."""
        *dirs, leaf = path.split(b"/")
        fds: list[int] = []
        try:
            fd = self.fd
            for name in dirs:
                try:
                    fd = os.open(name, DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                        raise
                    if not create:  # nothing of ours below a non-directory
                        yield None
                        return
                    if e.errno != errno.ENOENT:
                        os.unlink(name, dir_fd=fd)  # a file or symlink where a dir goes
                    os.mkdir(name, 0o755, dir_fd=fd)
                    fd = os.open(name, DIR_FLAGS, dir_fd=fd)
                fds.append(fd)
            yield fd, leaf
        finally:
            for f in fds:
                os.close(f)

    def write(self, path: bytes, mode: int, data: bytes) -> None:
        with self.parent(path, create=True) as (fd, leaf):
            tmp = b".hyperhive-new-" + leaf[:64]
            _remove(fd, tmp)
            if stat.S_ISLNK(mode):
                os.symlink(data, tmp, dir_fd=fd)
            else:
                f = os.open(tmp, FILE_FLAGS, 0o755 if mode & 0o111 else 0o644, dir_fd=fd)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(f, view) :]
                finally:
                    os.close(f)
            try:
                if stat.S_ISDIR(os.stat(leaf, dir_fd=fd, follow_symlinks=False).st_mode):
                    _remove(fd, leaf)  # a directory where a file goes now
            except FileNotFoundError:
                pass
            except OSError:
                _remove(fd, tmp)
                raise
            os.rename(tmp, leaf, src_dir_fd=fd, dst_dir_fd=fd)

    def remove(self, path: bytes) -> None:
        """Remove the file `path`, then each directory above it left empty."""
        parts = path.split(b"/")
        with self.parent(path, create=False) as found:
            if found is not None:
                _remove(*found)
        for depth in range(len(parts) - 1, 0, -1):
            with self.parent(b"/".join(parts[:depth]), create=False) as found:
                if found is None:
                    continue
                try:
                    os.rmdir(found[1], dir_fd=found[0])
                except OSError:  # not empty (or gone): what is above stays too
                    return

    def lstat(self, path: bytes) -> os.stat_result:
        with self.parent(path, create=False) as found:
            if found is None:
                raise FileNotFoundError(path.decode(errors="replace"))
            return os.stat(found[1], dir_fd=found[0], follow_symlinks=False)


def _remove(fd: int, name: bytes) -> None:
    """Unlink `name` in `fd`, a directory with everything in it; nothing if absent."""
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError as e:
        if e.errno in ABSENT:
            return
        raise
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=fd)
        return
    sub = os.open(name, DIR_FLAGS, dir_fd=fd)
    try:
        for child in os.listdir(sub):
            _remove(sub, os.fsencode(child))
    finally:
        os.close(sub)
    os.rmdir(name, dir_fd=fd)


def write_tree(repo: Repo, commit: bytes, dest: Path) -> list[str]:
    """Write the tree of `commit` into the empty directory `dest`; the paths written."""
    files = files_of(repo, commit)
    root = Root(dest)
    try:
        for path, (mode, sha) in sorted(files.items()):
            root.write(path, mode, repo[sha].as_raw_string())
    finally:
        root.close()
    return [p.decode() for p in sorted(files)]


def switch(repo: Repo, old: bytes | None, new: bytes | None) -> None:
    """Move the work tree and index of `repo` from commit `old` (which they hold, clean)
    to `new` (None: no files). An unsafe `new` raises UnsafeTree before anything is
    written."""
    before, after = files_of(repo, old), files_of(repo, new)
    journal = Path(repo.controldir()) / JOURNAL
    journal.write_text(f"{(old or b'-').decode()} {(new or b'-').decode()}\n")
    _apply(repo, before, after)
    journal.unlink()


def finish_interrupted(repo: Repo, head: bytes | None) -> bool:
    """Finish a switch cut off by a crash: the checkout becomes `head` (main, moved or not),
    every file of either side of the cut switch rewritten. True if there was one."""
    journal = Path(repo.controldir()) / JOURNAL
    try:
        sides = journal.read_text().split()
    except FileNotFoundError:
        return False
    touched: Files = {}
    for side in sides:
        if side != "-":
            with suppress(KeyError, UnsafeTree):
                touched |= files_of(repo, side.encode())
    target = files_of(repo, head)
    _apply(repo, {p: (m, b"") for p, (m, _) in touched.items()}, target)  # rewrite all
    journal.unlink()
    return True


def _apply(repo: Repo, before: Files, after: Files) -> None:
    root = Root(Path(repo.path))
    try:
        for path in sorted(set(before) - set(after), reverse=True):
            root.remove(path)
        for path, (mode, sha) in sorted(after.items()):
            if before.get(path) != (mode, sha):
                root.write(path, mode, repo[sha].as_raw_string())
        index = Index(repo.index_path(), read=False)
        for path, (mode, sha) in after.items():
            index[path] = index_entry_from_stat(root.lstat(path), sha, mode)
        index.write()
    finally:
        root.close()

"""Who owns an agent's state directory on the host when its container is user-namespaced.

systemd-nspawn's `--private-users=pick` gives a container a range of 65536 host uids and
gids: uid (gid) N inside is `base + N` on the host, the same base for both. The state
directory, bind-mounted at `/state`, must belong to the container's `agent` user, so on
the host everything under `agents/<name>/state` is owned by `base + inner_uid` and
`base + inner_gid` — an ordinary, unprivileged host uid, never one the host uses.

`plan` computes the ownership (reading the tree, changing nothing); `apply` makes it so.
The container can write to its state, so the tree is hostile ground for a root process:

- symbolic links are never followed, neither when walking nor when changing ownership
  (the link itself is chowned): a link pointing out of the tree leaves its target alone;
- `apply` reaches every path through directory descriptors opened with O_NOFOLLOW from
  the state directory down, so a directory replaced by a symlink after `plan` ran is
  skipped, not followed;
- a non-directory with several hard links whose owner is outside the container's range
  is left alone (it could be a link to a host file on the same filesystem);
- the walk does not descend into other filesystems mounted inside the tree.
"""

import errno
import logging
import os
import stat
from pathlib import Path
from typing import NamedTuple

from hyperhive.home import Home

log = logging.getLogger("hyperhive.runtime.ownership")

RANGE = 65536  # ids per container under --private-users=pick


class Chown(NamedTuple):
    path: Path
    uid: int
    gid: int


class OwnershipError(Exception):
    pass


def host_ids(base: int, inner_uid: int, inner_gid: int) -> tuple[int, int]:
    """The host uid and gid of the container's `inner_uid`/`inner_gid`."""
    if base < 0:
        raise OwnershipError(f"uid base {base} is negative")
    for what, inner in (("uid", inner_uid), ("gid", inner_gid)):
        if not 0 <= inner < RANGE:
            raise OwnershipError(f"container {what} {inner} is outside 0..{RANGE - 1}")
    return base + inner_uid, base + inner_gid


def _foreign_hardlink(st: os.stat_result, uid: int) -> bool:
    """A hard-linked non-directory whose owner is outside the container's uid range (the
    65536-aligned block holding `uid`; nspawn picks aligned bases): maybe a host file."""
    return not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1 and st.st_uid // RANGE != uid // RANGE


def plan(state_dir: Path, base: int, inner_uid: int, inner_gid: int) -> list[Chown]:
    """Every path in `state_dir` (itself included, symlinks as themselves) with the host
    uid/gid it must have; paths already right are included too (apply is idempotent)."""
    uid, gid = host_ids(base, inner_uid, inner_gid)
    root = Path(state_dir)
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode):
        raise OwnershipError(f"{root} is not a directory (a symlink is refused)")
    result = [Chown(root, uid, gid)]
    stack = [(root, st.st_dev)]
    while stack:
        directory, dev = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except FileNotFoundError:
            continue
        for entry in entries:
            try:
                est = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            path = Path(entry.path)
            if _foreign_hardlink(est, uid):
                log.warning("%s has several links and is not the container's: left alone", path)
                continue
            if stat.S_ISDIR(est.st_mode) and est.st_dev != dev:
                log.warning("%s is another filesystem mounted in the state: left alone", path)
                continue
            result.append(Chown(path, uid, gid))
            if stat.S_ISDIR(est.st_mode):
                stack.append((path, dev))
    return sorted(result, key=lambda c: c.path.parts)


OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def apply(chowns: list[Chown]) -> int:
    """Change the ownership `plan` computed; the number of paths changed. The first entry
    is the state directory; every other path must lie under it and is reached without
    following any symlink (see the module docstring). Paths that vanished or whose
    parent is no longer a real directory are skipped."""
    if not chowns:
        return 0
    root = chowns[0].path
    fds: dict[tuple[str, ...], int] = {}
    changed = 0
    try:
        fds[()] = os.open(root, OPEN_DIR)
        for path, uid, gid in chowns:
            parts = path.relative_to(root).parts
            if ".." in parts:
                raise OwnershipError(f"{path} is not under {root}")
            if not parts:
                changed += _fchown(fds[()], uid, gid)
                continue
            parent = _open_parent(fds, parts[:-1])
            if parent is None:
                log.warning("%s: a parent is no longer a directory in the state: skipped", path)
                continue
            changed += _chown_at(parent, parts[-1], uid, gid)
    finally:
        for fd in fds.values():
            os.close(fd)
    return changed


def _fchown(fd: int, uid: int, gid: int) -> int:
    st = os.fstat(fd)
    if (st.st_uid, st.st_gid) == (uid, gid):
        return 0
    os.fchown(fd, uid, gid)
    return 1


def _open_parent(fds: dict[tuple[str, ...], int], parts: tuple[str, ...]) -> int | None:
    for i in range(1, len(parts) + 1):
        key = parts[:i]
        if key in fds:
            continue
        try:
            fds[key] = os.open(parts[i - 1], OPEN_DIR, dir_fd=fds[key[:-1]])
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return None
            raise
    return fds[parts]


def _chown_at(parent: int, name: str, uid: int, gid: int) -> int:
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return 0
    if (st.st_uid, st.st_gid) == (uid, gid):
        return 0
    if _foreign_hardlink(st, uid):  # re-checked: the link may have appeared since the plan
        log.warning("%s: several links, not the container's: left alone", name)
        return 0
    os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)
    return 1


def base_from_id_map(text: str) -> int:
    """The host id that id 0 inside maps to, from a `/proc/<pid>/uid_map` (or gid_map):
    lines `<inside> <outside> <count>`. An unmapped container (`0 0 4294967295`) gives 0."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 3 or not all(f.isdigit() for f in fields):
            continue
        inside, outside, count = (int(f) for f in fields)
        if inside <= 0 < inside + count:
            return outside - inside
    raise OwnershipError(f"no mapping for id 0 in {text.strip()!r}")


def state_owner(home: Home, name: str) -> tuple[int, int] | None:
    """Who the agent's sockets belong to when the daemon runs as root: the owner of its
    state directory — a user-namespaced container's `agent` user once the runtime has
    chowned it (`plan`/`apply` above), so that user can connect (mode 0600);
    until then, and for an unprivileged daemon, the daemon's own user (None)."""
    if os.geteuid() != 0:
        return None
    try:
        st = os.stat(home.state_dir(name))
    except FileNotFoundError:
        return None
    return st.st_uid, st.st_gid


def give(path: Path, owner: tuple[int, int] | None) -> None:
    """Give a socket file to `owner` (uid, gid), from `state_owner`, unless it has it."""
    if owner is None:
        return
    st = os.lstat(path)
    if (st.st_uid, st.st_gid) != owner:
        os.chown(path, *owner, follow_symlinks=False)

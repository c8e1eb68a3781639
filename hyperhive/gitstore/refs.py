"""Ref updates that never overwrite blindly: every write says what it expects to replace.

Refs are read here without dulwich's container where that container is slow: dulwich
parses `packed-refs` again in every opened repo (a name check per line) and lists loose
refs with a name check and a file read each, so a repo with thousands of tags cost tens
of milliseconds per look. Here `packed-refs` is parsed once per process while its stat
is unchanged (what git and dulwich check too), and tags are packed once more than
PACK_LOOSE_TAGS of them are loose (`pack_if_many`, under the caller's lock), so a read
costs a few file opens whatever the number of tags."""

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from dulwich.file import FileLocked, GitFile
from dulwich.objects import Tag
from dulwich.repo import Repo

from hyperhive.errors import ConcurrentUpdate
from hyperhive.gitstore.cache import LRU, RefListings

log = logging.getLogger("hyperhive.refs")

ZERO = b"0" * 40
DEFAULT_BRANCH = b"main"
MAIN = b"refs/heads/" + DEFAULT_BRANCH  # the branch every hive repo deploys from
TAGS = b"refs/tags/"
# Loose tags past which the writer packs them. Tags are written once and never moved, so
# packing loses nothing; a reader then opens at most this many small files per listing.
PACK_LOOSE_TAGS = 64
PEEL_DEPTH = 16  # tags of tags followed when peeling, at most
SYMREF_DEPTH = 5
T = TypeVar("T")

# git check-ref-format's rules: no component starting with '.' or ending in '.lock', no
# '..', '@{', '//', control characters, space or any of ~^:?*[\, no trailing '/' or '.'.
_BAD_NAME = re.compile(rb"(?:^|/)\.|\.lock(?:/|$)|\.\.|@\{|//|[\x00-\x20\x7f~^:?*\[\\]|[/.]$")
_HEX = re.compile(rb"[0-9a-f]{40}")
# git's own header: every ref that can be peeled is, and the lines are sorted by name
PACKED_HEADER = b"# pack-refs with: peeled fully-peeled sorted \n"


def valid_name(ref: bytes) -> bool:
    """Whether `ref` is a ref name git accepts below refs/ (a lock file is not one)."""
    return ref.startswith(b"refs/") and not _BAD_NAME.search(ref)


@dataclass
class Packed:
    """One `packed-refs` file as parsed: names to ids, and the peeled ids of tags."""

    refs: dict[bytes, bytes] = field(default_factory=dict)
    peeled: dict[bytes, bytes] = field(default_factory=dict)
    fully_peeled: bool = False  # every peelable ref has its peeled line
    _under: dict[bytes, dict[bytes, bytes]] = field(default_factory=dict)
    _derived: dict[object, object] = field(default_factory=dict)

    def under(self, prefix: bytes) -> dict[bytes, bytes]:
        """The refs below `prefix`, keyed by the rest of their name (kept: never change it)."""
        found = self._under.get(prefix)
        if found is None:
            n = len(prefix)
            found = {r[n:]: s for r, s in self.refs.items() if r.startswith(prefix)}
            self._under[prefix] = found
        return found

    def derived(self, prefix: bytes, derive: Callable[[dict[bytes, bytes]], T]) -> T:
        """`derive(self.under(prefix))`, computed once per file (shared: never change it)."""
        key = (prefix, derive)
        if key not in self._derived:
            self._derived[key] = derive(self.under(prefix))
        return self._derived[key]  # type: ignore[return-value]


_NONE = Packed()
_packed: LRU[str, tuple[tuple[int, int, int, int], Packed]] = LRU(1024)


def _control(repo: Repo | Path | str) -> str:
    return repo.controldir() if isinstance(repo, Repo) else str(repo)


def packed(repo: Repo | Path | str) -> Packed:
    """The repo's `packed-refs`, parsed once while its inode, size, mtime and ctime hold
    (git's own check; a rewrite is a new file renamed into place)."""
    control = _control(repo)
    path = os.path.join(control, "packed-refs")
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            cached = _packed.get(control)
            if cached is not None and cached[0] == key:
                return cached[1]
            parsed = parse_packed(f.read())
    except FileNotFoundError:
        return _NONE
    _packed.put(control, (key, parsed))
    return parsed


def parse_packed(raw: bytes) -> Packed:
    """A `packed-refs` file's text; lines that are not a ref (or its peeled id) are skipped."""
    result = Packed()
    lines = raw.split(b"\n")
    if lines and lines[0].startswith(b"# pack-refs with:"):
        traits = lines[0].split(b":", 1)[1].split()
        result.fully_peeled = b"fully-peeled" in traits
    last = None
    for line in lines:
        if line.startswith(b"^"):
            if last is not None and _HEX.fullmatch(line[1:]):
                result.peeled[last] = line[1:]
            continue
        sha, _, name = line.partition(b" ")
        last = None
        if _HEX.fullmatch(sha) and valid_name(name):
            result.refs[name] = sha
            last = name
    return result


def _read_loose(control: str, ref: bytes) -> bytes | None:
    """The id in the loose file of `ref`, the target's name for a symbolic ref ("ref: …"),
    or None when there is no such file."""
    try:
        with open(os.path.join(control, os.fsdecode(ref)), "rb") as f:
            data = f.read(256)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    return data.split(b"\n", 1)[0].rstrip(b"\r")


def _resolve(control: str, ref: bytes, depth: int = 0) -> bytes | None:
    data = _read_loose(control, ref)
    if data is None:
        return packed(control).refs.get(ref)
    if data.startswith(b"ref: ") and depth < SYMREF_DEPTH:
        return _resolve(control, data[5:], depth + 1)
    return data if _HEX.fullmatch(data) else None


def read(repo: Repo | Path | str, ref: bytes) -> bytes | None:
    """The id `ref` (HEAD or a name below refs/) points at, loose first, then packed, as
    git reads; None if there is none."""
    if ref != b"HEAD" and not valid_name(ref):
        return None
    return _resolve(_control(repo), ref)


def create(repo: Repo, ref: bytes, sha: bytes) -> bool:
    """Create `ref` only if it does not exist; False if it already does. The check and the
    write happen under the ref's lock file, as dulwich's `add_if_new` does them."""
    if not valid_name(ref) or not _HEX.fullmatch(sha):
        raise ValueError(f"cannot create {ref!r} at {sha!r}")
    control = repo.controldir()
    path = os.path.join(control, os.fsdecode(ref))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with GitFile(path, "wb") as f:
        if os.path.lexists(path) or ref in packed(control).refs:
            f.abort()
            return False
        f.write(sha + b"\n")
    return True


def _move(repo: Repo, ref: bytes, old: bytes, new: bytes) -> bool:
    """Point `ref` at `new` if it points at `old` now (loose or packed), checked under the
    ref's lock file as dulwich's `set_if_equals` does (which parses packed-refs anew)."""
    if not valid_name(ref) or not _HEX.fullmatch(new):
        return repo.refs.set_if_equals(ref, old, new)  # HEAD and the like: dulwich's way
    control = repo.controldir()
    path = os.path.join(control, os.fsdecode(ref))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with GitFile(path, "wb") as f:
        now = _read_loose(control, ref)
        if now is not None and now.startswith(b"ref: "):
            f.abort()
            return repo.refs.set_if_equals(ref, old, new)  # a symbolic ref: dulwich follows it
        if (now if now is not None else packed(control).refs.get(ref)) != old:
            f.abort()
            return False
        f.write(new + b"\n")
    return True


def cas(repo: Repo, ref: bytes, old: bytes | None, new: bytes) -> None:
    """Move `ref` from `old` (None: must not exist) to `new`, or raise ConcurrentUpdate."""
    done = create(repo, ref, new) if old is None else _move(repo, ref, old, new)
    if not done:
        now = read(repo, ref)
        raise ConcurrentUpdate(
            f"{ref.decode()} in {repo.path} is {now and now.decode()}, "
            f"expected {old and old.decode()}"
        )


def delete(repo: Repo, ref: bytes, old: bytes) -> None:
    if not repo.refs.remove_if_equals(ref, old):
        raise ConcurrentUpdate(f"{ref.decode()} in {repo.path} changed before it could be deleted")


def loose_under(repo: Repo | Path | str, prefix: bytes) -> dict[bytes, bytes]:
    """The loose refs below `prefix` (a name ending in '/'), keyed by the rest of their
    name. Files that are not refs (lock files, bad names, no id) are skipped."""
    control = _control(repo)
    found: dict[bytes, bytes] = {}
    todo = [os.path.join(control, os.fsdecode(prefix))]
    start = len(todo[0])
    while todo:
        try:
            with os.scandir(todo.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        todo.append(entry.path + "/")
                        continue
                    rest = os.fsencode(entry.path[start:])
                    if not valid_name(prefix + rest):
                        continue
                    sha = _resolve(control, prefix + rest)
                    if sha is not None:
                        found[rest] = sha
        except (FileNotFoundError, NotADirectoryError):
            continue
    return found


def under(repo: Repo | Path | str, prefix: bytes) -> dict[bytes, bytes]:
    """Every ref below `prefix` (loose and packed), keyed by the rest of its name. The loose
    ones are read first: a ref packed meanwhile is in the packed-refs read after."""
    loose = loose_under(repo, prefix)
    return {**packed(repo).under(prefix), **loose}


def grouped(
    repo: Repo | Path | str,
    prefix: bytes,
    group: Callable[[Mapping[bytes, bytes]], dict[T, dict]],
) -> dict[T, dict]:
    """`group(under(repo, prefix))` for a `group` that maps refs to {key: {…}} one ref at a
    time: computed for the packed refs once per packed-refs file, so a call costs the loose
    refs and a copy. The inner dicts may be shared: never change them."""
    loose = group(loose_under(repo, prefix))
    merged = dict(packed(repo).derived(prefix, group))
    for key, inner in loose.items():
        merged[key] = {**merged[key], **inner} if key in merged else inner
    return merged


# -- packing ---------------------------------------------------------------------------------


def _peel(repo: Repo, sha: bytes) -> bytes | None:
    """The id a tag finally points at; `sha` itself for any other object; None if an object
    is missing (or the chain is too long)."""
    peeled = sha
    for _ in range(PEEL_DEPTH):
        try:
            type_num, data = repo.object_store.get_raw(peeled)
        except KeyError:
            return None
        if type_num != Tag.type_num:
            return peeled
        first = data.split(b"\n", 1)[0]
        if not first.startswith(b"object ") or not _HEX.fullmatch(first[7:]):
            return None
        peeled = first[7:]
    return None


def pack(repo: Repo, prefix: bytes = TAGS, remove: Mapping[bytes, bytes] | None = None) -> int:
    """Pack every loose ref below `prefix` and delete the refs in `remove` (each must be
    packed and still point where it says) with ONE atomic replacement of packed-refs, in
    git's format with every tag's peeled id; only then are the loose files of the newly
    packed refs unlinked, so no reader and no crash ever finds a kept ref missing. Returns
    how many were packed. Call with the lock every writer of these refs takes."""
    remove = remove or {}
    control = repo.controldir()
    loose = {prefix + rest: sha for rest, sha in loose_under(control, prefix).items()}
    if not loose and not remove:
        return 0
    path = os.path.join(control, "packed-refs")
    try:
        f = GitFile(path, "wb")
    except FileLocked:
        raise ConcurrentUpdate(
            f"{path}.lock exists: another git process is writing refs "
            "(or one crashed; then remove that file)"
        ) from None
    with f:  # an exception aborts: packed-refs stays as it was
        before = packed(control)
        kept = dict(before.refs)
        for ref, sha in remove.items():
            if ref in loose or kept.get(ref) != sha:
                raise ConcurrentUpdate(
                    f"{ref.decode()} in {repo.path} changed before it could be deleted"
                )
            del kept[ref]
        kept.update(loose)
        peeled: dict[bytes, bytes] | None = {}
        for ref, sha in kept.items():
            known = before.refs.get(ref) == sha and (before.fully_peeled or ref in before.peeled)
            target = before.peeled.get(ref, sha) if known else _peel(repo, sha)
            if target is None:  # a missing object: say nothing of peeling, as dulwich does
                peeled = None
                break
            if target != sha:
                peeled[ref] = target
        lines = [PACKED_HEADER] if peeled is not None else []
        for ref in sorted(kept):
            lines.append(kept[ref] + b" " + ref + b"\n")
            if peeled is not None and ref in peeled:
                lines.append(b"^" + peeled[ref] + b"\n")
        f.write(b"".join(lines))
    for ref, sha in loose.items():
        if _read_loose(control, ref) == sha:
            os.remove(os.path.join(control, os.fsdecode(ref)))
    return len(loose)


def count_loose(repo: Repo | Path | str, prefix: bytes = TAGS, stop: int | None = None) -> int:
    """Files below `prefix` (no file read: a cheap upper bound of its loose refs), counted
    up to `stop`."""
    todo, count = [os.path.join(_control(repo), os.fsdecode(prefix))], 0
    while todo and (stop is None or count <= stop):
        try:
            with os.scandir(todo.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        todo.append(entry.path)
                    else:
                        count += 1
        except (FileNotFoundError, NotADirectoryError):
            continue
    return count


def pack_if_many(repo: Repo, prefix: bytes = TAGS, threshold: int | None = None) -> int:
    """`pack` once more than `threshold` (PACK_LOOSE_TAGS) refs below `prefix` are loose;
    how many it packed. Housekeeping after a write that already happened: a packed-refs
    lock held elsewhere is logged and left, the next write tries again. Call with the
    writers' lock."""
    threshold = PACK_LOOSE_TAGS if threshold is None else threshold
    if count_loose(repo, prefix, stop=threshold) <= threshold:
        return 0
    try:
        return pack(repo, prefix)
    except ConcurrentUpdate as e:
        log.warning("%s: refs not packed: %s", repo.path, e)
        return 0


# -- cached listings ---------------------------------------------------------------------------

_listings = RefListings()


def listing(control: Path, prefix: bytes, derive: Callable[[dict[bytes, bytes]], T]) -> T:
    """`derive(under(repo, prefix))` of the repo at `control`, computed once while nothing
    below `prefix` changes (listing every loose ref costs a file read and a name check
    each: 13,000 tags took seconds), and without opening the repo when nothing did. The
    result is shared between callers: never change it."""

    def load() -> T:
        return derive(under(control, prefix))

    return _listings.get(str(control), prefix.decode(), derive, load)

"""Listing a repo's refs below a prefix as git reads them, without dulwich's work per ref.

dulwich's `as_dict` checks each name, then opens each ref's loose file (also for a packed
ref, which has none) and follows it: at 10,000 tags most of a cold dashboard's listing.
Here the loose files are read once each and `packed-refs` once, loose over packed, as
git does. Only plain refs take this path (names of the characters git and the hive
use, each file a bare sha); a symbolic ref, an odd name or an odd file goes to dulwich,
whose answer this one equals (tests/test_read_cache.py checks both on the same repos).
"""

import os
import re
from contextlib import closing
from pathlib import Path

from dulwich.repo import Repo

# A plain name part: no leading dot, none of git's forbidden characters, no "..".
_PART = re.compile(rb"[A-Za-z0-9_+,=@-][A-Za-z0-9._+,=@-]*")
_SHA = re.compile(rb"[0-9a-f]{40}")


def below(control: Path, prefix: bytes) -> dict[bytes, bytes]:
    """Every ref below `prefix` (such as `refs/tags/`), keyed by the rest of its name:
    what `dict(repo.refs.as_dict(prefix))` answers."""
    found = _plain(str(control), prefix)
    if found is None:
        with closing(Repo(str(control))) as repo:
            return dict(repo.refs.as_dict(prefix))
    return found


def _plain(control: str, prefix: bytes) -> dict[bytes, bytes] | None:
    if not prefix.endswith(b"/") or not os.path.isdir(os.path.join(control, "objects")):
        return None
    loose: dict[bytes, bytes] = {}
    todo = [(os.path.join(control, os.fsdecode(prefix)), b"")]
    while todo:  # loose refs first: one moved to packed-refs meanwhile is found there
        directory, rest = todo.pop()
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            return None
        for entry in entries:
            name = os.fsencode(entry.name)
            if name.endswith(b".lock"):
                continue  # a write in progress: not a ref (dulwich skips it too)
            if not _plain_part(name):
                return None
            if entry.is_dir(follow_symlinks=False):
                todo.append((entry.path, rest + name + b"/"))
                continue
            try:
                with open(entry.path, "rb") as f:
                    content = f.read(64)
            except FileNotFoundError:
                continue  # deleted, or packed: packed-refs (read below) has it
            sha = content.rstrip(b"\r\n")
            if not entry.is_file(follow_symlinks=False) or not _SHA.fullmatch(sha):
                return None
            if name.endswith(b"."):
                return None
            loose[rest + name] = sha
    packed = _packed(control, prefix)
    if packed is None:
        return None
    packed.update(loose)
    return packed


def _packed(control: str, prefix: bytes) -> dict[bytes, bytes] | None:
    """The refs below `prefix` in `packed-refs`; None for a line git would not write."""
    try:
        with open(os.path.join(control, "packed-refs"), "rb") as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    found = {}
    for line in text.splitlines():
        if not line or line.startswith((b"#", b"^")):
            continue  # the header, and peeled ids of annotated tags
        sha, space, name = line.partition(b" ")
        if not space or not _SHA.fullmatch(sha):
            return None
        if name.startswith(prefix):
            rest = name[len(prefix) :]
            if not all(_plain_part(part) for part in rest.split(b"/")) or rest.endswith(b"."):
                return None
            found[rest] = sha
    return found


def _plain_part(part: bytes) -> bool:
    """A part of a ref's name that every git rule allows (ours need no other)."""
    return bool(_PART.fullmatch(part)) and b".." not in part and b"@{" not in part and part != b"@"

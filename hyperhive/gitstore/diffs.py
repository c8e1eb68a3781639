"""The diff between two commits for a page: per file, git-format text of at most what a
page shows, with the whole file's counts beside it.

Budgets, as the big forges have them (`DiffLimits`): a file shows at most `file_lines`
diff lines and the rest is behind a "show" that loads that file alone (where the file's
budget is the page's); all files together show at most `page_lines` (files after that
are listed, not diffed); a line shows at most `line_chars` characters; a file whose two
sides together are over `blob_bytes` is not diffed on a page of several files, and one
over `alone_bytes` not even alone (`git diff` in a clone shows it). The line
diff is `linediff` (O(n log n)), so a file alone costs about its size, never more.
"""

from dataclasses import dataclass, replace
from typing import Literal

from dulwich.diff_tree import tree_changes
from dulwich.objects import S_ISGITLINK, TreeEntry
from dulwich.repo import Repo

from hyperhive.gitstore import linediff, renames
from hyperhive.gitstore.blobparts import image_type
from hyperhive.gitstore.packscan import stored_size
from hyperhive.gitstore.renames import RenameLimits

Status = Literal["added", "deleted", "modified", "renamed", "copied"]
NO_EOL = b"\\ No newline at end of file\n"
ELLIPSIS = "\u2026".encode()
NONE = TreeEntry(None, None, None)  # the side of an added or deleted file that is not there


@dataclass(frozen=True)
class DiffLimits:
    file_lines: int = 2_000  # diff lines of one file on a page of several
    page_lines: int = 5_000  # diff lines of all files on one page
    line_chars: int = 5_000  # characters of one line shown (the rest cut, marked …)
    blob_bytes: int = 1024 * 1024  # both sides of a file: larger is diffed only alone
    alone_bytes: int = 4 * 1024 * 1024  # both sides of a file shown alone: larger, never
    renames: RenameLimits = RenameLimits()  # what rename and copy detection may read

    def alone(self) -> "DiffLimits":
        """The budget of a file shown alone: the page's lines, `alone_bytes` of text."""
        return replace(
            self,
            file_lines=self.page_lines,
            blob_bytes=self.alone_bytes,
            alone_bytes=self.alone_bytes,
        )


@dataclass
class FilePatch:
    path: str
    old_path: str | None  # None for an added file
    status: Status
    text: bytes  # git-format diff of this file: its header and the hunks shown
    binary: bool = False
    added: int | None = None  # the whole file's; None when it was not diffed
    removed: int | None = None
    hidden: int = 0  # diff lines not shown (over the file's or the page's budget)
    long_lines: int = 0  # lines shown cut at line_chars
    skipped: str = ""  # why it was not diffed on this page
    similarity: int | None = None  # percent, for a renamed or copied file
    old_sha: str | None = None  # the blobs of the two sides (hex), None where none
    new_sha: str | None = None
    old_size: int = 0
    new_size: int = 0
    new_lines: int | None = None  # lines of the new side, when it was read (for context)
    old_image: str | None = None  # a binary side's image type (blobparts.image_type)
    new_image: str | None = None


def _name(path: bytes | None) -> str | None:
    return None if path is None else path.decode("utf-8", errors="replace")


def _range(start: int, stop: int) -> str:
    """A hunk header's range, as difflib and git write it."""
    length = stop - start
    if length == 1:
        return f"{start + 1}"
    return f"{start + 1 if length else start},{length}"


def _is_binary(data: bytes) -> bool:
    return b"\0" in data[:8000]  # git's test


def file_patches(
    repo: Repo,
    old: bytes | None,
    new: bytes,
    limits: DiffLimits = DiffLimits(),
    only: str | None = None,
) -> list[FilePatch]:
    """Every changed file between the commits `old` (None: nothing) and `new`, in path
    order; `only`: that path alone, with a file-alone budget."""
    store = repo.object_store
    old_tree = repo[old].tree if old else None
    if only is not None:
        limits = limits.alone()
    left = limits.page_lines
    out = []
    changes = [
        c
        for c in tree_changes(store, old_tree, repo[new].tree)
        if not any(
            e is not None and e.mode is not None and S_ISGITLINK(e.mode) for e in (c.old, c.new)
        )
    ]
    for pair in renames.detect(store, changes, limits.renames):
        o, n = pair.old or NONE, pair.new or NONE
        path = _name(n.path or o.path) or ""
        if only is not None and path != only:
            continue
        status: Status = pair.status  # type: ignore[assignment]
        head = _header(o, n, status, pair.similarity)
        patch = FilePatch(path, _name(o.path) if status != "added" else None, status, head)
        patch.similarity = pair.similarity
        out.append(patch)
        sizes = [stored_size(store, x.sha) if x.sha else 0 for x in (o, n)]  # headers only
        patch.old_sha = o.sha.decode() if o.sha else None
        patch.new_sha = n.sha.decode() if n.sha else None
        patch.old_size, patch.new_size = sizes
        if o.sha is not None and o.sha == n.sha:
            patch.added = patch.removed = 0  # an exact rename or copy, or a mode change
            continue
        if sum(sizes) > limits.blob_bytes:
            patch.skipped = f"not diffed here: {sum(sizes)} bytes of text is large"
            continue
        if left <= 0:
            patch.skipped = "not diffed here: the page shows enough already"
            continue
        a = store[o.sha].as_raw_string() if o.sha else b""
        b = store[n.sha].as_raw_string() if n.sha else b""
        if _is_binary(a) or _is_binary(b):
            patch.binary = True
            patch.old_image, patch.new_image = image_type(a), image_type(b)
            patch.text += b"Binary files %s and %s differ\n" % (
                b"a/" + o.path if o.path else b"/dev/null",
                b"b/" + n.path if n.path else b"/dev/null",
            )
            continue
        budget = min(limits.file_lines, left)
        b_lines = b.splitlines(True)
        patch.new_lines = len(b_lines)
        shown = _hunks(patch, a.splitlines(True), b_lines, budget, limits.line_chars)
        left -= shown
    return out


def _header(o, n, status: Status, similarity: int | None = None) -> bytes:
    """git's extended header lines, in git's order."""
    path = n.path or o.path
    lines = [b"diff --git a/%s b/%s" % (o.path or path, n.path or path)]
    if status == "added":
        lines.append(b"new file mode %o" % n.mode)
    elif status == "deleted":
        lines.append(b"deleted file mode %o" % o.mode)
    elif o.mode != n.mode:
        lines += [b"old mode %o" % o.mode, b"new mode %o" % n.mode]
    if status in ("renamed", "copied"):
        word = b"rename" if status == "renamed" else b"copy"
        lines += [
            b"similarity index %d%%" % (similarity or 0),
            b"%s from %s" % (word, o.path),
            b"%s to %s" % (word, n.path),
        ]
    if o.sha is not None and o.sha == n.sha:
        return b"\n".join(lines) + b"\n"  # git writes no index line without a change
    index = b"index %s..%s" % ((o.sha or b"0" * 40)[:7], (n.sha or b"0" * 40)[:7])
    if status not in ("added", "deleted") and o.mode == n.mode:
        index += b" %o" % n.mode
    lines.append(index)
    return b"\n".join(lines) + b"\n"


def _hunks(patch: FilePatch, a: list[bytes], b: list[bytes], budget: int, chars: int) -> int:
    """Diff `a` against `b` into `patch`: counts, and hunks up to `budget` lines; the lines
    shown."""
    codes = linediff.opcodes(a, b)
    patch.added = sum(j2 - j1 for tag, _, _, j1, j2 in codes if tag in ("insert", "replace"))
    patch.removed = sum(i2 - i1 for tag, i1, i2, _, _ in codes if tag in ("delete", "replace"))
    groups = linediff.grouped(codes)
    if not groups:
        return 0
    old_name = b"a/" + patch.old_path.encode() if patch.old_path is not None else b"/dev/null"
    new_name = b"b/" + patch.path.encode() if patch.status != "deleted" else b"/dev/null"
    parts = [patch.text, b"--- %s\n+++ %s\n" % (old_name, new_name)]
    shown = total = 0
    for group in groups:
        lines: list[tuple[bytes, bytes, int]] = []  # sign, text, side (0 both, 1 old, 2 new)
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                lines += [(b" ", line, 0) for line in a[i1:i2]]
                continue
            lines += [(b"-", line, 1) for line in a[i1:i2]]
            lines += [(b"+", line, 2) for line in b[j1:j2]]
        total += len(lines)
        room = budget - shown
        if room <= 0:
            continue
        lines = lines[:room]
        shown += len(lines)
        i1, j1 = group[0][1], group[0][3]
        n_old = sum(side != 2 for _, _, side in lines)
        n_new = sum(side != 1 for _, _, side in lines)
        parts.append(
            b"@@ -%s +%s @@\n" % (_range(i1, i1 + n_old).encode(), _range(j1, j1 + n_new).encode())
        )
        for sign, line, _ in lines:
            end = line.endswith(b"\n")
            body = line[:-1] if end else line
            if len(body) > chars:
                body = body[:chars] + ELLIPSIS
                patch.long_lines += 1
            parts.append(sign + body + b"\n" + (b"" if end else NO_EOL))
    patch.hidden = total - shown
    patch.text = b"".join(parts)
    return shown

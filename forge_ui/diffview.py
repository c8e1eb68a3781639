"""Turn a git-format unified diff into highlighted, render-ready files, hunks and lines.

`render_diff(diff_bytes)` is pure: bytes in (as written by dulwich's `write_tree_diff` or
`git diff`), dataclasses out. Every line's `html` is a `Markup` built only from escaped
pieces: pygments token spans, and `<span class="x">` around the words that changed between
a removed line and the added line paired with it.

Highlighting lexes each hunk side (context + removed lines, context + added lines) as one
block, so strings and comments spanning lines come out right within a hunk, then splits the
tokens back into lines. A diff has no whole files to lex; a hunk starting inside a
docstring is the one case this gets wrong.
"""

from __future__ import annotations

import codecs
import difflib
import re
import time
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import accumulate, zip_longest
from typing import Literal

from markupsafe import Markup, escape
from pygments.lexer import Lexer
from pygments.lexers import TextLexer, get_lexer_for_filename
from pygments.token import STANDARD_TYPES, Other, Text, Whitespace, _TokenType
from pygments.util import ClassNotFound
from unidiff import PatchSet
from unidiff.constants import LINE_TYPE_ADDED, LINE_TYPE_CONTEXT, LINE_TYPE_REMOVED

from hyperhive.gitstore.diffs import FilePatch

Status = Literal["added", "deleted", "modified", "renamed", "copied"]
Kind = Literal["context", "add", "del"]

# Beyond these, work that grows faster than linearly is skipped: intra-line diffing of a
# long line, pairing runs of very unequal sizes, lexing a block with a huge line.
INTRALINE_MAX_CHARS = 500
HIGHLIGHT_MAX_LINE = 10_000
HIGHLIGHT_MAX_BLOCK = 1_000_000
# A pair of lines less similar than this gets no intra-line marks: the whole line changed.
INTRALINE_MIN_RATIO = 0.3
# Characters of diff lines syntax-highlighted per render_diff call (see there).
HIGHLIGHT_BUDGET = 150_000
# Characters lexed whatever the time (render_patches' `highlight_seconds`): a small change
# is always highlighted, even while a lexer's first use compiles its patterns.
HIGHLIGHT_FLOOR = 10_000


@dataclass
class Line:
    kind: Kind
    old_no: int | None
    new_no: int | None
    html: Markup
    no_newline: bool = False  # "\ No newline at end of file" follows this line


@dataclass
class Row:
    """One row of the side-by-side view; a context line is the same Line on both sides."""

    left: Line | None
    right: Line | None


@dataclass
class Hunk:
    header: str
    lines: list[Line] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    old_start: int = 0  # the hunk's first line on each side, and how many (its @@ header)
    old_len: int = 0
    new_start: int = 0
    new_len: int = 0


@dataclass
class FileDiff:
    path: str
    old_path: str | None  # None for an added file; differs from path for a rename
    status: Status
    binary: bool
    added: int
    removed: int
    collapsed: bool
    hunks: list[Hunk] = field(default_factory=list)
    highlighted: bool = True  # False: over the highlight budget, shown as plain text
    pending: bool = False  # plain for now: the page's lexing time ran out before it
    note: str = ""  # e.g. a mode change, shown beside the header
    hidden: int = 0  # diff lines over the budget, not rendered (gitstore.diffs)
    long_lines: int = 0  # lines cut at the line budget
    skipped: str = ""  # why the file was not diffed on this page
    similarity: int | None = None  # percent, for a renamed or copied file
    old_sha: str | None = None  # the two sides' blobs (hex), for context and images
    new_sha: str | None = None
    old_size: int = 0
    new_size: int = 0
    new_lines: int | None = None  # lines of the new side (for context after the last hunk)
    old_image: str | None = None  # an image side's MIME type (shown before/after)
    new_image: str | None = None
    # its diff tables as HTML, by (view, expandable): forge_ui.difftable fills it
    tables: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def changed(self) -> int:
        return self.added + self.removed


def render_diff(
    diff: bytes, *, collapse_over: int = 400, highlight_budget: int = HIGHLIGHT_BUDGET
) -> list[FileDiff]:
    """Parse and highlight a git-format unified diff.

    Files over `collapse_over` changed lines are marked `collapsed` (still fully rendered,
    for a per-file "show"). Syntax highlighting is the expensive part (pygments lexes a few
    hundred KB a second), so it is spent on at most `highlight_budget` characters: files
    shown open first, in diff order, then collapsed ones; a file that does not fit is shown
    plain (`highlighted=False`), still escaped and with intra-line marks."""
    if not diff.strip():
        return []
    text = diff.decode("utf-8", errors="replace")
    if "\nold file mode " in text:
        # dulwich writes a mode change as "old file mode"/"new file mode"; git (and so
        # unidiff, which would take "new file mode" for an added file) says "old/new mode".
        text = _DULWICH_MODES.sub(r"old mode \1\nnew mode \2", text)
    patches = list(PatchSet(text))
    sizes = [_size(pf) for pf in patches]
    collapsed = [pf.added + pf.removed > collapse_over for pf in patches]
    lit: set[int] = set()
    left = highlight_budget
    for i in sorted(range(len(patches)), key=lambda i: collapsed[i]):
        if not patches[i].is_binary_file and sizes[i] <= left:
            lit.add(i)
            left -= sizes[i]
    return [_file(pf, collapsed[i], i in lit) for i, pf in enumerate(patches)]


def render_patches(
    patches: list[FilePatch],
    *,
    collapse_over: int = 400,
    highlight_budget: int = HIGHLIGHT_BUDGET,
    highlight_seconds: float | None = None,
) -> list[FileDiff]:
    """render_diff for the budgeted per-file diffs of gitstore.diffs: each file's text is
    at most what the page shows, its counts are the whole file's. With
    `highlight_seconds`, no file starts to be lexed past that deadline, and a long one
    stops (every 1,024 tokens it looks): those files are plain and `pending`; without it
    the same call highlights them. The first HIGHLIGHT_FLOOR characters of files are
    lexed whatever the time."""
    deadline = None if highlight_seconds is None else time.monotonic() + highlight_seconds
    floor = HIGHLIGHT_FLOOR
    files: list[FileDiff | None] = [None] * len(patches)
    parsed = {}
    for i, p in enumerate(patches):
        if p.skipped or p.binary or p.added is None:
            files[i] = _sides(
                FileDiff(
                    path=p.path,
                    old_path=p.old_path,
                    status=p.status,
                    binary=p.binary,
                    added=p.added or 0,
                    removed=p.removed or 0,
                    collapsed=False,
                    highlighted=False,
                    skipped=p.skipped,
                ),
                p,
            )
        else:
            text = p.text.decode("utf-8", errors="replace")
            parsed[i] = next(iter(PatchSet(text)), None)
    left = highlight_budget
    collapsed = {
        i: p.added + p.removed > collapse_over for i, p in enumerate(patches) if i in parsed
    }
    for i in sorted(parsed, key=lambda i: collapsed[i]):
        pf, p = parsed[i], patches[i]
        size = _size(pf) if pf is not None else 0
        lit = size <= left
        left -= size if lit else 0
        free = lit and size <= floor  # within the floor: lexed whatever the time
        floor -= size if free else 0
        late = lit and not free and deadline is not None and time.monotonic() > deadline
        if pf is None:  # no content change (a mode change alone)
            fd = FileDiff(p.path, p.old_path, p.status, False, 0, 0, False, highlighted=False)
        else:
            try:
                if late:
                    raise OutOfTime
                fd = _file(pf, collapsed[i], lit, None if free else deadline)
            except OutOfTime:
                fd = _file(pf, collapsed[i], False)
                fd.pending = True
            fd.path, fd.old_path, fd.status = p.path, p.old_path, p.status
        fd.added, fd.removed = p.added, p.removed
        fd.hidden, fd.long_lines = p.hidden, p.long_lines
        if not fd.note:
            fd.note = _header_note(p.text)
        files[i] = _sides(fd, p)
    return [f for f in files if f is not None]


def _sides(fd: FileDiff, p: FilePatch) -> FileDiff:
    """What the page needs of the two blobs beyond the diff text."""
    fd.status, fd.similarity = p.status, p.similarity
    fd.old_sha, fd.new_sha, fd.old_size, fd.new_size = p.old_sha, p.new_sha, p.old_size, p.new_size
    fd.new_lines, fd.old_image, fd.new_image = p.new_lines, p.old_image, p.new_image
    return fd


def context_lines(path: str, texts: list[bytes], old_start: int, new_start: int) -> list[Line]:
    """Unchanged lines loaded to expand a diff's context (forge_ui.views.blobparts), highlighted
    as the diff's lines are: lexed as one block with the lexer of `path`'s name."""
    clean = [_clean(t.decode("utf-8", errors="replace")) for t in texts]
    tokens = _lex_lines(clean, _lexer(path.rsplit("/", 1)[-1] or "x.txt")) if clean else []
    return [
        Line("context", old_start + k, new_start + k, _html(tokens[k] or [("", text)], []))
        for k, text in enumerate(clean)
    ]


def _header_note(text: bytes) -> str:
    m = re.search(rb"^old mode (\d+)\nnew mode (\d+)$", text, re.M)
    return f"mode {m[1].decode()} → {m[2].decode()}" if m else ""


_DULWICH_MODES = re.compile(r"^old file mode (\d+)\nnew file mode (\d+)$", re.M)


def _size(pf) -> int:
    return sum(len(ln.value) for h in pf for ln in h)


# -- files -----------------------------------------------------------------------------


def _strip_prefix(name: str | None) -> str | None:
    """'a/x' -> 'x'; git's C-quoted '"a/\\303\\244.txt"' -> 'ä.txt'; /dev/null -> None."""
    if name is None or name == "/dev/null":
        return None
    if len(name) >= 2 and name[0] == name[-1] == '"':
        raw = codecs.escape_decode(name[1:-1].encode())[0]
        name = raw.decode("utf-8", errors="replace")
    return name[2:] if name[:2] in ("a/", "b/") else name


def _file(pf, collapsed: bool, highlight: bool, deadline: float | None = None) -> FileDiff:
    old = _strip_prefix(pf.source_file)
    new = _strip_prefix(pf.target_file)
    if pf.is_added_file:
        status: Status = "added"
        old = None
    elif pf.is_removed_file:
        status = "deleted"
    elif pf.is_rename:
        status = "renamed"
    else:
        status = "modified"
    path = new or old or pf.path
    if old is None and status != "added":
        old = path
    added, removed = pf.added, pf.removed
    fd = FileDiff(
        path=path,
        old_path=old,
        status=status,
        binary=bool(pf.is_binary_file),
        added=added,
        removed=removed,
        collapsed=collapsed,
        highlighted=highlight,
        note=_mode_note(pf),
    )
    if not fd.binary:
        lexer = _lexer(path.rsplit("/", 1)[-1]) if highlight else None
        fd.hunks = [_hunk(h, lexer, deadline) for h in pf]
    return fd


def _mode_note(pf) -> str:
    modes = {}
    for line in pf.patch_info or ():
        for key in ("old mode ", "new mode "):
            if line.startswith(key):
                modes[key.split()[0]] = line[len(key) :].strip()
    if "old" in modes and "new" in modes:
        return f"mode {modes['old']} → {modes['new']}"
    return ""


@lru_cache(maxsize=256)
def _lexer(name: str) -> Lexer:
    """The lexer for a file name (no directories), made not to strip or add lines."""
    try:
        return get_lexer_for_filename(name, stripnl=False, ensurenl=True)
    except ClassNotFound:
        return TextLexer(stripnl=False, ensurenl=True)


# -- hunks -----------------------------------------------------------------------------


def _clean(value: str) -> str:
    """A diff line's text without its line ending; a stray CR (which pygments would turn
    into a line break) is shown as a visible symbol."""
    if value.endswith("\n"):
        value = value[:-1]
    if value.endswith("\r"):
        value = value[:-1]
    return value.replace("\r", "\u240d") if "\r" in value else value


def _hunk(h, lexer: Lexer | None, deadline: float | None = None) -> Hunk:
    section = f" {h.section_header}" if h.section_header else ""
    header = (
        f"@@ -{h.source_start},{h.source_length} +{h.target_start},{h.target_length} @@{section}"
    )
    kinds: list[Kind] = []
    texts: list[str] = []
    nos: list[tuple[int | None, int | None]] = []
    no_newline: set[int] = set()
    for ln in h:
        t = ln.line_type
        if t == LINE_TYPE_CONTEXT:
            kinds.append("context")
        elif t == LINE_TYPE_ADDED:
            kinds.append("add")
        elif t == LINE_TYPE_REMOVED:
            kinds.append("del")
        else:  # "\ No newline at end of file" belongs to the line before it
            if kinds:
                no_newline.add(len(kinds) - 1)
            continue
        texts.append(_clean(ln.value))
        nos.append((ln.source_line_no, ln.target_line_no))

    # The new side (context + added) is lexed as one block; each run of removed lines as
    # another. Lexing the old side whole would lex every context line twice.
    tokens: list[list[tuple[str, str]] | None] = [None] * len(kinds)
    if lexer is not None:
        new_idx = [i for i, k in enumerate(kinds) if k != "del"]
        new_toks = _lex_lines([texts[i] for i in new_idx], lexer, deadline)
        for i, toks in zip(new_idx, new_toks, strict=True):
            tokens[i] = toks
    marks: list[list[tuple[int, int]]] = [[] for _ in kinds]
    for dels, adds in _runs(kinds):
        if dels and lexer is not None:
            del_toks = _lex_lines([texts[i] for i in dels], lexer, deadline)
            for i, toks in zip(dels, del_toks, strict=True):
                tokens[i] = toks
        if _pairable(len(dels), len(adds)):
            for d, a in zip(dels, adds, strict=False):
                marks[d], marks[a] = _intraline(texts[d], texts[a])

    lines = [
        Line(
            kind=kinds[i],
            old_no=nos[i][0],
            new_no=nos[i][1],
            html=_html(tokens[i] or [("", texts[i])], marks[i]),
            no_newline=i in no_newline,
        )
        for i in range(len(kinds))
    ]
    return Hunk(
        header=header,
        lines=lines,
        rows=_rows(lines, kinds),
        old_start=h.source_start,
        old_len=h.source_length,
        new_start=h.target_start,
        new_len=h.target_length,
    )


def _runs(kinds: list[Kind]):
    """Yield (removed indexes, added indexes) for each change: a run of removed lines and
    the run of added lines right after it (either may be empty)."""
    i, n = 0, len(kinds)
    while i < n:
        if kinds[i] == "context":
            i += 1
            continue
        dels = []
        while i < n and kinds[i] == "del":
            dels.append(i)
            i += 1
        adds = []
        while i < n and kinds[i] == "add":
            adds.append(i)
            i += 1
        yield dels, adds


def _pairable(n_del: int, n_add: int) -> bool:
    """Pair lines for intra-line marks only when the runs are of comparable size; a line
    replaced by a page of new lines is not a word-level edit."""
    small, big = min(n_del, n_add), max(n_del, n_add)
    return small > 0 and big <= 2 * small + 2


def _rows(lines: list[Line], kinds: list[Kind]) -> list[Row]:
    rows: list[Row] = []
    i, n = 0, len(lines)
    for dels, adds in _runs(kinds):
        start = (dels or adds)[0]
        while i < start:
            rows.append(Row(lines[i], lines[i]))
            i += 1
        for d, a in zip_longest(dels, adds):
            rows.append(
                Row(lines[d] if d is not None else None, lines[a] if a is not None else None)
            )
        i = (adds or dels)[-1] + 1
    while i < n:
        rows.append(Row(lines[i], lines[i]))
        i += 1
    return rows


# -- highlighting ----------------------------------------------------------------------

# Token types shown without a span. Other's class would be "x", which here means "changed
# words" (and pygments rarely emits it: delegating lexers re-lex such text).
_PLAIN = {Text, Whitespace, Other}


@lru_cache(maxsize=512)
def _css(ttype: _TokenType) -> str:
    """The class pygments.css styles for a token type: its own, or its nearest styled
    ancestor's; '' for plain text (no span at all)."""
    while ttype not in STANDARD_TYPES:
        ttype = ttype.parent
    return "" if ttype in _PLAIN else STANDARD_TYPES[ttype]


class OutOfTime(Exception):
    """Lexing went past its deadline (render_patches' `highlight_seconds`)."""


def _lex_lines(
    lines: list[str], lexer: Lexer, deadline: float | None = None
) -> list[list[tuple[str, str]] | None]:
    """Lex `lines` as one block and split the tokens back per line. A line whose tokens do
    not add up to its text (a lexer that rewrote it) gets None: shown plain. Found past
    `deadline` (time.monotonic) after a thousand tokens or more: OutOfTime."""
    if not lines:
        return []
    if sum(map(len, lines)) > HIGHLIGHT_MAX_BLOCK or max(map(len, lines)) > HIGHLIGHT_MAX_LINE:
        return [None] * len(lines)
    out: list[list[tuple[str, str]]] = [[]]
    for n, (ttype, value) in enumerate(lexer.get_tokens("\n".join(lines) + "\n")):
        if deadline is not None and n & 1023 == 1023 and time.monotonic() > deadline:
            raise OutOfTime
        cls = _css(ttype)
        if "\n" not in value:
            if value:
                out[-1].append((cls, value))
            continue
        parts = value.split("\n")
        for k, part in enumerate(parts):
            if k:
                out.append([])
            if part:
                out[-1].append((cls, part))
    result: list[list[tuple[str, str]] | None] = []
    for k, text in enumerate(lines):
        toks = out[k] if k < len(out) else None
        if toks is not None and "".join(v for _, v in toks) != text:
            toks = None
        result.append(toks)
    return result


# -- intra-line ------------------------------------------------------------------------

_WORD = re.compile(r"\w+|\s+|[^\w\s]")


def _intraline(old: str, new: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Character ranges that differ between a removed line and its added partner, at word
    granularity; ([], []) when the lines are too long or too different to be worth it."""
    if old == new or len(old) > INTRALINE_MAX_CHARS or len(new) > INTRALINE_MAX_CHARS:
        return [], []
    a, b = _WORD.findall(old), _WORD.findall(new)
    # Trim the common prefix and suffix first: most edits touch a word or two, and
    # SequenceMatcher then only sees the middle.
    n = min(len(a), len(b))
    pre = 0
    while pre < n and a[pre] == b[pre]:
        pre += 1
    suf = 0
    while suf < n - pre and a[-1 - suf] == b[-1 - suf]:
        suf += 1
    am, bm = a[pre : len(a) - suf], b[pre : len(b) - suf]
    if am and bm:
        sm = difflib.SequenceMatcher(None, am, bm, autojunk=False)
        same = sum(size for _, _, size in sm.get_matching_blocks())
        ops = sm.get_opcodes()
    else:
        same, ops = 0, [("replace", 0, len(am), 0, len(bm))]
    if 2 * (pre + suf + same) < INTRALINE_MIN_RATIO * (len(a) + len(b)):
        return [], []
    a_off = list(accumulate(map(len, a), initial=0))
    b_off = list(accumulate(map(len, b), initial=0))
    old_marks: list[tuple[int, int]] = []
    new_marks: list[tuple[int, int]] = []
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal":
            continue
        if i2 > i1:
            _add_range(old_marks, a_off[pre + i1], a_off[pre + i2])
        if j2 > j1:
            _add_range(new_marks, b_off[pre + j1], b_off[pre + j2])
    return old_marks, new_marks


def _add_range(ranges: list[tuple[int, int]], start: int, end: int) -> None:
    if ranges and ranges[-1][1] == start:
        ranges[-1] = (ranges[-1][0], end)
    else:
        ranges.append((start, end))


@lru_cache(maxsize=1 << 16)
def _piece(cls: str, value: str) -> str:
    """One escaped token, in its span if it has a class. Cached: code repeats its tokens
    (names, keywords, operators, indentation) a lot."""
    v = str(escape(value))
    return f'<span class="{cls}">{v}</span>' if cls else v


def _html(tokens: list[tuple[str, str]], marks: list[tuple[int, int]]) -> Markup:
    """Escaped HTML for one line: token spans, split at mark boundaries so that each
    `<span class="x">` wraps whole token pieces and every tag nests properly."""
    if not marks:
        return Markup("".join([_piece(cls, value) for cls, value in tokens]))
    # marks are sorted, disjoint and never touch (see _add_range)
    parts: list[str] = []
    bounds = [p for r in marks for p in r]
    inside = False
    mi = 0  # index into bounds of the next boundary
    mk = 0  # index into marks of the first that ends after pos
    pos = 0
    for cls, value in tokens:
        end = pos + len(value)
        while value:
            while mi < len(bounds) and bounds[mi] <= pos:
                mi += 1
            cut = min(end, bounds[mi]) if mi < len(bounds) else end
            piece, value = value[: cut - pos], value[cut - pos :]
            while mk < len(marks) and marks[mk][1] <= pos:
                mk += 1
            want = mk < len(marks) and marks[mk][0] <= pos
            if want != inside:
                parts.append('<span class="x">' if want else "</span>")
                inside = want
            parts.append(_piece(cls, piece))
            pos = cut
    if inside:
        parts.append("</span>")
    return Markup("".join(parts))

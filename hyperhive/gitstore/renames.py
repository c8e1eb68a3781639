"""Renames and copies between two trees, found as `git diff -M -C` finds them, within
bounds.

git's diffcore-rename with copy detection, step for step, so the page says what the git
CLI says (`R087 old new`):

1. sources are the deleted files and the modified ones (their old side: a copy may come
   from a file that stays); destinations are the added files;
2. an added file whose blob is a source's is an exact rename or copy (100%);
3. every other pair of regular files is scored: the two blobs are cut into spans (a line,
   or 64 bytes of one; a CR before LF not counted in text), each span hashed as git's
   diffcore-delta hashes it; the similarity is the bytes of spans the two share over the
   larger size, in git's 1/60000ths. Pairs whose sizes differ by more than the threshold
   allows are not even read. Each destination keeps its best four candidates; the best
   pairs overall are taken first, first only from sources not taken yet, then (copies)
   from any;
4. a deleted source taken by several destinations is a rename for the last of them in
   path order and a copy for the others; a modified source is always copied from.

Bounds (`RenameLimits`), where git has its `-l` rename limit: scoring is skipped when
sources × destinations is over `files`² (git's own rule, so `git diff -M -C -l N` agrees),
a blob over `blob_bytes` takes no part in scoring, and when the blobs to read for scoring
add up to over `total_bytes`, scoring is skipped altogether (exact renames are still
found: they cost nothing). What a page shows is then a deletion and an addition, as git
shows past its limit.
"""

import re
import stat
from dataclasses import dataclass, field

from dulwich.diff_tree import TreeChange
from dulwich.objects import TreeEntry

from hyperhive.gitstore.cache import LRU
from hyperhive.gitstore.packscan import stored_size

MAX_SCORE = 60_000  # git's scale of similarity
MIN_SCORE = 30_000  # 50%: git's default for -M and -C
CANDIDATES = 4  # git's NUM_CANDIDATE_PER_DST
HASHBASE = 107_927
# git hashes spans of a line, its LF included, or of 64 bytes of a longer one
_SPAN = re.compile(rb"[^\n]{0,63}\n|[^\n]{1,64}")
_HIGH = [c << 32 for c in range(256)]
# A blob's spans never change: a page viewed again (or the next proposal of the same
# files) hashes nothing it hashed before. Each holds a few thousand entries at most.
_spans: LRU[bytes, dict[int, int]] = LRU(512)


@dataclass(frozen=True)
class RenameLimits:
    files: int = 400  # sources x destinations over files**2: no scoring (git's -l)
    blob_bytes: int = 512 * 1024  # a larger blob is never scored (exact matches still count)
    total_bytes: int = 4 * 1024 * 1024  # blobs read for scoring, all of them together


@dataclass
class Pair:
    """One file of the change: `old`/`new` are TreeEntry or None (added, deleted)."""

    old: TreeEntry | None
    new: TreeEntry | None
    status: str  # added, deleted, modified, renamed, copied
    similarity: int | None = None  # percent, for renamed and copied


@dataclass
class _Dst:
    entry: TreeEntry
    src: int | None = None
    score: int = 0


@dataclass
class _Src:
    entry: TreeEntry
    deleted: bool
    used: int = 0
    spans: dict[int, int] | None = field(default=None, repr=False)


def spans(data: bytes) -> dict[int, int]:
    """git's diffcore-delta hash_chars: span hash -> bytes, for a blob. A text file's CR
    before LF is neither counted nor hashed, so CRLF and LF files score alike."""
    if b"\0" not in data[:8000]:  # git's binary test
        data = data.replace(b"\r\n", b"\n")
    counts: dict[int, int] = {}
    cache: dict[bytes, int] = {}
    for m in _SPAN.finditer(data):
        chunk = m[0]
        h = cache.get(chunk)
        if h is None:
            h = cache[chunk] = _hash(chunk)
        counts[h] = counts.get(h, 0) + len(chunk)
    return counts


def _hash(chunk: bytes) -> int:
    """git's span hash. Its two 32-bit accumulators, shifted 7 and fed each other's top 7
    bits, are one 64-bit word rotated left by 7 (accum1 the high half); a byte is added
    to the high half, its carry out of the word dropped as C's unsigned int drops it."""
    x = 0
    for c in chunk:  # bits past 64 of the shift go with the mask after the add
        x = (((x << 7) | (x >> 57)) + _HIGH[c]) & 0xFFFFFFFFFFFFFFFF
    return (((x >> 32) + (x & 0xFFFFFFFF) * 0x61) & 0xFFFFFFFF) % HASHBASE


def similarity(src: dict[int, int], dst: dict[int, int], src_size: int, dst_size: int) -> int:
    """git's estimate_similarity once both sides are hashed: 0..MAX_SCORE."""
    big = max(src_size, dst_size)
    if not dst_size or not big:
        return 0
    copied = sum(min(n, src.get(h, 0)) for h, n in dst.items())
    return copied * MAX_SCORE // big


def _sizes_allow(a: int, b: int) -> bool:
    big, small = max(a, b), min(a, b)
    return big * (MAX_SCORE - MIN_SCORE) >= (big - small) * MAX_SCORE


def detect(store, changes: list[TreeChange], limits: RenameLimits = RenameLimits()) -> list[Pair]:
    """`changes` (dulwich tree_changes, in path order) as git -M -C pairs them, in the
    order git lists them (each rename or copy where its new path is)."""
    pairs: list[Pair] = []
    srcs: list[_Src] = []
    dsts: dict[int, _Dst] = {}  # index into pairs -> its destination
    for c in changes:
        if c.new is None or c.new.path is None:
            pairs.append(Pair(c.old, None, "deleted"))
            srcs.append(_Src(c.old, deleted=True))
        elif c.old is None or c.old.path is None:
            dsts[len(pairs)] = _Dst(c.new)
            pairs.append(Pair(None, c.new, "added"))
        else:
            pairs.append(Pair(c.old, c.new, "modified"))
            srcs.append(_Src(c.old, deleted=False))  # git -C registers every modified file
    if not srcs or not dsts:
        return pairs
    _exact(srcs, dsts)
    left = [d for d in dsts.values() if d.src is None]
    if left and len(left) * len(srcs) <= limits.files**2:
        _scored(store, srcs, left, limits)
    return _resolve(pairs, srcs, dsts)


def _basename_same(a: bytes, b: bytes) -> int:
    return int(a.rsplit(b"/", 1)[-1] == b.rsplit(b"/", 1)[-1])


def _exact(srcs: list[_Src], dsts: dict[int, _Dst]) -> None:
    """find_exact_renames: per destination, the source with its blob, preferring one not
    taken yet, then one of the same base name."""
    by_sha: dict[bytes, list[int]] = {}
    for i, s in enumerate(srcs):
        by_sha.setdefault(s.entry.sha, []).append(i)
    for d in dsts.values():
        best, best_score = None, -1
        for i in by_sha.get(d.entry.sha, ()):
            s = srcs[i]
            if stat.S_IFMT(s.entry.mode) != stat.S_IFMT(d.entry.mode):
                continue
            score = (not s.used) + _basename_same(s.entry.path, d.entry.path)
            if score > best_score:
                best, best_score = i, score
        if best is not None:
            d.src, d.score = best, MAX_SCORE
            srcs[best].used += 1


def _scored(store, srcs: list[_Src], dsts: list[_Dst], limits: RenameLimits) -> None:
    regular = stat.S_ISREG
    sizes: dict[bytes, int] = {}

    def size(e: TreeEntry) -> int:
        if e.sha not in sizes:
            sizes[e.sha] = stored_size(store, e.sha)
        return sizes[e.sha]

    src_ok = [i for i, s in enumerate(srcs) if regular(s.entry.mode)]
    dst_ok = [d for d in dsts if regular(d.entry.mode)]
    src_ok = [i for i in src_ok if size(srcs[i].entry) <= limits.blob_bytes]
    dst_ok = [d for d in dst_ok if size(d.entry) <= limits.blob_bytes]
    # only pairs whose sizes are close enough are read; count those blobs before reading
    wanted = {
        e.sha
        for d in dst_ok
        for i in src_ok
        if _sizes_allow(size(srcs[i].entry), size(d.entry))
        for e in (srcs[i].entry, d.entry)
    }
    if sum(sizes[sha] for sha in wanted) > limits.total_bytes:
        return

    def spans_of(e: TreeEntry) -> dict[int, int]:
        found = _spans.get(e.sha)
        if found is None:
            found = spans(store[e.sha].as_raw_string())
            _spans.put(e.sha, found)
        return found

    # Shared bytes of each destination with every source at once, through an index of the
    # sources' spans: only pairs that share a span cost anything (a pair sharing nothing
    # scores 0, and a pair under MIN_SCORE is never taken, nor keeps a better one out).
    index: dict[int, list[tuple[int, int]]] = {}
    for i in src_ok:
        for h, n in spans_of(srcs[i].entry).items():
            index.setdefault(h, []).append((i, n))
    # mx: per destination (in path order) its best CANDIDATES
    mx: list[tuple[int, int, int, int]] = []  # score, name score, dst order, src
    for k, d in enumerate(dst_ok):
        b = size(d.entry)
        copied: dict[int, int] = {}
        for h, n in spans_of(d.entry).items():
            for i, m in index.get(h, ()):
                copied[i] = copied.get(i, 0) + (n if n < m else m)
        best: list[tuple[int, int, int] | None] = [None] * CANDIDATES
        for i in src_ok:  # in source order: git's tie-breaking depends on it
            if i not in copied:
                continue
            a = size(srcs[i].entry)
            if not _sizes_allow(a, b) or not b:
                continue
            score = copied[i] * MAX_SCORE // max(a, b)
            if score < MIN_SCORE:
                continue
            _record_if_better(best, (score, _basename_same(srcs[i].entry.path, d.entry.path), i))
        mx += [(c[0], c[1], k, c[2]) for c in best if c is not None]
    # git's stable sort: by score, then name score, both descending; ties keep mx order
    order = sorted(range(len(mx)), key=lambda n: (-mx[n][0], -mx[n][1], n))
    for copies in (False, True):
        for n in order:
            score, _, k, i = mx[n]
            if score < MIN_SCORE:
                break
            d = dst_ok[k]
            if d.src is not None or (not copies and srcs[i].used):
                continue
            d.src, d.score = i, score
            srcs[i].used += 1


def _worse(a: tuple[int, int, int] | None, b: tuple[int, int, int] | None) -> bool:
    """git's score_compare(a, b) > 0: `a` sorts after `b` (an empty slot sorts last)."""
    if a is None:
        return b is not None
    if b is None:
        return False
    if a[0] == b[0]:
        return b[1] > a[1]
    return b[0] > a[0]


def _record_if_better(best: list, this: tuple[int, int, int]) -> None:
    worst = 0
    for k in range(1, len(best)):
        if _worse(best[k], best[worst]):
            worst = k
    if _worse(best[worst], this):
        best[worst] = this


def _resolve(pairs: list[Pair], srcs: list[_Src], dsts: dict[int, _Dst]) -> list[Pair]:
    """The list git prints: each matched destination a rename or copy, a deleted source
    taken by one gone from the list."""
    remaining = [s.used for s in srcs]
    out: list[Pair] = []
    matched = {idx: d for idx, d in dsts.items() if d.src is not None}
    taken = {id(srcs[d.src].entry) for d in matched.values() if srcs[d.src].deleted}
    for idx, p in enumerate(pairs):
        if p.status == "deleted" and id(p.old) in taken:
            continue
        d = matched.get(idx)
        if d is None:
            out.append(p)
            continue
        s = srcs[d.src]
        remaining[d.src] -= 1
        status = "renamed" if s.deleted and remaining[d.src] == 0 else "copied"
        out.append(Pair(s.entry, d.entry, status, d.score * 100 // MAX_SCORE))
    return out

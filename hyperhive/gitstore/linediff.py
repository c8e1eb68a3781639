"""A line diff in O(n log n): patience-style anchors, difflib only on small gaps.

difflib's SequenceMatcher (what dulwich's `write_tree_diff` uses) takes seconds on a
20,000-line file where most lines changed a little, and grows worse than linearly. Here:

1. the common prefix and suffix of a region are matched outright;
2. lines that occur exactly once on each side of the region are the anchors; the longest
   run of them in the same order on both sides (a longest increasing subsequence, by
   patience sorting) is matched, and each gap between two anchors is a region again;
3. a region without anchors goes to difflib when it is small (at most `SMALL` line pairs),
   and is otherwise one replacement.

The result is a valid diff (every line kept, removed or added once), git's own for
ordinary edits, sometimes a little longer than the shortest where blocks of repeated lines
moved.
"""

import difflib
from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence

SMALL = 250_000  # line pairs difflib may compare in a gap without anchors

Opcode = tuple[str, int, int, int, int]  # difflib's: tag, a[i1:i2], b[j1:j2]


def matching_blocks(a: Sequence, b: Sequence) -> list[tuple[int, int, int]]:
    """(i, j, n): a[i:i+n] == b[j:j+n], increasing in i and j, ending with (len a, len b, 0)
    as difflib's do."""
    found: list[tuple[int, int, int]] = []
    todo = [(0, len(a), 0, len(b))]
    while todo:
        alo, ahi, blo, bhi = todo.pop()
        k = 0
        while alo + k < ahi and blo + k < bhi and a[alo + k] == b[blo + k]:
            k += 1
        if k:
            found.append((alo, blo, k))
            alo, blo = alo + k, blo + k
        k = 0
        while ahi - k > alo and bhi - k > blo and a[ahi - k - 1] == b[bhi - k - 1]:
            k += 1
        if k:
            found.append((ahi - k, bhi - k, k))
            ahi, bhi = ahi - k, bhi - k
        if alo == ahi or blo == bhi:
            continue
        if _small(a, b, alo, ahi, blo, bhi, found):
            continue
        anchors = _anchors(a, b, alo, ahi, blo, bhi)
        if not anchors:
            if (ahi - alo) * (bhi - blo) <= SMALL:
                _difflib(a, b, alo, ahi, blo, bhi, found)
            continue
        i0, j0 = alo, blo
        for i, j in [*anchors, (ahi, bhi)]:
            if i > i0 and j > j0 and not _small(a, b, i0, i, j0, j, found):
                todo.append((i0, i, j0, j))
            if i < ahi:
                found.append((i, j, 1))
            i0, j0 = i + 1, j + 1
    found.sort()
    merged: list[tuple[int, int, int]] = []
    for i, j, n in found:
        if merged and merged[-1][0] + merged[-1][2] == i and merged[-1][1] + merged[-1][2] == j:
            merged[-1] = (merged[-1][0], merged[-1][1], merged[-1][2] + n)
        else:
            merged.append((i, j, n))
    merged.append((len(a), len(b), 0))
    return merged


def _small(a, b, alo, ahi, blo, bhi, found) -> bool:
    """Match a small region directly (most gaps between anchors are a line or two): True
    if it was."""
    na, nb = ahi - alo, bhi - blo
    if na == 1 or nb == 1:
        try:
            if na == 1:
                found.append((alo, b.index(a[alo], blo, bhi), 1))
            else:
                found.append((a.index(b[blo], alo, ahi), blo, 1))
        except ValueError:
            pass
        return True
    if na * nb <= 400:
        _difflib(a, b, alo, ahi, blo, bhi, found)
        return True
    return False


def _difflib(a, b, alo, ahi, blo, bhi, found) -> None:
    sm = difflib.SequenceMatcher(None, a[alo:ahi], b[blo:bhi], autojunk=False)
    found.extend((alo + i, blo + j, n) for i, j, n in sm.get_matching_blocks() if n)


def _anchors(a, b, alo, ahi, blo, bhi) -> list[tuple[int, int]]:
    """The longest chain of lines unique on both sides, in the same order on both."""
    left, right = a[alo:ahi], b[blo:bhi]
    in_a = Counter(left)
    unique = {line for line, n in Counter(right).items() if n == 1 and in_a.get(line) == 1}
    if not unique:
        return []
    where_b = dict(zip(right, range(blo, bhi), strict=True))  # a unique line: its place
    pairs = [(i, where_b[line]) for i, line in enumerate(left, alo) if line in unique]
    # patience sorting: tails[k] = the smallest j ending a chain of k+1; back-pointers
    tails: list[int] = []
    ends: list[int] = []  # index into pairs of each tail
    back = [-1] * len(pairs)
    for idx, (_, j) in enumerate(pairs):
        k = bisect_left(tails, j)
        if k == len(tails):
            tails.append(j)
            ends.append(idx)
        else:
            tails[k] = j
            ends[k] = idx
        back[idx] = ends[k - 1] if k else -1
    chain = []
    idx = ends[-1]
    while idx >= 0:
        chain.append(pairs[idx])
        idx = back[idx]
    return chain[::-1]


def opcodes(a: Sequence, b: Sequence) -> list[Opcode]:
    """difflib's get_opcodes, from `matching_blocks`."""
    out: list[Opcode] = []
    i = j = 0
    for ai, bj, n in matching_blocks(a, b):
        tag = ""
        if i < ai and j < bj:
            tag = "replace"
        elif i < ai:
            tag = "delete"
        elif j < bj:
            tag = "insert"
        if tag:
            out.append((tag, i, ai, j, bj))
        i, j = ai + n, bj + n
        if n:
            out.append(("equal", ai, i, bj, j))
    return out


def grouped(codes: list[Opcode], context: int = 3) -> list[list[Opcode]]:
    """The hunks of a unified diff with `context` lines around each change (difflib's
    get_grouped_opcodes, on our opcodes)."""
    matcher = difflib.SequenceMatcher(None, "", "")
    matcher.get_opcodes = lambda: codes  # type: ignore[method-assign]
    if not any(tag != "equal" for tag, *_ in codes):
        return []
    return list(matcher.get_grouped_opcodes(context))

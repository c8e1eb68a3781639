"""The diffs that pages show, kept by the commits they compare.

A diff between two commits never changes (their ids name their content, in any repo that
holds them), so what the review and commit pages render of it — the files, their
highlighted lines and (difftable) their HTML tables — is kept by `(old, new, only)` in
one LRU bounded by bytes (`CACHE_BYTES`, an estimate of what the rendered files hold:
about 4x their lines' HTML, measured with tracemalloc). A page seen again is read from it.

The first render of a diff lexes for at most `HIGHLIGHT_SECONDS` (pygments lexes
~150-400 KB of code a second in pure Python: a 5,000-line change is about a second of
it): the files it did not reach are shown plain, marked `pending`, and a background
thread (`finisher.Finisher`) renders the diff again without the deadline, once the
answer is sent, and replaces the cached one: the next view (anyone's) is highlighted in
full."""

from dulwich.repo import Repo

from forge_ui.diffview import FileDiff, render_patches
from forge_ui.finisher import Finisher
from hyperhive.gitstore.cache import SizedLRU
from hyperhive.gitstore.diffs import DiffLimits, FilePatch, file_patches

CACHE_BYTES = 96 * 1024 * 1024  # rendered diffs kept, estimated (one page at most 1/4)
HIGHLIGHT_SECONDS = 0.1  # lexing on the request's time; the rest in the background
QUEUED_MAX = 8  # diffs waiting for the background highlighting; more are left plain
LINE_BYTES = 500  # what a rendered line holds beside its HTML: Line, Row, numbers, tables

Key = tuple[bytes | None, bytes, str | None]
PAGES: SizedLRU[Key, list[FileDiff]] = SizedLRU(CACHE_BYTES)


def weight(files: list[FileDiff]) -> int:
    """Estimated bytes the rendered files hold, their two HTML tables included."""
    total = 0
    for f in files:
        for h in f.hunks:
            total += sum(4 * len(ln.html) + LINE_BYTES for ln in h.lines)
    return total + 2048 * len(files)


FINISHER = Finisher("diffcache", QUEUED_MAX)


def diff_page(repo: Repo, old: bytes | None, new: bytes, only: str | None = None) -> list[FileDiff]:
    """What a page shows of the change from commit `old` to `new`: every file within the
    page's budgets (gitstore.diffs.DiffLimits), or `only` that file with the page's
    budget. Shared between requests: the caller must not change what it gets."""
    key = (old, new, only or None)
    files = PAGES.get(key)
    if files is not None:
        return files
    patches = file_patches(repo, old, new, DiffLimits(), only=only or None)
    files = render_patches(patches, highlight_seconds=HIGHLIGHT_SECONDS)
    PAGES.put(key, files, weight(files))
    if any(f.pending for f in files):
        FINISHER.wanted(key, lambda: _finish(key, patches))
    return files


def _finish(key: Key, patches: list[FilePatch]) -> None:
    """The diff again, highlighted in full, in place of the one with plain files."""
    files = render_patches(patches)
    PAGES.put(key, files, weight(files))

"""The diffs pages show, kept by the commits they compare (forge_ui/diffcache.py): a page
seen again is read from the cache, the cache holds to its byte bound, and lexing past
the request's time is finished in the background."""

import re
from pathlib import Path

import pytest
from flask import Flask, Response
from support.gitcli import GitRepo

from forge_ui import diffcache, difftable, diffview
from hyperhive.gitstore.cache import SizedLRU
from hyperhive.gitstore.repos import open_repo

PYTHON = "".join(f"def f{n}(x):\n    return x + {n}  # n\n" for n in range(40))


@pytest.fixture
def change(tmp_path: Path) -> tuple[GitRepo, bytes, bytes]:
    repo = GitRepo(tmp_path / "repo")
    files = {f"m{k}.py": PYTHON for k in range(3)}
    old = repo.commit(files)
    new = repo.commit({p: body.replace("+ 1", "- 1") for p, body in files.items()})
    return repo, old.encode(), new.encode()


@pytest.fixture(autouse=True)
def empty_cache():
    diffcache.PAGES.clear()
    yield
    diffcache.PAGES.clear()


def test_a_diff_seen_again_is_read_from_the_cache_with_its_tables(change):
    repo, old, new = change
    with open_repo(repo.path) as r:
        files = diffcache.diff_page(r, old, new)
        table = difftable.diff_table(files[0], "unified", True)
        again = diffcache.diff_page(r, old, new)
        assert again is files and difftable.diff_table(again[0], "unified", True) is table
        assert [f.path for f in files] == ["m0.py", "m1.py", "m2.py"]
        # one file alone is another page of the same diff
        (alone,) = diffcache.diff_page(r, old, new, "m1.py")
        assert alone.path == "m1.py" and diffcache.diff_page(r, old, new, "m1.py")[0] is alone
    assert 0 < diffcache.PAGES.weight <= diffcache.CACHE_BYTES


def test_files_past_the_lexing_time_are_plain_then_highlighted_in_the_background(
    change, monkeypatch
):
    repo, old, new = change
    monkeypatch.setattr(diffcache, "HIGHLIGHT_SECONDS", 0.0)  # the deadline is now
    with open_repo(repo.path) as r:
        # a small change is highlighted whatever the time (diffview.HIGHLIGHT_FLOOR)
        assert all(f.highlighted and not f.pending for f in diffcache.diff_page(r, old, new))
        diffcache.PAGES.clear()
        monkeypatch.setattr(diffview, "HIGHLIGHT_FLOOR", 0)
        files = diffcache.diff_page(r, old, new)
        assert all(f.pending and not f.highlighted for f in files)
        html = str(difftable.diff_table(files[0], "unified", True))
        assert "return x - 1" in re.sub("<[^>]+>", "", html)  # shown,
        assert '<span class="k">' not in html  # plain
        assert diffcache.FINISHER.wait(60)
        done = diffcache.diff_page(r, old, new)
    assert done is not files and not any(f.pending for f in done)
    assert all(f.highlighted for f in done)
    assert '<span class="k">return</span>' in difftable.diff_table(done[0], "split", True)
    assert [(f.added, f.removed) for f in done] == [(f.added, f.removed) for f in files]


def test_a_request_queues_its_highlighting_once_its_answer_is_sent(change, monkeypatch):
    """Not beside the request: a thread lexing holds the GIL, which would slow it down."""
    repo, old, new = change
    monkeypatch.setattr(diffcache, "HIGHLIGHT_SECONDS", 0.0)
    monkeypatch.setattr(diffview, "HIGHLIGHT_FLOOR", 0)
    app = Flask(__name__)
    with app.test_request_context(), open_repo(repo.path) as r:
        assert all(f.pending for f in diffcache.diff_page(r, old, new))
        response = app.process_response(Response("the page"))
        assert not diffcache.FINISHER.pending  # answered, not sent yet
        response.close()  # what the WSGI server does once it sent it
        assert diffcache.FINISHER.wait(60)
        assert not any(f.pending for f in diffcache.diff_page(r, old, new))


def test_the_lru_holds_to_its_bytes_and_keeps_no_single_huge_value():
    lru: SizedLRU[str, str] = SizedLRU(1000)
    assert not lru.put("huge", "x", 251)  # over a quarter of the bound
    for k in range(5):
        assert lru.put(f"k{k}", f"v{k}", 250)
    assert lru.weight == 1000 and len(lru) == 4  # the oldest went first
    assert lru.get("k0") is None and lru.get("k1") == "v1"
    lru.put("k5", "v5", 250)  # k1 was used last: k2 goes
    assert lru.get("k2") is None and lru.get("k1") == "v1" and lru.weight == 1000
    lru.put("k1", "v1'", 10)  # replaced, its weight with it
    assert lru.get("k1") == "v1'" and lru.weight == 760
    lru.clear()
    assert len(lru) == 0 and lru.weight == 0

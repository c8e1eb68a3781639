"""The diff renderer: real diffs from real repos (written with the git CLI, diffed with
dulwich as the review page does), parsed, highlighted and rendered through _diff.html."""

import difflib
import html
import re
import time
from pathlib import Path

import pytest
from flask import Flask, render_template_string
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.gitcli import GitRepo

import forge_ui
from forge_ui import difftable, difftree
from forge_ui.diffview import FileDiff, render_diff
from forge_ui.views import viewed

TAG = re.compile(r"<[^>]+>")


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    return GitRepo(tmp_path / "repo")


def by_path(files: list[FileDiff]) -> dict[str, FileDiff]:
    return {f.path: f for f in files}


def text_of(markup: str) -> str:
    """The text a browser shows for a line's HTML."""
    return html.unescape(TAG.sub("", str(markup)))


def render_partial(files: list[FileDiff], view: str) -> str:
    here = Path(forge_ui.__file__).parent
    app = Flask(
        __name__, template_folder=str(here / "templates"), static_folder=str(here / "static")
    )
    difftree.init_app(app)  # the partial's globals: file tree, viewed marks, gaps
    difftable.init_app(app)  # and each file's table
    app.register_blueprint(viewed.bp)  # the file tree's mark URL
    with app.test_request_context():
        return render_template_string('{% include "_diff.html" %}', files=files, view=view)


NUMBERED = "".join(f"line {i}\n" for i in range(1, 41))


def test_counts_match_git_numstat(repo):
    a = repo.commit(
        {
            "agent.nix": '{ ... }:\n{\n  model = "a";\n  tools = [ ];\n}\n',
            "notes.md": NUMBERED,
            "gone.txt": "one\ntwo\n",
            "src/app.py": "def f():\n    return 1\n\n\ndef g():\n    return 2\n",
        }
    )
    b = repo.commit(
        {
            "agent.nix": '{ ... }:\n{\n  model = "b";\n  tools = [ "git" ];\n  x = 1;\n}\n',
            "notes.md": NUMBERED.replace("line 3\n", "line three\n").replace("line 30\n", ""),
            "gone.txt": None,
            "src/app.py": "def f():\n    return 10\n\n\ndef g():\n    return 2\n",
            "new/file.txt": "hello\nworld\n",
        }
    )
    files = render_diff(repo.diff(a, b))
    expected = repo.numstat(a, b, "--no-renames")
    assert {f.path: (f.added, f.removed) for f in files} == expected
    # notes.md has two separate changes 27 lines apart: two hunks, numbered right
    notes = by_path(files)["notes.md"]
    assert len(notes.hunks) == 2
    first = notes.hunks[0]
    assert first.header.startswith("@@ -1,6 +1,6 @@")
    assert [(ln.kind, ln.old_no, ln.new_no) for ln in first.lines if ln.kind != "context"] == [
        ("del", 3, None),
        ("add", None, 3),
    ]
    ctx = [ln for ln in notes.hunks[1].lines if ln.kind == "context"][0]
    assert text_of(ctx.html) == f"line {ctx.old_no}" and ctx.new_no == ctx.old_no


def test_statuses_added_deleted_modified(repo):
    a = repo.commit({"keep.txt": "a\n", "drop.txt": "b\n"})
    b = repo.commit({"keep.txt": "A\n", "drop.txt": None, "add.txt": "c\n"})
    files = by_path(render_diff(repo.diff(a, b)))
    assert files["keep.txt"].status == "modified" and files["keep.txt"].old_path == "keep.txt"
    assert files["drop.txt"].status == "deleted" and files["drop.txt"].old_path == "drop.txt"
    assert files["add.txt"].status == "added" and files["add.txt"].old_path is None
    assert [ln.kind for ln in files["drop.txt"].hunks[0].lines] == ["del"]
    assert [ln.kind for ln in files["add.txt"].hunks[0].lines] == ["add"]


def test_first_commit_diffs_against_nothing(repo):
    a = repo.commit({"agent.nix": "{ }\n", "b.txt": "x\ny\n"})
    files = render_diff(repo.diff(None, a))
    assert [(f.path, f.status, f.added, f.removed) for f in files] == [
        ("agent.nix", "added", 1, 0),
        ("b.txt", "added", 2, 0),
    ]


def test_rename_dulwich_shows_delete_and_add_git_shows_rename(repo):
    body = "".join(f"row {i}\n" for i in range(20))
    a = repo.commit({"old/name.txt": body})
    b = repo.commit({"old/name.txt": None, "new/name.txt": body.replace("row 5\n", "row V\n")})
    # dulwich's write_tree_diff does no rename detection: one file goes, another comes
    files = by_path(render_diff(repo.diff(a, b)))
    assert files["old/name.txt"].status == "deleted" and files["old/name.txt"].removed == 20
    assert files["new/name.txt"].status == "added" and files["new/name.txt"].added == 20
    # git's own diff with -M is understood too: a rename with its content change
    (renamed,) = render_diff(repo.git("diff", "-M", a, b).encode())
    assert (renamed.status, renamed.old_path, renamed.path) == (
        "renamed",
        "old/name.txt",
        "new/name.txt",
    )
    assert (renamed.added, renamed.removed) == (1, 1)
    page = render_partial([renamed], "unified")
    assert "old/name.txt &rarr; new/name.txt" in page


def test_paths_with_spaces_unicode_and_markup(repo):
    names = ["my file.txt", "ä.txt", 'q"<b>.txt']
    a = repo.commit(dict.fromkeys(names, "a\n"))
    b = repo.commit(dict.fromkeys(names, "b\n"))
    dulwich_paths = [f.path for f in render_diff(repo.diff(a, b))]
    git_paths = [f.path for f in render_diff(repo.git("diff", a, b).encode())]  # C-quoted
    assert sorted(dulwich_paths) == sorted(git_paths) == sorted(names)
    page = render_partial(render_diff(repo.diff(a, b)), "unified")
    assert 'data-path="q&#34;&lt;b&gt;.txt"' in page and "<b>" not in page


def test_binary_file_named_not_dumped(repo):
    secret = b"\x00\x01BINARY-PAYLOAD\xff\xfe" * 50
    a = repo.commit({"blob.bin": secret, "t.txt": "a\n"})
    b = repo.commit({"blob.bin": secret + b"\x00more", "t.txt": "b\n", "new.bin": b"\x00\x02"})
    raw = repo.diff(a, b)
    files = by_path(render_diff(raw))
    assert files["blob.bin"].binary and files["blob.bin"].hunks == []
    assert files["blob.bin"].status == "modified"
    assert files["new.bin"].binary and files["new.bin"].status == "added"
    assert not files["t.txt"].binary
    for view in ("unified", "split"):
        page = render_partial(list(files.values()), view)
        assert page.count("binary file, not shown") == 2
        assert 'data-path="blob.bin"' in page and 'data-path="new.bin"' in page
        assert "BINARY-PAYLOAD" not in page


def test_python_lines_carry_pygments_token_spans(repo):
    a = repo.commit({"m.py": "import os\n"})
    b = repo.commit({"m.py": 'import os\n\n\ndef f(x):\n    return "hi"  # done\n'})
    (f,) = render_diff(repo.diff(a, b))
    html_by_text = {text_of(ln.html): str(ln.html) for ln in f.hunks[0].lines}
    assert '<span class="kn">import</span>' in html_by_text["import os"]
    line = html_by_text['    return "hi"  # done']
    assert '<span class="k">return</span>' in line
    assert '<span class="s2">hi</span>' in line
    assert '<span class="c1"># done</span>' in line
    assert '<span class="nf">f</span>' in html_by_text["def f(x):"]


def test_multiline_tokens_are_lexed_as_a_block(repo):
    a = repo.commit({"m.py": "x = 1\n"})
    b = repo.commit({"m.py": 'x = 1\nDOC = """first\nmiddle <b>\nlast"""\n'})
    (f,) = render_diff(repo.diff(a, b))
    middle = next(ln for ln in f.hunks[0].lines if "middle" in text_of(ln.html))
    # lexed line by line, "middle <b>" would be names and operators; in a block it is string
    assert str(middle.html) == '<span class="s2">middle &lt;b&gt;</span>'


def test_unknown_file_types_fall_back_to_plain_text(repo):
    a = repo.commit({"NOTES.unknownext": "a & b\n"})
    b = repo.commit({"NOTES.unknownext": "a & c\n"})
    (f,) = render_diff(repo.diff(a, b))
    assert f.highlighted
    assert [text_of(ln.html) for ln in f.hunks[0].lines] == ["a & b", "a & c"]
    assert "&amp;" in str(f.hunks[0].lines[0].html)


def test_intraline_marks_exactly_the_changed_word(repo):
    a = repo.commit({"v.py": "x = 1\ny = [alpha, beta, gamma]\n"})
    b = repo.commit({"v.py": "x = 2\ny = [alpha, BETA, gamma]\n"})
    (f,) = render_diff(repo.diff(a, b))
    lines = f.hunks[0].lines
    assert [ln.kind for ln in lines] == ["del", "del", "add", "add"]
    marked = [re.findall(r'<span class="x">(.*?</span>)</span>', str(ln.html)) for ln in lines]
    assert [[text_of(m) for m in ms] for ms in marked] == [["1"], ["beta"], ["2"], ["BETA"]]
    assert str(lines[0].html) == (
        '<span class="n">x</span> <span class="o">=</span> '
        '<span class="x"><span class="mi">1</span></span>'
    )


def test_intraline_skipped_for_unrelated_or_huge_lines(repo):
    long_a, long_b = "a" * 600 + " 1\n", "a" * 600 + " 2\n"
    a = repo.commit({"t.txt": "completely different\n" + long_a})
    b = repo.commit({"t.txt": "nothing alike here!\n" + long_b})
    (f,) = render_diff(repo.diff(a, b))
    assert not any('class="x"' in str(ln.html) for ln in f.hunks[0].lines)


def test_html_in_file_content_is_escaped(repo):
    evil = "<script>alert(1)</script>"
    a = repo.commit({"page.html": f"<p>hi</p>\n{evil}\n", "evil.txt": "ok\n"})
    b = repo.commit(
        {"page.html": f"<p>hello</p>\n{evil.replace('1', '2')}\n", "evil.txt": f"{evil}\n"}
    )
    files = render_diff(repo.diff(a, b))
    lines = [ln for f in files for h in f.hunks for ln in h.lines]
    assert sum(evil in text_of(ln.html) for ln in lines) == 2
    assert all("<script" not in str(ln.html) for ln in lines)
    for view in ("unified", "split"):
        page = render_partial(files, view)
        assert "<script" not in page
        assert "&lt;script&gt;" in page or "&lt;</span><span" in page


def test_side_by_side_rows_pair_removed_with_added(repo):
    a = repo.commit({"f.txt": "keep\nold one\nold two\nend\n"})
    b = repo.commit({"f.txt": "keep\nnew one\nnew two\nnew three\nend\nmore\n"})
    (f,) = render_diff(repo.diff(a, b))
    (h,) = f.hunks

    def side(ln):
        return None if ln is None else (ln.kind, text_of(ln.html))

    assert [(side(r.left), side(r.right)) for r in h.rows] == [
        (("context", "keep"), ("context", "keep")),
        (("del", "old one"), ("add", "new one")),
        (("del", "old two"), ("add", "new two")),
        (None, ("add", "new three")),
        (("context", "end"), ("context", "end")),
        (None, ("add", "more")),
    ]
    assert h.rows[0].left is h.rows[0].right  # one context line, both sides
    assert (h.rows[0].left.old_no, h.rows[0].left.new_no) == (1, 1)
    assert (h.rows[4].left.old_no, h.rows[4].right.new_no) == (4, 5)


def test_deletions_without_additions_pair_with_nothing(repo):
    a = repo.commit({"f.txt": "a\nb\nc\n"})
    b = repo.commit({"f.txt": "a\n"})
    (f,) = render_diff(repo.diff(a, b))
    rows = f.hunks[0].rows
    assert [(r.left and r.left.kind, r.right and r.right.kind) for r in rows] == [
        ("context", "context"),
        ("del", None),
        ("del", None),
    ]


def test_collapse_threshold(repo):
    a = repo.commit({"ten.txt": "", "two.txt": "a\n"})
    b = repo.commit({"ten.txt": "".join(f"{i}\n" for i in range(10)), "two.txt": "b\n"})
    raw = repo.diff(a, b)
    assert not by_path(render_diff(raw, collapse_over=10))["ten.txt"].collapsed
    files = render_diff(raw, collapse_over=9)
    ten, two = by_path(files)["ten.txt"], by_path(files)["two.txt"]
    assert ten.collapsed and not two.collapsed
    assert ten.hunks  # collapsed files are still rendered, for "show" without JS
    assert by_path(render_diff(raw))["ten.txt"].collapsed is False  # default: over 400
    for view in ("unified", "split"):
        page = render_partial(files, view)
        assert page.count("<details") == 1
        details = page[page.index("<details") : page.index("</details>")]
        assert details.startswith('<details class="collapsed">')  # closed: no `open`
        assert "<summary>show 10 changed lines</summary>" in details
        assert "9" in text_of(details)  # the content is there, behind the summary


def test_empty_diff(repo):
    a = repo.commit({"f.txt": "x\n"})
    b = repo.commit({}, message="empty")
    assert repo.diff(a, b) == b""
    assert render_diff(b"") == []
    assert render_diff(repo.diff(a, b)) == []
    assert "No changes." in render_partial([], "unified")


def test_no_newline_at_end_of_file(repo):
    a = repo.commit({"f.txt": "a\nlast"})
    b = repo.commit({"f.txt": "a\nlast\n"})
    (f,) = render_diff(repo.diff(a, b))
    lines = f.hunks[0].lines
    assert [(ln.kind, text_of(ln.html), ln.no_newline) for ln in lines] == [
        ("context", "a", False),
        ("del", "last", True),
        ("add", "last", False),
    ]
    assert "No newline at end of file" in render_partial([f], "unified")


def test_mode_changes(repo):
    """dulwich writes a mode change as "old file mode"/"new file mode" (git: "old mode"/
    "new mode"), which unidiff alone would read as an added file."""
    a = repo.commit({"run.sh": "echo hi\n", "go.sh": "echo a\n"})
    (repo.path / "run.sh").chmod(0o755)
    (repo.path / "go.sh").chmod(0o755)
    b = repo.commit({"go.sh": "echo b\n"})
    raw = repo.diff(a, b)
    assert b"old file mode 100644\nnew file mode 100755\n" in raw
    for files in (by_path(render_diff(raw)), by_path(render_diff(repo.git("diff", a, b).encode()))):
        run, go = files["run.sh"], files["go.sh"]
        assert (run.status, run.added, run.removed, run.hunks) == ("modified", 0, 0, [])
        assert run.note == go.note == "mode 100644 → 100755"
        assert (go.status, go.old_path, go.added, go.removed) == ("modified", "go.sh", 1, 1)
    page = render_partial([run, go], "unified")
    assert "no content changes" in page and page.count("mode 100644 → 100755") == 2


def test_crlf_and_undecodable_bytes(repo):
    a = repo.commit({"w.txt": b"one\r\ntwo\r\n", "l1.txt": b"caf\xe9\n"})
    b = repo.commit({"w.txt": b"one\r\nTWO\r\n", "l1.txt": b"caf\xe9s\n"})
    files = by_path(render_diff(repo.diff(a, b)))
    assert [text_of(ln.html) for ln in files["w.txt"].hunks[0].lines] == ["one", "two", "TWO"]
    assert [text_of(ln.html) for ln in files["l1.txt"].hunks[0].lines] == [
        "caf\ufffd",
        "caf\ufffds",
    ]


def test_highlight_budget_falls_back_to_plain(repo):
    a = repo.commit({"a.py": "x = 1\n", "b.py": "y = 1\n"})
    b = repo.commit({"a.py": "x = 2\n", "b.py": "y = '<2>'\n"})
    raw = repo.diff(a, b)
    assert all(f.highlighted for f in render_diff(raw))
    plain = render_diff(raw, highlight_budget=0)
    assert not any(f.highlighted for f in plain)
    b_lines = by_path(plain)["b.py"].hunks[0].lines
    assert str(b_lines[0].html) == 'y = <span class="x">1</span>'
    assert str(b_lines[1].html) == 'y = <span class="x">&#39;&lt;2&gt;&#39;</span>'
    # open files are highlighted before collapsed ones, whatever their order
    one = render_diff(raw, highlight_budget=14, collapse_over=1)  # each file: 12 chars
    assert [f.highlighted for f in one] == [True, False]
    assert "large diff: not syntax-highlighted" in render_partial(plain, "unified")


def test_partial_renders_both_views(repo):
    a = repo.commit({"app.py": "def f():\n    return 1\n", "z.txt": "z\n"})
    b = repo.commit({"app.py": "def f():\n    return 2\n", "z.txt": None, "n.md": "# hi\n"})
    files = render_diff(repo.diff(a, b))
    unified = render_partial(files, "unified")
    split = render_partial(files, "split")
    for page in (unified, split):
        assert '<nav class="diff-files file-tree panel"' in page
        assert '3 files changed <span class="plus">+2</span>' in " ".join(page.split())
        for i, f in enumerate(files, 1):
            assert f'<a class="path" href="#file-{i}">{f.path}</a>' in page
            assert f'<li class="tree-file" data-file="file-{i}"><a href="#file-{i}"' in page
            assert f'<section class="file" id="file-{i}" data-path="{f.path}"' in page
        assert 'class="fstat fstat-deleted">deleted<' in page
        assert '<span class="k">return</span>' in page
        assert '<tr class="ctx">' in page
        assert re.search(r'<table class="[^"]*\bhl\b', page)  # pygments.css scope
    assert 'class="diff-table unified hl"' in unified and "diff-table split" not in unified
    row = '<tr class="{}"><td class="num">{}</td><td class="num">{}</td><td class="sign">{}</td>'
    assert row.format("del", 2, "", "-") in unified
    assert row.format("add", "", 2, "+") in unified
    assert row.format("ctx", 1, 1, " ") in unified
    assert 'class="diff-table split hl"' in split
    assert '<tr class="del add"><td class="num del">2</td><td class="code del">' in split
    assert '<tr class="add"><td class="num none"></td><td class="code none"></td>' in split
    assert '<span class="x"><span class="mi">2</span></span>' in unified
    assert '<span class="x"><span class="mi">2</span></span>' in split
    assert 'class="diff-table unified hl"' in render_partial(files, "bogus")


def test_long_diff_renders_in_linear_time(repo):
    """Not a benchmark (bench/forge.py is): a guard against quadratic blow-ups from very
    long lines or very unequal del/add runs."""
    a = repo.commit({"big.txt": "".join(f"word {i} " * 40 + "\n" for i in range(3000))})
    b = repo.commit({"big.txt": "x" * 200_000 + "\n" + "".join(f"w {i}\n" for i in range(3000))})
    raw = repo.diff(a, b)
    start = time.perf_counter()
    (f,) = render_diff(raw)
    assert time.perf_counter() - start < 10
    assert (f.added, f.removed) == (3001, 3000) and f.collapsed


alphabet = st.characters(categories=("L", "N", "P", "S", "Zs"), include_characters="<>&\"'\t#;{}")
source_line = st.text(alphabet, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    old=st.lists(source_line, max_size=12),
    new=st.lists(source_line, max_size=12),
    name=st.sampled_from(["f.py", "f.nix", "f.html", "f.txt", "f.js", "f.md"]),
)
def test_every_line_shows_its_text_exactly(old, new, name):
    """Whatever the content and lexer: each line's HTML shows exactly the line's text,
    every span is closed, and the line numbers count up like the file's."""
    body = "".join(
        difflib.unified_diff(
            [ln + "\n" for ln in old], [ln + "\n" for ln in new], f"a/{name}", f"b/{name}"
        )
    )
    raw = (f"diff --git a/{name} b/{name}\n" + body).encode() if body else b""
    files = render_diff(raw)
    if not body:
        assert files == []
        return
    (f,) = files
    olds, news = [], []
    for h in f.hunks:
        for ln in h.lines:
            s = str(ln.html)
            assert s.count("<span") == s.count("</span>")
            assert "<" not in TAG.sub("", s)
            if ln.old_no is not None:
                olds.append((ln.old_no, text_of(s)))
            if ln.new_no is not None:
                news.append((ln.new_no, text_of(s)))
    assert all(old[no - 1] == text for no, text in olds)
    assert all(new[no - 1] == text for no, text in news)
    changes = body.split("\n")[2:]
    assert f.added == sum(ln.startswith("+") for ln in changes)
    assert f.removed == sum(ln.startswith("-") for ln in changes)

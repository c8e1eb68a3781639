"""The change in full context on the review page, through Flask's test client on a real
hive: context expanded from the blob (checked against `git show`), renames as one file,
images before and after from a safe endpoint, the file tree and viewed marks."""

import html
import re
import struct
import zlib

import pytest
from support.hive import commit_config, git, log_in

from forge_ui import create_app, difftree
from forge_ui.diffview import FileDiff
from hyperhive import viewed
from hyperhive.gitstore import blobparts
from hyperhive.hive import Hive
from hyperhive.home import Home
from hyperhive.workflow.approvals import Approvals

TAG = re.compile(r"<[^>]+>")


def png(width: int, rgb: tuple[int, int, int]) -> bytes:
    """A real, tiny PNG (one colour)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    raw = b"".join(b"\0" + bytes(rgb) * width for _ in range(width))
    head = struct.pack(">IIBBBBB", width, width, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", head)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def commit(home: Home, files: dict[str, str | bytes | None], message: str = "c") -> None:
    """Commit to the manager's config repo with the git CLI; its commit page diffs it
    against its parent."""
    config = home.config_dir("manager")
    for rel, content in files.items():
        p = config / rel
        if content is None:
            git(config, "rm", "-q", rel)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)
    commit_config(home, "manager", {}, message)


def propose(home: Home, files: dict[str, str | bytes | None], message: str = "c") -> int:
    """Commit and propose: its review page diffs it against the deployed commit."""
    commit(home, files, message)
    return Approvals(home, "manager").propose("HEAD", "manager").id


HEAD = "/repos/manager/config/commit/HEAD"


@pytest.fixture
def hive(home: Home, runtime):
    (home.applied_dir("manager") / "hooks" / "post-receive").unlink()
    return home, log_in(create_app(Hive(home, runtime)).test_client(), home)


def page(client, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_data(as_text=True)


def row_texts(fragment: str) -> list[tuple[str, str, str]]:
    """(old number, new number, text) of each unified context row."""
    rows = re.findall(
        r'<tr class="ctx expanded"><td class="num">(\d+)</td><td class="num">(\d+)</td>'
        r'<td class="sign"> </td><td class="code">(.*?)</td></tr>',
        fragment,
    )
    return [(o, n, html.unescape(TAG.sub("", t))) for o, n, t in rows]


NUMBERED = "".join(f"line {i} of the file\n" for i in range(1, 201))


def test_context_between_hunks_and_at_both_ends_comes_from_the_blob(hive):
    home, client = hive
    commit(home, {"notes.txt": NUMBERED}, "base")
    commit(
        home,
        {
            "notes.txt": NUMBERED.replace("line 50 ", "LINE 50 ").replace(
                "line 150 ", "line 150\nadded\n"
            )
        },
    )
    body = page(client, HEAD)
    gaps = re.findall(
        r'<tr class="expand" data-start="(\d+)" data-end="(\d+)" data-old="(\d+)">', body
    )
    # what git's own hunks leave out: above the first, between, below the last
    config = home.config_dir("manager")
    heads = re.findall(
        r"^@@ -(\d+),(\d+) \+(\d+),(\d+) @@", git(config, "diff", "HEAD~1", "HEAD"), re.M
    )
    new = git(config, "show", "HEAD:notes.txt").splitlines()
    want_gaps, old_end, new_end = [], 0, 0
    for o, ol, n, nl in [tuple(map(int, h)) for h in heads] + [(None, 0, len(new) + 1, 0)]:
        want_gaps.append((str(new_end + 1), str(n - 1), str(old_end + 1)))
        if o is not None:
            old_end, new_end = o + ol - 1, n + nl - 1
    assert len(heads) == 2 and gaps == want_gaps
    url = re.search(r'data-lines-url="([^"]+)"', body)[1]
    for start, end, old in gaps:
        got = row_texts(page(client, f"{url}?start={start}&end={end}&old={old}&path=notes.txt"))
        want = [
            (str(int(old) + k), str(n), new[n - 1])
            for k, n in enumerate(range(int(start), int(end) + 1))
        ]
        assert got == want
    split = page(client, f"{url}?start=1&end=2&old=1&path=notes.txt&view=split")
    assert split.count('<tr class="ctx expanded"><td class="num">1</td><td class="code">') == 1
    # the range is clipped to the file; its length goes with it
    tail = client.get(f"{url}?start={len(new) - 2}&end=900&old=1&path=notes.txt")
    assert len(row_texts(tail.get_data(as_text=True))) == 3
    assert tail.headers["X-Total-Lines"] == str(len(new))


def test_the_lines_endpoint_refuses_past_its_limits(hive, monkeypatch):
    home, client = hive
    a_id = propose(home, {"notes.txt": NUMBERED + "end\n"})
    body = page(client, f"/review/manager/{a_id}")  # the review page's repo: the applied one
    url = re.search(r'data-lines-url="([^"]+)"', body)[1]
    over = client.get(f"{url}?start=1&end={blobparts.MAX_LINES + 1}&old=1")
    assert over.status_code == 400 and f"at most {blobparts.MAX_LINES} lines" in over.get_data(
        as_text=True
    )
    for bad in (
        "start=0&end=3&old=1",
        "start=5&end=4&old=1",
        "start=x&end=4&old=1",
        "start=1&end=2",
    ):
        assert client.get(f"{url}?{bad}").status_code == 400, bad
    monkeypatch.setattr(blobparts, "MAX_BYTES", 100)
    big = client.get(f"{url}?start=1&end=2&old=1")
    assert big.status_code == 400 and "over 100" in big.get_data(as_text=True)
    prefix = url.rsplit("/", 1)[0]
    assert client.get(f"{prefix}/{'0' * 40}?start=1&end=2&old=1").status_code == 404
    assert client.get(f"{prefix}/nothex?start=1&end=2&old=1").status_code == 404
    tree = git(home.config_dir("manager"), "rev-parse", "HEAD^{tree}").strip()
    assert url.startswith("/repos/manager/applied/lines/")
    prefix = "/repos/manager/config/lines"
    assert client.get(f"{prefix}/{tree}?start=1&end=2&old=1").status_code == 404


def test_a_rename_is_one_file_with_its_similarity(hive):
    home, client = hive
    commit(home, {"tools/old_name.py": NUMBERED}, "base")
    commit(
        home,
        {"tools/old_name.py": None, "lib/new_name.py": NUMBERED.replace("line 7 ", "line seven ")},
    )
    body = page(client, HEAD)
    out = git(home.config_dir("manager"), "diff", "-M", "-C", "--name-status", "HEAD~1", "HEAD")
    assert out.startswith("R0") or out.startswith("R")
    percent = int(out.split("\t")[0][1:])
    assert f'fstat-renamed">renamed {percent}%</span>' in body
    assert "tools/old_name.py &rarr; lib/new_name.py" in body
    assert body.count('<section class="file') == 1 and "fstat-deleted" not in body


def test_images_before_and_after_served_safely_and_svg_as_text(hive):
    home, client = hive
    commit(home, {"img/logo.png": png(4, (255, 0, 0)), "img/icon.svg": "<svg/>\n"}, "base")
    svg = '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>\n'
    commit(home, {"img/logo.png": png(8, (0, 0, 255)), "img/icon.svg": svg})
    body = page(client, HEAD)
    srcs = re.findall(r'<img src="([^"]+)" alt="img/logo.png (before|after)"', body)
    assert [side for _, side in srcs] == ["before", "after"]
    config = home.config_dir("manager")
    for (src, _), rev in zip(srcs, ("HEAD~1", "HEAD"), strict=True):
        sha = git(config, "rev-parse", f"{rev}:img/logo.png").strip()
        assert src == f"/repos/manager/config/image/{sha}"
        r = client.get(src)
        assert r.status_code == 200 and r.mimetype == "image/png"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in r.headers["Content-Security-Policy"]
        assert (
            r.data == (config / "img/logo.png").read_bytes()
            if rev == "HEAD"
            else r.data[:4] == b"\x89PNG"
        )
        assert len(r.data) == int(git(config, "cat-file", "-s", sha))
    sizes = [
        int(git(config, "cat-file", "-s", f"{rev}:img/logo.png")) for rev in ("HEAD~1", "HEAD")
    ]
    assert f'class="muted binsize">{sizes[0]} Bytes &rarr; {sizes[1]} Bytes<' in body
    # the SVG is diffed as text, its script escaped; the image endpoint refuses it
    assert "<script>alert(1)</script>" in html.unescape(TAG.sub("", body))
    assert "<script>alert(1)" not in body and 'fstat-modified">modified</span>' in body
    svg_sha = git(config, "rev-parse", "HEAD:img/icon.svg").strip()
    assert client.get(f"/repos/manager/config/image/{svg_sha}").status_code == 415


def csrf(client, path: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', page(client, path))[1]


def test_viewed_marks_per_account_reset_when_the_file_changes(hive):
    home, client = hive
    first = propose(home, {"a.txt": "a\n", "b.txt": "b\n"})  # both added against deployed
    path = f"/review/manager/{first}"
    body = page(client, path)
    sides = dict(re.findall(r'data-path="([^"]+)"[^>]*data-sides="([^"]+)"', body))
    token = csrf(client, path)
    for name in ("a.txt", "b.txt"):
        r = client.post(
            "/viewed",
            json={"path": name, "sides": sides[name], "viewed": True},
            headers={"X-CSRFToken": token},
        )
        assert r.status_code == 200, r.get_data(as_text=True)
    body = page(client, path)
    assert body.count('<section class="file viewed"') == 2, re.findall(r"tree-viewed.{0,80}", body)
    assert "2 of 3 viewed" in body  # agent.nix too: nothing is deployed yet
    # a follow-up that changes a.txt again: its mark is gone, b.txt's (the same change) stays
    second = propose(home, {"a.txt": "a3\n"})
    body2 = page(client, f"/review/manager/{second}")
    assert re.search(r'<section class="file" id="file-\d+" data-path="a.txt"', body2)
    assert re.search(r'<section class="file viewed" id="file-\d+" data-path="b.txt"', body2)
    # another operator sees none; unmarking clears
    other = log_in(create_app(Hive(home, None)).test_client(), home, "bob")
    assert '<section class="file viewed"' not in page(other, path)
    client.post(
        "/viewed",
        json={"path": "b.txt", "sides": sides["b.txt"], "viewed": False},
        headers={"X-CSRFToken": token},
    )
    assert page(client, path).count('<section class="file viewed"') == 1
    # bad marks are refused; a mark needs the CSRF token
    for bad in (
        {"path": "a", "sides": "nope"},
        {"path": "", "sides": sides["a.txt"]},
        {"sides": "x"},
        {"path": "a", "sides": sides["a.txt"], "viewed": "yes"},
    ):
        assert (
            client.post("/viewed", json=bad, headers={"X-CSRFToken": token}).status_code == 400
        ), bad
    assert (
        client.post("/viewed", json={"path": "a.txt", "sides": sides["a.txt"]}).status_code == 403
    )


def test_viewed_marks_are_bounded_per_account(home, monkeypatch):
    monkeypatch.setattr(viewed, "MAX_PER_ACCOUNT", 3)
    key = viewed.sides("1" * 40, None)
    for n in range(5):
        viewed.mark(home, "alice", f"f{n}", key)
    kept = viewed.marked(home, "alice", [(f"f{n}", key) for n in range(5)])
    assert len(kept) == 3 and ("f4", key) in kept and ("f0", key) not in kept


def test_the_file_tree_folds_single_directories_and_sums_counts():
    def f(path: str, added: int, removed: int) -> FileDiff:
        return FileDiff(path, path, "modified", False, added, removed, False)

    nodes = difftree.file_tree(
        [f("a/b/c/x.py", 1, 2), f("a/b/c/y.py", 3, 0), f("a/z.md", 5, 5), f("top.txt", 0, 1)]
    )
    assert [n.name for n in nodes] == ["a", "top.txt"]
    a = nodes[0]
    assert (a.added, a.removed) == (9, 7)
    assert [c.name for c in a.children] == ["b/c", "z.md"]
    assert [(c.name, c.index) for c in a.children[0].children] == [("x.py", 1), ("y.py", 2)]


def test_images_are_known_by_their_bytes_never_their_names():
    assert blobparts.image_type(png(1, (0, 0, 0))) == "image/png"
    assert blobparts.image_type(b"\xff\xd8\xff\xe0\0\x10JFIF") == "image/jpeg"
    assert blobparts.image_type(b"GIF89a\x01\0\x01\0") == "image/gif"
    assert blobparts.image_type(b"GIF87a\x01\0\x01\0") == "image/gif"
    assert blobparts.image_type(b"RIFF\x24\0\0\0WEBPVP8 ") == "image/webp"
    for other in (b"<svg onload=alert(1)/>", b"RIFF\x24\0\0\0WAVEfmt ", b"\x89PNX", b""):
        assert blobparts.image_type(other) is None

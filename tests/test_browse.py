"""The repo browser through Flask's test client, checked against the git CLI. The tests
that only read and are refused share one hive with the files (`seen`)."""

import html
import os
import re
import subprocess
from pathlib import Path

import pytest
from dulwich.repo import Repo
from support.gitcli import fast_import
from support.hive import commit_config, git, log_in

from forge_ui import blobview, create_app
from hyperhive.agents import init_hive
from hyperhive.gitstore import browse
from hyperhive.hive import Hive
from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.deploy import deploy

SCRIPT = "<script>alert(1)</script>\n"


def make_client(home: Home, logged_in: bool = True):
    app = create_app(Hive(home, LocalRuntime(home)))
    client = app.test_client()
    if logged_in:
        log_in(client, home, "operator")
    return client


@pytest.fixture
def client(home: Home):
    return make_client(home)


def text(response) -> str:
    return response.get_data(as_text=True)


def title(response) -> str:
    return html.unescape(re.search(r"<title>(.*?)</title>", text(response)).group(1))


def commit_links(response, repo: str) -> list[str]:
    """Shas of the log rows, in page order (first link of each row)."""
    return re.findall(
        rf'<tr>\s*<td class="mono"><a href="/repos/{repo}/commit/([0-9a-f]{{40}})"', text(response)
    )


@pytest.fixture
def files(home: Home) -> str:
    return add_files(home)


@pytest.fixture(scope="module")
def seen(tmp_path_factory):
    """(home, client) of a hive with add_files, for the module's tests that change
    nothing in it: the repo and its views are what a fresh one would show them."""
    home = Home(tmp_path_factory.mktemp("seen") / "hive")
    init_hive(home, LocalRuntime(home), "operator")
    add_files(home)
    return home, make_client(home)


def add_files(home: Home) -> str:
    """The manager's config repo with a few kinds of files; returns the new commit."""
    commit_config(
        home,
        "manager",
        {
            "page.html": SCRIPT,
            "lib/tool.py": "def f(x):\n    return x + 1\n",
            "lib/deep/notes.md": "# notes\n",
            "zz-last.txt": "z\n",
        },
        "add files\n\nA body line.\n\nReviewed-by: someone <s@x>\nChange-Id: I123\n",
    )
    config = home.config_dir("manager")
    (config / "image.bin").write_bytes(bytes(range(256)) * 4)
    (config / "big.txt").write_text("x" * 100 + "\n" * 1)
    (config / "big.txt").write_text(("y" * 1023 + "\n") * 1100)  # > 1 MiB
    git(config, "add", "-A")
    git(config, "-c", "user.name=m", "-c", "user.email=m@x", "commit", "-q", "-m", "binary")
    return git(config, "rev-parse", "HEAD").strip()


# ---------------------------------------------------------------------------- index, auth


def test_index_lists_every_repo_with_its_head(client, home: Home):
    r = client.get("/repos")
    assert r.status_code == 200 and title(r) == "Repositories · hyperhive"
    body = text(r)
    meta_head = git(home.meta_dir, "rev-parse", "main").strip()
    config_head = git(home.config_dir("manager"), "rev-parse", "HEAD").strip()
    assert f"/repos/meta/commit/{meta_head}" in body
    assert f"/repos/manager/config/commit/{config_head}" in body
    assert "/repos/manager/applied/log" in body
    assert "no commits yet" in body  # applied main only exists after the first deploy


def test_every_page_needs_the_operator_session(home: Home):
    client = make_client(home, logged_in=False)
    for url in ("/repos", "/repos/meta/log", "/repos/manager/config/raw/agent.nix"):
        r = client.get(url)
        assert r.status_code == 302, url
        assert r.headers["Location"].startswith("/login")


def test_url_for_accepts_repo_or_name_and_kind(home: Home):
    app = create_app(Hive(home, LocalRuntime(home)))
    with app.test_request_context():
        from flask import url_for

        assert url_for("browse.log", repo="meta") == "/repos/meta/log"
        assert url_for("browse.log", repo="manager/config") == "/repos/manager/config/log"
        assert url_for("browse.log", name="manager", kind="applied") == "/repos/manager/applied/log"
        assert (
            url_for("browse.tree", repo="manager/config", path="a/b.nix", rev="deployed/3")
            == "/repos/manager/config/tree/a/b.nix?rev=deployed/3"
        )
        assert url_for("browse.commit", repo="meta", rev="main") == "/repos/meta/commit/main"


# ---------------------------------------------------------------------------- log


def test_log_pages_match_git_log(client, home: Home):
    config = home.config_dir("manager")
    fast_import(config, 130)
    expected = git(config, "log", "--format=%H", "main").split()
    assert len(expected) == 131

    seen, url = [], "/repos/manager/config/log"
    for page in (1, 2, 3):  # following the pager's links, as a reader does
        r = client.get(url)
        assert r.status_code == 200
        shas = commit_links(r, "manager/config")
        seen.extend(shas)
        body = text(r)
        assert ('rel="next"' in body) == (page < 3)
        assert ('rel="prev"' in body) == (page > 1)
        if page == 2:
            assert 'href="/repos/manager/config/log"' in body  # prev of page 2 is page 1
        if page < 3:
            url = html.unescape(re.search(r'<a rel="next" href="([^"]+)"', body)[1])
            assert f"page={page + 1}" in url and f"after={expected[50 * page]}" in url
    assert seen == expected
    assert (
        commit_links(client.get("/repos/manager/config/log?page=3"), "manager/config")
        == (expected[100:])
    )  # a page number alone still works: it skips
    assert title(client.get("/repos/manager/config/log?page=2")) == (
        "manager/config: log (page 2) · hyperhive"
    )

    r = client.get("/repos/manager/config/log?page=9")
    assert r.status_code == 200 and "no commits on page 9" in text(r)
    assert client.get("/repos/manager/config/log?page=0").status_code == 400
    for bad in (
        "xyz",
        "0" * 40,
        ",".join([expected[0]] * 17),
        git(config, "rev-parse", "main^{tree}"),
    ):
        r = client.get("/repos/manager/config/log", query_string={"after": bad.strip()})
        assert r.status_code == 400, bad


def test_log_from_a_revision(client, home: Home):
    config = home.config_dir("manager")
    fast_import(config, 60)
    git(config, "tag", "-a", "deployed/7", "-m", "old one", "main~55")
    expected = git(config, "log", "--format=%H", "deployed/7").split()
    for rev in ("deployed/7", expected[0], expected[0][:10], "refs/tags/deployed/7"):
        r = client.get("/repos/manager/config/log", query_string={"rev": rev})
        assert r.status_code == 200, rev
        assert commit_links(r, "manager/config") == expected, rev
    assert title(r) == "manager/config: log @ refs/tags/deployed/7 · hyperhive"


def test_page_one_reads_about_one_page_of_commits(home: Home):
    config = home.config_dir("manager")
    fast_import(config, 2000)
    repo = Repo(str(config))
    reads = []
    store_class = repo.object_store.__class__

    class Counting(store_class):
        def get_raw(self, sha):
            reads.append(sha)
            return store_class.get_raw(self, sha)

    repo.object_store.__class__ = Counting
    page = browse.log_page(repo, browse.resolve(repo, "HEAD"), skip=0, limit=50)
    assert len(page.commits) == 50 and page.has_more
    assert len(reads) < 200  # not the 2001 commits of the whole history
    deep = browse.log_page(repo, browse.resolve(repo, "HEAD"), skip=1950, limit=50)
    expected = git(config, "log", "--format=%H", "--skip=1950").split()
    assert len(expected) == 51
    assert [c.sha for c in deep.commits] == expected[:50] and deep.has_more
    last = browse.log_page(repo, browse.resolve(repo, "HEAD"), skip=2000, limit=50)
    assert [c.sha for c in last.commits] == expected[50:] and not last.has_more
    repo.close()


def test_log_cursors_page_a_merged_history_as_git_log_does(home: Home, tmp_path: Path):
    """Branches and merges: each next page resumes from the previous page's cursor (the
    walk's frontier), reads about a page of commits, and the pages add up to `git log`."""
    work = tmp_path / "merges"
    work.mkdir()
    clock = iter(range(1_700_000_000, 1_800_000_000, 7))

    def at(*args: str) -> None:  # git with the next date and a fixed identity
        when = f"{next(clock)} +0000"
        env = {**os.environ, "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
        ident = ["-c", "user.name=t", "-c", "user.email=t@x"]
        subprocess.run(["git", *ident, *args], cwd=work, env=env, check=True, capture_output=True)

    git(work, "init", "-q", "-b", "main")
    (work / "f").write_text("root")
    at("add", "f")
    at("commit", "-qm", "root")
    for b in range(4):  # four branches interleaved in time, each merged back
        at("branch", f"b{b}")
        for i in range(5):
            at("checkout", "-q", f"b{b}" if i % 2 else "main")
            (work / f"f{b}{i % 2}").write_text(f"{b}.{i}")
            at("add", ".")
            at("commit", "-qm", f"{b}.{i}")
        at("checkout", "-q", "main")
        at("merge", "-q", "--no-ff", "-m", f"merge {b}", f"b{b}")
    expected = git(work, "log", "--format=%H", "main").split()
    repo = Repo(str(work))
    head = browse.resolve(repo, "HEAD")
    seen, after, widest = [], None, 0
    while True:
        page = browse.log_page(repo, head, limit=4, after=after)
        seen.extend(c.sha for c in page.commits)
        if not page.has_more:
            break
        assert page.cursor, "a cursor for every page of this history"
        after, widest = page.cursor, max(widest, len(page.cursor))
    assert seen == expected
    assert widest > 1  # some page ended with two lines of history open
    repo.close()


def test_empty_repo_log(seen):
    _, client = seen
    r = client.get("/repos/manager/applied/log")
    assert r.status_code == 200
    assert "has no commits yet" in text(r)
    assert title(r) == "manager/applied: log · hyperhive"


# ---------------------------------------------------------------------------- commit


def test_commit_page_shows_message_trailers_parents_and_diff(seen):
    home, client = seen
    add = git(home.config_dir("manager"), "rev-parse", "HEAD~1").strip()
    parent = git(home.config_dir("manager"), "rev-parse", "HEAD~2").strip()
    r = client.get(f"/repos/manager/config/commit/{add[:9]}")
    assert r.status_code == 200
    assert title(r) == f"manager/config: commit {add[:12]} · hyperhive"
    body = text(r)
    assert "<strong>add files</strong>" in body
    message = re.search(r'<pre class="message">(.*?)</pre>', body, re.S).group(1)
    assert message == "A body line."  # trailers are not part of the body
    trailers = re.search(r'<table class="trailers".*?</table>', body, re.S).group(0)
    assert "<th>Reviewed-by</th>" in trailers and "someone &lt;s@x&gt;" in trailers
    assert "<th>Change-Id</th>" in trailers and "I123" in trailers
    assert f'href="/repos/manager/config/commit/{parent}"' in body
    assert re.search(r"manager <span class=\"muted\">&lt;manager@hyperhive&gt;</span>", body)
    # the diff against the first parent, through diffview: every added file, script escaped
    shown = re.findall(r'<section class="file" id="file-\d+" data-path="([^"]+)"', body)
    changed = git(home.config_dir("manager"), "diff", "--name-only", parent, add).split()
    assert sorted(shown) == sorted(changed)
    assert '<div class="diff unified">' in body
    assert '<tr class="add">' in body and "<script>alert" not in body
    assert "alert(1)" in html.unescape(re.sub(r"<[^>]+>", "", body))
    split = client.get(f"/repos/manager/config/commit/{add}?view=split")
    assert '<div class="diff split">' in text(split)


def test_commit_by_tag_name_with_slashes(client, home: Home, files: str):
    config = home.config_dir("manager")
    git(config, "tag", "-a", "approved/12", "-m", "ok", "HEAD~1")
    r = client.get("/repos/manager/config/commit/approved/12")
    assert r.status_code == 200
    assert git(config, "rev-parse", "HEAD~1").strip() in text(r)


def test_root_commit_diff_against_nothing(client, home: Home):
    root = git(home.config_dir("manager"), "rev-list", "--max-parents=0", "HEAD").strip()
    r = client.get(f"/repos/manager/config/commit/{root}")
    assert r.status_code == 200
    assert "none (root commit)" in text(r) and "agent.nix" in text(r)


# ---------------------------------------------------------------------------- tree, blob, raw


def test_tree_lists_directories_first_like_git_ls_tree(seen):
    home, client = seen
    config = home.config_dir("manager")
    r = client.get("/repos/manager/config/tree")
    assert r.status_code == 200 and title(r) == "manager/config: tree / · hyperhive"
    names = re.findall(
        r'<tr class="entry-(\w+)">\s*<td class="mono"><a href="([^"]+)">([^<]+)<', text(r)
    )
    listed = [(kind, name.rstrip("/")) for kind, _, name in names]
    ls = [line.split(None, 3) for line in git(config, "ls-tree", "HEAD").splitlines()]
    expected_dirs = sorted(n for _, t, _, n in ls if t == "tree")
    expected_files = sorted(n for _, t, _, n in ls if t == "blob")
    assert listed == [("tree", d) for d in expected_dirs] + [("blob", f) for f in expected_files]
    assert (
        dict((n.rstrip("/"), href) for _, href, n in names)["lib"]
        == "/repos/manager/config/tree/lib"
    )

    r = client.get("/repos/manager/config/tree/lib")
    assert r.status_code == 200 and title(r) == "manager/config: tree /lib · hyperhive"
    assert 'href="/repos/manager/config/tree/lib/deep"' in text(r)
    assert 'href="/repos/manager/config/blob/lib/tool.py"' in text(r)
    assert client.get("/repos/manager/config/tree/lib/deep").status_code == 200

    r = client.get("/repos/manager/config/tree/lib/tool.py")  # a file: its blob view
    assert r.status_code == 302 and r.headers["Location"].endswith("/blob/lib/tool.py")


def test_tree_at_an_older_revision(seen):
    home, client = seen
    first = git(home.config_dir("manager"), "rev-list", "--max-parents=0", "HEAD").strip()
    r = client.get("/repos/manager/config/tree", query_string={"rev": first})
    assert r.status_code == 200
    assert "agent.nix" in text(r) and "page.html" not in text(r)
    r = client.get("/repos/manager/config/tree/lib", query_string={"rev": first})
    assert r.status_code == 404 and "no &#39;lib&#39;" in text(r)


def test_blob_is_highlighted_with_line_numbers(seen):
    _, client = seen
    r = client.get("/repos/manager/config/blob/lib/tool.py")
    assert r.status_code == 200 and title(r) == "manager/config: lib/tool.py · hyperhive"
    body = text(r)
    assert '<div class="hl">' in body
    assert 'href="#L-2"' in body and 'id="L-2"' in body
    assert '<span class="k">def</span>' in body
    assert 'href="/repos/manager/config/raw/lib/tool.py"' in body

    r = client.get("/repos/manager/config/blob/page.html")
    assert "<script>alert(1)</script>" not in text(r)
    assert "&lt;" in text(r) and "alert" in text(r)


def test_a_big_source_file_is_shown_plain_with_the_same_anchors(client, home: Home):
    """Past the highlighting budget (size or time) a file is plain text in the same layout:
    every line numbered and anchored, escaped, and the page says why."""
    line = '    value = compute("<b>&", flag=True)  # a line of code\n'
    text_ = "def f():\n" + line * (blobview.HIGHLIGHT_MAX // len(line) + 10)
    commit_config(home, "manager", {"big.py": text_, "small.py": "def g():\n    pass\n"}, "b")
    body = text(client.get("/repos/manager/config/blob/big.py"))
    lines = text_.count("\n")
    assert f'href="#L-{lines}"' in body and f'id="L-{lines}"' in body
    assert f'id="L-{lines + 1}"' not in body
    assert '<span class="k">def</span>' not in body  # not highlighted
    assert "compute(&quot;&lt;b&gt;&amp;" in body or 'compute("&lt;b&gt;&amp;' in body
    assert "<b>&" not in body
    assert f"over {blobview.HIGHLIGHT_MAX // 1024} KiB" in body
    small = text(client.get("/repos/manager/config/blob/small.py"))
    assert '<span class="k">def</span>' in small and "without highlighting" not in small


def test_highlighting_that_overruns_its_time_is_plain_then_finished_in_the_background(
    client, home: Home, monkeypatch
):
    monkeypatch.setattr(blobview, "HIGHLIGHT_SECONDS", -1.0)  # every lexing is over budget
    commit_config(home, "manager", {"slow.py": "def f():\n    return 1\n" * 3000}, "s")
    r = client.get("/repos/manager/config/blob/slow.py")
    body = text(r)
    r.close()  # as a WSGI server does once it sent the answer: the highlighting starts
    assert "highlighting took over" in body and 'id="L-6000"' in body
    assert '<span class="k">def</span>' not in body
    # finished in the background: the next view is highlighted
    assert blobview.FINISHER.wait(60)
    body = text(client.get("/repos/manager/config/blob/slow.py"))
    assert '<span class="k">def</span>' in body and "highlighting took over" not in body


def test_a_highlighted_blob_is_kept_by_its_id(client, files: str, monkeypatch):
    client.get("/repos/manager/config/blob/lib/tool.py")
    monkeypatch.setattr(blobview, "formatter", lambda: pytest.fail("highlighted again"))
    body = text(client.get("/repos/manager/config/blob/lib/tool.py"))
    assert '<span class="k">def</span>' in body


@pytest.mark.parametrize(
    "name, reason", [("image.bin", "Binary file"), ("big.txt", "larger than 1 MiB")]
)
def test_binary_and_big_blobs_are_not_inlined(seen, name: str, reason: str):
    _, client = seen
    r = client.get(f"/repos/manager/config/blob/{name}")
    assert r.status_code == 200
    assert reason in text(r) and '<div class="hl">' not in text(r)
    assert f'href="/repos/manager/config/raw/{name}"' in text(r)
    assert len(r.data) < 20_000


@pytest.mark.parametrize("name", ["page.html", "image.bin", "big.txt", "lib/tool.py"])
def test_raw_is_byte_identical_plain_text_that_never_runs(seen, name: str):
    home, client = seen
    r = client.get(f"/repos/manager/config/raw/{name}")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Content-Security-Policy"] == "sandbox"
    shown = subprocess.run(
        ["git", "show", f"HEAD:{name}"],
        cwd=home.config_dir("manager"),
        capture_output=True,
        check=True,
    ).stdout
    assert r.data == shown


def test_raw_at_a_revision(client, home: Home, files: str):
    config = home.config_dir("manager")
    first = git(config, "rev-list", "--max-parents=0", "HEAD").strip()
    (config / "agent.nix").write_text("changed\n")
    git(config, "-c", "user.name=m", "-c", "user.email=m@x", "commit", "-qam", "change")
    old = client.get("/repos/manager/config/raw/agent.nix", query_string={"rev": first[:7]})
    new = client.get("/repos/manager/config/raw/agent.nix")
    assert old.data == git(config, "show", f"{first}:agent.nix").encode()
    assert new.data == b"changed\n"


def test_a_symlink_shows_its_target(client, home: Home):
    config = home.config_dir("manager")
    (config / "link").symlink_to("agent.nix")
    git(config, "add", "-A")
    git(config, "-c", "user.name=m", "-c", "user.email=m@x", "commit", "-qm", "link")
    r = client.get("/repos/manager/config/blob/link")
    assert r.status_code == 200 and "symbolic link to" in text(r)
    assert client.get("/repos/manager/config/raw/link").data == b"agent.nix"


# ---------------------------------------------------------------------------- tags, deploys


def deploy_manager(home: Home) -> None:
    """Approve manager#1 and deploy it here, as the shipped hook's `hyperhive deploy`
    process would (tests/test_hooks.py runs that one)."""
    (home.applied_dir("manager") / "hooks" / "post-receive").unlink()
    Approvals(home, "manager").approve(1, "operator")
    deploy(home, "manager", 1, LocalRuntime(home))


def test_tags_are_grouped_by_state_newest_first(client, home: Home):
    deploy_manager(home)
    commit_config(home, "manager", {"a.txt": "a\n"}, "a")
    approvals = Approvals(home, "manager")
    second = approvals.propose("HEAD", "manager", reason="more")
    approvals.deny(second.id, "operator", "not now")
    applied = home.applied_dir("manager")
    git(applied, "tag", "release-1", "refs/heads/main")  # lightweight, not a state

    r = client.get("/repos/manager/applied/tags")
    assert r.status_code == 200 and title(r) == "manager/applied: tags · hyperhive"
    body = text(r)
    sections = re.findall(
        r'<section class="tag-group" id="group-(\w+)">(.*?)</section>', body, re.S
    )
    groups = {name: re.findall(r'<tr id="tag-([^"]+)">', content) for name, content in sections}
    assert groups == {
        "proposal": [f"proposal/{second.id}", "proposal/1"],
        "approved": ["approved/1"],
        "denied": [f"denied/{second.id}"],
        "building": ["building/1"],
        "deployed": ["deployed/1"],
        "other": ["release-1"],
    }
    assert [name for name, _ in sections] == [
        "proposal",
        "approved",
        "denied",
        "building",
        "deployed",
        "other",
    ]
    assert "Reason: not now" in body and "lightweight tag" in body
    deployed_target = git(applied, "rev-parse", "deployed/1^{commit}").strip()
    assert f'href="/repos/manager/applied/commit/{deployed_target}"' in body


def test_tags_page_of_a_repo_without_tags(seen):
    _, client = seen
    r = client.get("/repos/meta/tags")
    assert r.status_code == 200 and "meta has no tags" in text(r)


def test_meta_log_tells_what_is_deployed_where_since_when(client, home: Home):
    before = client.get("/repos/meta/log")
    assert "never deployed" in text(before)

    deploy_manager(home)
    rev = git(home.applied_dir("manager"), "rev-parse", "main").strip()
    meta_head = git(home.meta_dir, "rev-parse", "main").strip()
    meta_time = int(git(home.meta_dir, "log", "-1", "--format=%ct", "main"))
    r = client.get("/repos/meta/log")
    assert r.status_code == 200 and title(r) == "meta: log · hyperhive"
    body = text(r)
    table = re.search(r'<table class="deploys">(.*?)</table>', body, re.S).group(1)
    assert ">manager#1</a>" in table
    assert f'href="/repos/manager/applied/commit/{rev}"' in table
    assert f'href="/repos/meta/commit/{meta_head}"' in table
    from forge_ui.filters import utc

    assert utc(meta_time) in table
    # each log row shows the commit's Agent / Approval / Revision trailers
    log = re.search(r'<table class="log">(.*?)</table>', body, re.S).group(1)
    row = re.search(
        rf'<tr>\s*<td class="mono"><a href="/repos/meta/commit/{meta_head}".*?</tr>', log, re.S
    ).group(0)
    assert 'href="/repos/manager/applied/log">manager</a>' in row
    assert ">#1</a>" in row
    assert f'href="/repos/manager/applied/commit/{rev}">{rev[:12]}</a>' in row
    assert commit_links(r, "meta") == git(home.meta_dir, "log", "--format=%H", "main").split()


def test_since_is_the_commit_that_set_the_pin_not_a_later_one(client, home: Home, runtime):
    from hyperhive.agents import create_agent
    from hyperhive.workflow.meta import record_deploy

    deploy_manager(home)
    first_meta = git(home.meta_dir, "rev-parse", "main").strip()
    create_agent(home, "worker", runtime, "operator")
    # later deploys of another agent do not move the manager's "since"
    worker_rev = git(home.config_dir("worker"), "rev-parse", "HEAD").strip()
    for i in range(3):
        record_deploy(home, "worker", 1 + i, worker_rev)
    body = text(client.get("/repos/meta/log"))
    table = re.search(r'<table class="deploys">(.*?)</table>', body, re.S).group(1)
    manager_row = re.search(r"<tr>\s*<td[^>]*><a [^>]*>manager</a>.*?</tr>", table, re.S).group(0)
    assert f"/repos/meta/commit/{first_meta}" in manager_row
    worker_row = re.search(r"<tr>\s*<td[^>]*><a [^>]*>worker</a>.*?</tr>", table, re.S).group(0)
    assert ">worker#3</a>" in worker_row


def test_since_of_a_pin_older_than_the_search_is_the_time_recorded_with_the_pin(
    client, home: Home, runtime, monkeypatch
):
    from forge_ui.filters import utc
    from forge_ui.views import browse as view
    from hyperhive.agents import create_agent
    from hyperhive.workflow import meta

    deploy_manager(home)
    create_agent(home, "worker", runtime, "operator")
    worker_rev = git(home.config_dir("worker"), "rev-parse", "HEAD").strip()
    for i in range(3):
        meta.record_deploy(home, "worker", 1 + i, worker_rev)
    monkeypatch.setattr(view, "SINCE_SEARCH", 2)
    body = text(client.get("/repos/meta/log"))
    table = re.search(r'<table class="deploys">(.*?)</table>', body, re.S).group(1)
    manager_row = re.search(r"<tr>\s*<td[^>]*><a [^>]*>manager</a>.*?</tr>", table, re.S).group(0)
    assert utc(meta.pins(home)["manager"]["time"]) in manager_row
    assert "older" in manager_row and "#tag-deployed/1" in manager_row


# ---------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "url, message",
    [
        ("/repos/nobody/config/log", "unknown agent"),
        ("/repos/nobody/applied/tags", "unknown agent"),
        ("/repos/manager/secrets/log", "no such page"),
        ("/repos/manager/state/tree", "no such page"),
        ("/repos/manager/config/nosuchview", "no such page"),
        ("/repos/manager/config/log?rev=nosuchbranch", "unknown revision"),
        ("/repos/manager/config/log?rev=deadbeef", "unknown revision"),
        ("/repos/manager/config/commit/" + "0" * 40, "unknown revision"),
        ("/repos/manager/config/tree?rev=nosuch", "unknown revision"),
        ("/repos/manager/config/tree/nosuchdir", "no &#39;nosuchdir&#39; in /"),
        ("/repos/manager/config/blob/nosuch.nix", "no &#39;nosuch.nix&#39;"),
        ("/repos/manager/config/raw/agent.nix/deeper", "no &#39;deeper&#39; in agent.nix"),
        ("/repos/manager/applied/tree", "no commits yet"),
    ],
)
def test_unknown_things_are_404_with_a_clear_message(seen, url: str, message: str):
    _, client = seen
    r = client.get(url)
    assert r.status_code == 404, url
    assert message in text(r), text(r)


def test_a_directory_is_not_a_blob(seen):
    _, client = seen  # lib is a directory there (add_files); the root itself is never a file
    r = client.get("/repos/manager/config/raw/")
    assert r.status_code == 404


TRAVERSALS = [
    # the repo name and kind segments
    "/repos/../meta/log",
    "/repos/%2e%2e/meta/log",
    "/repos/manager%2Fconfig/log",
    "/repos/manager/..%2Fapplied/log",
    "/repos/manager/../log",
    "/repos/manager/%2e%2e/log",
    "/repos/..%2F..%2Fetc/config/log",
    # the revision in the path
    "/repos/manager/config/commit/..",
    "/repos/manager/config/commit/../../HEAD",
    "/repos/manager/config/commit/refs/../HEAD",
    "/repos/manager/config/commit/%2e%2e",
    "/repos/manager/config/commit/refs%2Fheads%2Fmain",
    "/repos/manager/config/commit/a/../../x",
    # the revision as a query argument
    "/repos/manager/config/log?rev=..",
    "/repos/manager/config/log?rev=../../HEAD",
    "/repos/manager/config/log?rev=refs/../HEAD",
    "/repos/manager/config/log?rev=/etc/passwd",
    "/repos/manager/config/log?rev=%2e%2e%2Fconfig",
    "/repos/manager/config/tree?rev=a/../../x",
    "/repos/manager/config/raw/agent.nix?rev=main%00",
    "/repos/manager/config/raw/agent.nix?rev=..%2F..%2Fconfig",
    # the path inside the tree
    "/repos/manager/config/tree/..",
    "/repos/manager/config/tree/%2e%2e",
    "/repos/manager/config/tree/a/../../x",
    "/repos/manager/config/blob/../../../etc/passwd",
    "/repos/manager/config/blob/%2e%2e/%2e%2e/etc/passwd",
    "/repos/manager/config/raw/..%2F..%2F.git%2Fconfig",
    "/repos/manager/config/raw/lib/../agent.nix",
    "/repos/manager/config/raw/./agent.nix",
    "/repos/manager/config/raw/agent.nix%00",
    "/repos/manager/config/raw/lib%2Ftool.py",
    "/repos/manager/config/raw/lib%5Ctool.py",
]


@pytest.mark.parametrize("url", TRAVERSALS)
def test_traversal_is_refused_in_every_segment(seen, url: str):
    _, client = seen
    r = client.get(url)
    assert r.status_code in (400, 404), (url, r.status_code)
    assert b"[core]" not in r.data and b"root:" not in r.data


def test_paths_only_ever_resolve_inside_git_trees(client, home: Home, files: str):
    """A file in the work tree or the .git directory is not reachable, only committed ones."""
    config = home.config_dir("manager")
    (config / "uncommitted.txt").write_text("not in git\n")
    assert client.get("/repos/manager/config/raw/uncommitted.txt").status_code == 404
    assert client.get("/repos/manager/config/raw/.git/config").status_code == 404
    assert client.get("/repos/manager/config/log?rev=ORIG_HEAD").status_code in (400, 404)


def test_bad_revisions_never_reach_the_ref_files(home: Home):
    for rev in (
        "..",
        "../config",
        "refs/../../x",
        "/etc/passwd",
        "a\0b",
        "-n",
        "main~1",
        "x" * 300,
    ):
        assert not browse.valid_rev(rev), rev
    for rev in ("HEAD", "main", "deployed/3", "refs/tags/approved/1", "abc1234", "a" * 40):
        assert browse.valid_rev(rev), rev
    with pytest.raises(browse.UnknownPath):
        browse.split_path("a//b")

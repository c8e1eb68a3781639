"""The forge in a real browser: headless Chromium (Debian's) driven by Playwright, against
`hyperhive up` as a real process, with the CLI and the git CLI acting from other processes.

One daemon and one browser serve the whole module; every test makes its own approvals
(ids come from `hyperhive propose`), so tests do not depend on each other's order and
can be spread over xdist workers. Screenshots of the dashboard and of a review page go to
$HYPERHIVE_SCREENSHOTS when set, else to a pytest tmp dir.
"""

import json

import pytest
from playwright.sync_api import Page
from support.browser import (  # noqa: F401
    PASSWORD,
    TIMEOUT_MS,
    browser,
    change_and_propose,
    daemon,
    follow,
    live,
    log_in,
    review_path,
    session_state,
    shots,
    web,
)
from support.hive import commit_config, git, run_cli

from hyperhive.broker.messages import Broker
from hyperhive.home import Home

SCRIPT = "<script>alert(1)</script>\n<img src=x onerror=alert(2)>\n"


# -- helpers -----------------------------------------------------------------------------


def mark(page: Page) -> None:
    """A value that survives only as long as the page is not reloaded or navigated."""
    page.evaluate("window.__marker = 1")


def still_marked(page: Page) -> bool:
    return page.evaluate("window.__marker") == 1


# -- tests -------------------------------------------------------------------------------


def test_login_page_refuses_a_wrong_password_then_logs_in(browser, daemon):
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto(f"{daemon.url}/review/manager/1")
        assert "/login?next=" in page.url and page.title() == "Log in · hyperhive"
        log_in(page, password="not the password")
        assert page.inner_text("[role=alert]") == "wrong account, password or token"
        assert page.input_value('input[name="account"]') == "alice"  # kept for the retry
        log_in(page, account="operator")
        page.wait_for_url(f"{daemon.url}/review/manager/1")
        assert page.inner_text("header.top .logout .muted") == "operator"
        cookie = next(c for c in context.cookies() if c["name"] == "session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    finally:
        context.close()


def test_propose_appears_live_then_review_approve_and_deploy(web, daemon, shots):
    # Two dashboards: `watch` stays open for the whole scenario, `main` clicks through.
    watch = web.open("/")
    main = web.open("/")
    for page in (watch, main):
        assert page.title() == "Dashboard · hyperhive"
        live(page)
        mark(page)

    target = change_and_propose(daemon, "approveme")
    row = f'#section-approvals [data-target="{target}"]'
    for page in (watch, main):
        page.wait_for_selector(row)
        assert still_marked(page), "the dashboard reloaded instead of updating live"
    # The row follows the daemon's check and policy diff live; a click while the section is
    # swapped can land on the replaced row and be lost, so it is followed once they settle.
    main.wait_for_selector(f"{row} .check-passed", timeout=60_000)
    main.wait_for_selector(f"{row} td.policy span:not([title=evaluating])")
    assert still_marked(main)

    follow(main, f"{row} a.review-link")
    assert main.url == daemon.url + review_path(target)
    assert main.title() == f"Review {target} · hyperhive"
    live(main)
    # Highlighted diff lines: pygments token spans inside added lines of the Python file.
    py = main.locator('.file[data-path="tools/approveme.py"]')
    assert py.locator("tr.add span.k").first.inner_text() == "def"
    assert py.locator("tr.add span.sd").count() > 0
    assert main.locator("#approve").is_enabled()
    main.wait_for_selector("#check #check-state.check-passed")
    assert "check passed" in main.locator("#check").inner_text()
    main.screenshot(path=str(shots / "review.png"), full_page=True)

    follow(main, "#approve")
    assert main.title() == f"approve {target}? · hyperhive"
    follow(main, f"#confirm:has-text('Yes, approve {target}')")
    assert main.title() == f"{target} approved · hyperhive"
    assert main.url == daemon.url + review_path(target) + "/done"  # post/redirect/get
    # The done page follows the build live: its state and the tail of its log.
    main.wait_for_selector("#state.state-deployed")
    assert "deployed in" in main.inner_text("#log")
    assert main.get_attribute("#build-link", "href") == f"/builds/{target.replace('#', '/')}"
    assert "approved by alice on " in " ".join(main.text_content("#decided").split())
    main.reload()  # a GET: the browser asks nothing, the page is the same
    assert main.title() == f"{target} approved · hyperhive"

    deployed = f'#section-recent [data-target="{target}"] .badge.state-deployed'
    watch.wait_for_selector(deployed)
    assert still_marked(watch), "the dashboard reloaded instead of updating live"
    assert watch.locator(row).count() == 0  # no longer waiting
    watch.screenshot(path=str(shots / "dashboard.png"), full_page=True)

    follow(main, "main a:has-text('Dashboard')")
    main.wait_for_selector(deployed)
    tags = git(daemon.root / "applied" / "manager.git", "tag", "--list")
    assert f"deployed/{target.partition('#')[2]}" in tags.split()


def test_the_dashboard_socket_sends_only_the_sections_that_changed(web, daemon):
    """The page connects with the versions it was rendered with: a proposal then sends
    the sections it changed (its row arrives and the page's script puts it in), and never
    one it left alone; the row's age is a <time> the page keeps current."""
    page = web.context.new_page()
    frames: list[dict] = []

    def watch(socket) -> None:
        if "/ws/dashboard" in socket.url:
            socket.on("framereceived", lambda payload: frames.append(json.loads(payload)))

    page.on("websocket", watch)
    page.goto(daemon.url + "/")
    live(page)
    mark(page)
    target = change_and_propose(daemon, "onlychanged")
    row = f'#section-approvals [data-target="{target}"]'
    page.wait_for_selector(row)
    assert still_marked(page), "the dashboard reloaded instead of updating live"
    arrived = [f for f in frames if target in f["sections"].get("approvals", "")]
    assert arrived, frames
    for frame in frames:
        assert set(frame["versions"]) == set(frame["sections"])
        # a proposal changes the approvals waiting and the agents' pending column; the
        # activity section moves with time; nothing else was sent
        assert set(frame["sections"]) <= {"approvals", "agents", "activity"}, frame.keys()
    assert page.locator(f"{row} time.age[data-ts]").inner_text().endswith("s")


def test_deny_with_a_reason_through_the_confirm_step(web, daemon):
    target = change_and_propose(daemon, "denyme")
    page = web.open(review_path(target))
    page.fill("#reason", "prompt notes contradict the manager's")
    follow(page, "#deny")
    assert page.title() == f"deny {target}? · hyperhive"
    # The reason typed on the review page is carried to the confirm step.
    assert page.input_value("textarea[name=reason]") == "prompt notes contradict the manager's"
    follow(page, f"#confirm:has-text('Yes, deny {target}')")
    assert target in page.inner_text("main h1")
    assert page.inner_text("main .badge") == "denied"
    applied = daemon.root / "applied" / "manager.git"
    tag = git(applied, "cat-file", "-p", f"denied/{target.partition('#')[2]}")
    assert "Reason: prompt notes contradict the manager's" in tag
    assert "Actor: alice" in tag

    follow(page, "a:has-text('Back to the review')")
    assert page.locator("#approve").is_disabled() and page.locator("#deny").is_disabled()
    assert page.locator('#history tr[data-state="denied"]').count() == 1


def test_review_buttons_follow_a_deny_from_another_process(web, daemon):
    target = change_and_propose(daemon, "racer")
    page = web.open(review_path(target))
    live(page)
    mark(page)
    assert page.locator("#approve").is_enabled() and page.locator("#reason").is_enabled()

    run_cli(daemon.root, "deny", target, "--reason", "x", check=True)
    page.wait_for_selector("#approve:disabled", state="attached")
    assert page.locator("#deny").is_disabled() and page.locator("#reason").is_disabled()
    # A decided approval hides its controls and says who decided, when and why.
    assert page.locator("#actions").is_hidden()
    decided = " ".join(page.text_content("#decided").split())
    assert decided.startswith("denied by operator on ") and decided.endswith(": x")
    # Reloading a confirm step (a GET) after the decision: the step, then a clear refusal.
    step = web.open(review_path(target) + "/approve")
    assert step.title() == f"approve {target}? · hyperhive"
    follow(step, "#confirm")
    assert "already denied by operator" in step.inner_text("[role=alert]")
    assert page.inner_text("#state") == "denied"
    assert page.locator('#history tr[data-state="denied"]').count() == 1
    assert still_marked(page), "the review page reloaded instead of updating live"


def test_j_and_k_move_the_current_file_marker(web, daemon):
    target = change_and_propose(
        daemon,
        "keys",
        {f"keys/{n}.md": f"# file {n}\n" + "line\n" * 60 for n in ("a", "b", "c")},
    )
    page = web.open(review_path(target))
    files = page.locator(".file")
    assert files.count() >= 3
    ids = [files.nth(i).get_attribute("id") for i in range(files.count())]

    def current() -> list[str]:
        return page.eval_on_selector_all(".file.current", "els => els.map(e => e.id)")

    assert current() == []
    page.keyboard.press("j")
    assert current() == [ids[0]]
    page.keyboard.press("j")
    assert current() == [ids[1]]
    assert page.url.endswith(f"#{ids[1]}")
    page.keyboard.press("k")
    assert current() == [ids[0]]
    # Typing in the reason box is not a shortcut.
    page.focus("#reason")
    page.keyboard.press("j")
    assert current() == [ids[0]] and page.input_value("#reason") == "j"


def test_raw_view_of_a_script_shows_it_and_runs_nothing(web, daemon):
    commit_config(
        Home(daemon.root), "manager", {"pages/evil.html": SCRIPT}, "a file that is a trap"
    )
    page = web.open("/repos/manager/config/tree")
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.evaluate("alert('control')")  # the recorder works
    assert dialogs == ["control"]

    follow(page, "a:has-text('pages/')")
    follow(page, "a:has-text('evil.html')")
    assert "alert(1)" in page.inner_text(".blob-view")  # highlighted, escaped
    with page.expect_navigation() as info:
        page.click("#raw-link")
    response = info.value
    assert page.url == f"{daemon.url}/repos/manager/config/raw/pages/evil.html"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert page.inner_text("body").strip() == SCRIPT.strip()  # shown as text
    # An image's error (and its onerror) comes before the load event, which it delays.
    page.wait_for_load_state("load")
    assert page.evaluate("document.querySelectorAll('script, img').length") == 0
    assert dialogs == ["control"]


LONG_NAME = "a" + "w" * 30  # the longest agent name there may be


@pytest.mark.parametrize("width", [390, 1280])
def test_pages_fit_the_window_with_the_longest_agent_name(browser, daemon, session_state, width):
    """A phone-sized window and a laptop-sized one: no page is wider than the window (a
    wide table scrolls inside its panel or wraps), whatever the agent names."""
    if not (daemon.root / "applied" / f"{LONG_NAME}.git").exists():
        run_cli(daemon.root, "agent", "create", LONG_NAME, check=True)
    context = browser.new_context(
        storage_state=session_state, viewport={"width": width, "height": 800}
    )
    context.set_default_timeout(TIMEOUT_MS)
    try:
        agent = f"/agents/{LONG_NAME}"
        split = f"/review/{LONG_NAME}/1?view=split"
        view = "unified" if width < 800 else "split"  # below 800 px split falls back
        paths = ["/", agent, split, "/repos/meta/log", "/repos", "/nope"]
        # The pages load side by side, each in its own tab (their quiet half-seconds of
        # "networkidle" overlap), and each is measured once settled: loaded, its scripts
        # run (a narrow split view has replaced itself), nothing more on the wire.
        pages = {path: context.new_page() for path in paths}
        for path, page in pages.items():
            page.goto(daemon.url + path, wait_until="commit")
        for path, page in pages.items():
            if path == split:
                page.wait_for_url(f"**?view={view}")
            page.wait_for_load_state("load")
            page.wait_for_load_state("networkidle")
            wide = page.evaluate("document.documentElement.scrollWidth")
            assert wide <= width, f"{path} is {wide}px wide in a {width}px window"
            if path == split:
                assert page.url.endswith(f"view={view}")
                assert page.locator(f".diff.{view}").count() == 1
        # A table wider than the window scrolls in its own box, which says so.
        page = pages[agent]
        hints = page.eval_on_selector_all(
            ".table-scroll.overflowing",
            "els => els.map(e => getComputedStyle(e, '::before').content)",
        )
        if width < 800:
            assert hints and all("scroll sideways" in h for h in hints)
        else:
            assert hints == []
    finally:
        context.close()


def test_agent_page_follows_the_harness_log_and_requeues_a_dead_letter(web, daemon):
    """The harness log grows on the page as the harness writes it; a dead letter's
    Requeue button (a form with the CSRF token) hands it back to the inbox."""
    home = Home(daemon.root)
    run_cli(daemon.root, "agent", "create", "deadend", check=True)  # never deployed: no harness
    sent = run_cli(daemon.root, "send", "operator", "deadend", "<i>lost?</i>", check=True)
    message_id = int(sent.stdout.split("#")[1])
    Broker(home).give_up("deadend", [message_id], "given up after 3 failed turns: no claude")
    log = home.log_dir("deadend") / "harness.log"
    log.write_text("".join(f"old line {i}\n" for i in range(3)))

    page = web.open("/agents/deadend")
    page.wait_for_selector("#harness-live.on")
    assert page.inner_text("#harness-log").splitlines() == [f"old line {i}" for i in range(3)]
    with log.open("a") as out:
        out.write("turn failed (exit 127): cannot run claude\n")
    page.wait_for_function(
        "() => document.getElementById('harness-log').textContent.includes('cannot run claude')"
    )
    row = f"tr[data-dead='{message_id}']"
    assert "<i>lost?</i>" in page.inner_text(row) and "no claude" in page.inner_text(row)
    follow(page, f"{row} button:has-text('Requeue')")
    assert page.url.endswith("/agents/deadend")
    assert page.locator(row).count() == 0
    inbox = json.loads(run_cli(daemon.root, "inbox", "deadend", "--json", check=True).stdout)
    assert [m["id"] for m in inbox] == [message_id]


# -- the change in full context (issue 17) -----------------------------------------------


def commit_removing(daemon, remove: list[str], files: dict[str, str], message: str) -> str:
    """Commit to the manager's config repo with the git CLI, removing `remove`; its sha."""
    config = Home(daemon.root).config_dir("manager")
    for rel in remove:
        git(config, "rm", "-q", rel)
    return commit_config(Home(daemon.root), "manager", files, message)


def test_expand_context_and_a_rename_in_both_views(web, daemon, shots):
    lines = [f"row {n} of the long file\n" for n in range(1, 121)]
    commit_config(
        Home(daemon.root),
        "manager",
        {"ctx/long.txt": "".join(lines), "ctx/old.txt": "".join(lines[:40])},
        "ctx base",
    )
    edited = lines[:30] + ["row 31 CHANGED\n"] + lines[31:90] + ["row 91 CHANGED\n"] + lines[91:]
    moved = lines[:39] + ["the last row, renamed\n"]
    sha = commit_removing(
        daemon,
        ["ctx/old.txt"],
        {"ctx/long.txt": "".join(edited), "ctx/new.txt": "".join(moved)},
        "ctx edit",
    )
    for view in ("unified", "split"):
        page = web.open(f"/repos/manager/config/commit/{sha}?view={view}")
        renamed = page.locator('.file[data-path="ctx/new.txt"] .file-header')
        assert "renamed 9" in renamed.locator(".fstat").inner_text()  # R97%-ish, as git says
        assert "ctx/old.txt → ctx/new.txt" in renamed.inner_text()
        assert page.locator('.file[data-path="ctx/old.txt"]').count() == 0
        long = page.locator('.file[data-path="ctx/long.txt"]')
        shown = long.locator("tr.ctx").count()
        # between the hunks: rows 35..87 unchanged (three of context on each side)
        between = long.locator("tr.expand").nth(1)
        assert between.get_attribute("data-start") == "35"
        between.locator(".expand-all").click()
        page.wait_for_function(
            "n => document.querySelectorAll('.file[data-path=\"ctx/long.txt\"] tr.ctx').length > n",
            arg=shown,
        )
        added = long.locator("tr.ctx.expanded")
        assert added.count() == 87 - 35 + 1
        assert added.first.locator("td.code").count() == (2 if view == "split" else 1)
        assert added.first.locator("td.code").first.inner_text() == "row 35 of the long file"
        assert long.locator("tr.expand").count() == 2  # above the first hunk, below the last
        # ↑ 20 above the first hunk: rows 8..27
        top = long.locator("tr.expand").first
        top.locator(".expand-up").click()
        page.wait_for_function(
            "() => document.querySelector('.file[data-path=\"ctx/long.txt\"] tr.expand')"
            ".dataset.end === '7'"
        )
        assert top.get_attribute("data-start") == "1"
        page.screenshot(path=str(shots / f"expanded-{view}.png"), full_page=True)


def test_file_tree_viewed_marks_and_keys(web, daemon, shots):
    target = change_and_propose(
        daemon, "treekeys", {f"tree/t-{n}.md": f"# {n}\n" + "text\n" * 40 for n in ("a", "b", "c")}
    )
    page = web.open(review_path(target))
    tree = page.locator(".file-tree")
    for n in ("a", "b", "c"):
        item = tree.locator(f"li.tree-file:has-text('t-{n}.md')")
        assert "+41" in item.inner_text()
    section = page.locator('.file[data-path="tree/t-b.md"]')
    with page.expect_response(lambda r: r.url.endswith("/viewed")) as saved:
        section.locator(".viewed-box").check()
    assert saved.value.ok  # the mark is kept on the server
    page.wait_for_selector('.file-tree li.viewed:has-text("t-b.md")')
    assert not section.locator(".file-body").is_visible()
    again = web.open(review_path(target))
    assert again.locator('.file[data-path="tree/t-b.md"]').get_attribute("class") == "file viewed"
    assert again.locator('.file[data-path="tree/t-b.md"] .viewed-box').is_checked()
    assert "1 of" in again.locator(".tree-viewed").inner_text()
    # n/p: next/previous hunk of the files shown (b.md is folded: skipped)
    again.keyboard.press("n")
    first = again.eval_on_selector("tr.current-hunk", "e => e.closest('.file').dataset.path")
    again.keyboard.press("n")
    second = again.eval_on_selector("tr.current-hunk", "e => e.closest('.file').dataset.path")
    assert first != second and "tree/t-b.md" not in (first, second)
    again.keyboard.press("p")
    assert (
        again.eval_on_selector("tr.current-hunk", "e => e.closest('.file').dataset.path") == first
    )
    # ? shows the key help, Escape hides it
    again.keyboard.press("?")
    assert again.locator("#key-help").is_visible()
    again.screenshot(path=str(shots / "review-tree.png"))
    again.keyboard.press("Escape")
    assert not again.locator("#key-help").is_visible()
    # Ctrl+Enter in the reason box submits it: the deny confirm step
    again.fill("#reason", "not this one")
    with again.expect_navigation():
        again.press("#reason", "Control+Enter")
    assert again.title() == f"deny {target}? · hyperhive"


def test_a_widening_proposal_is_flagged_on_its_review_page_and_the_dashboard(web, daemon):
    """The review page shows "evaluating…", then its script puts in the flag and the
    policy table once the background evaluation is done; the dashboard's row says widens."""
    agent_nix = '{ ... }: { hyperhive.allowSubagents = true; hyperhive.allowedBash = [ "ls" ]; }\n'
    target = change_and_propose(daemon, "widen", {"agent.nix": agent_nix})
    page = web.open(review_path(target))
    flag = page.wait_for_selector("#policy-flag")
    assert "This change widens what manager may do" in flag.inner_text()
    assert "allowSubagents off → on" in flag.inner_text()
    row = page.locator('#policy-diff-slot tr[data-field="allowSubagents"]')
    assert row.get_attribute("data-effect") == "widens" and "off → on" in row.inner_text()
    assert page.locator('tr[data-field="allowedBash"]').get_attribute("data-effect") == "narrows"
    dash = web.open("/")
    cell = f'#section-approvals [data-target="{target}"] td.policy .badge.effect-widens'
    assert dash.wait_for_selector(cell).inner_text() == "widens"
    run_cli(daemon.root, "deny", target, "--reason", "test over", check=True)

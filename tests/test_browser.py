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
    daemon,
    follow,
    log_in,
    session_state,
    shots,
    web,
)
from support.hive import commit_config, git, run_cli

from hyperhive.broker.messages import Broker
from hyperhive.home import Home

SCRIPT = "<script>alert(1)</script>\n<img src=x onerror=alert(2)>\n"


# -- helpers -----------------------------------------------------------------------------


def change_and_propose(daemon, tag: str, files: dict[str, str] | None = None) -> str:
    """Commit with the git CLI in the manager's config repo, `hyperhive propose` it as a
    subprocess; returns the new target, e.g. `manager#4`."""
    files = files or {
        f"tools/{tag}.py": f'def {tag}(x):\n    """Check {tag}."""\n    return x + 1\n',
        f"notes/{tag}.md": f"# {tag}\n\nA note about {tag}.\n",
    }
    commit_config(Home(daemon.root), "manager", files, f"{tag}: a change to review")
    proc = run_cli(daemon.root, "propose", "manager", "--reason", f"test {tag}", check=True)
    return proc.stdout.strip()


def review_path(target: str) -> str:
    name, _, approval_id = target.partition("#")
    return f"/review/{name}/{approval_id}"


def mark(page: Page) -> None:
    """A value that survives only as long as the page is not reloaded or navigated."""
    page.evaluate("window.__marker = 1")


def still_marked(page: Page) -> bool:
    return page.evaluate("window.__marker") == 1


def live(page: Page) -> None:
    """Wait until the page's websocket is open (forge.js lights the live dot)."""
    page.wait_for_selector("#live.on")


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

    follow(main, f"{row} a.review-link")
    assert main.url == daemon.url + review_path(target)
    assert main.title() == f"Review {target} · hyperhive"
    live(main)
    # Highlighted diff lines: pygments token spans inside added lines of the Python file.
    py = main.locator('.file[data-path="tools/approveme.py"]')
    assert py.locator("tr.add span.k").first.inner_text() == "def"
    assert py.locator("tr.add span.sd").count() > 0
    assert main.locator("#approve").is_enabled()
    # the daemon checks the proposal: the panel follows it live to its result
    main.wait_for_selector("#check #check-state.check-passed", timeout=60_000)
    assert "check passed" in main.locator("#check").inner_text()
    main.screenshot(path=str(shots / "review.png"), full_page=True)

    follow(main, "#approve")
    assert main.title() == f"approve {target}? · hyperhive"
    follow(main, f"#confirm:has-text('Yes, approve {target}')")
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
    page.wait_for_selector("#approve:disabled")
    assert page.locator("#deny").is_disabled() and page.locator("#reason").is_disabled()
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
    page.wait_for_timeout(300)  # an onerror handler would fire after the failed load
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
        page = context.new_page()
        for path in ["/", f"/agents/{LONG_NAME}", f"/review/{LONG_NAME}/1", "/repos/meta/log"]:
            page.goto(daemon.url + path)
            page.wait_for_load_state("networkidle")
            wide = page.evaluate("document.documentElement.scrollWidth")
            assert wide <= width, f"{path} is {wide}px wide in a {width}px window"
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

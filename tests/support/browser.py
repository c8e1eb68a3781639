"""The forge in a real browser: headless Chromium (Debian's) driven by Playwright against
a real daemon. The fixtures (`daemon`, `browser`, `session_state`, `web`, `shots`) are
imported by the browser test modules (a daemon per module, or one shared by the modules
that say so; one Chromium per process, support/browser_worker.py; a browser context per
test), and so are the actions they share (propose a change, a review's path, wait for
the live socket)."""

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(
        f"{CHROMIUM} is missing: the browser tests need Debian's chromium (.ci/run installs it)",
        allow_module_level=True,
    )

from playwright.sync_api import Page  # noqa: E402

from hyperhive import operator  # noqa: E402
from hyperhive.home import Home  # noqa: E402

from .daemon import Daemon  # noqa: E402
from .hive import PASSWORD, commit_config, run_cli  # noqa: E402

TIMEOUT_MS = 30_000
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


# -- fixtures ----------------------------------------------------------------------------


def start_forge(root: Path) -> Daemon:
    """`hyperhive up` on a new hive at `root`, with the operator's password and alice."""
    d = Daemon(root).start()
    try:
        # in-process, not two CLI runs per forge (test_operator_auth.py runs those)
        operator.set_password(Home(d.root), PASSWORD)
        operator.add(Home(d.root), "alice", PASSWORD)
    except BaseException:
        d.kill()
        raise
    d.url = f"http://127.0.0.1:{d.port}"
    return d


@pytest.fixture(scope="module")
def daemon(request, tmp_path_factory):
    """The module's forge: a hive of its own, or, in a module that says
    `SHARE_FORGE = True`, the one this process's sharing modules use
    (support/browser_worker.py): only for tests that neither deploy nor answer the
    manager, nor count anything another sharing module adds."""
    if getattr(request.module, "SHARE_FORGE", False):
        yield request.getfixturevalue("shared_forge")
        return
    d = start_forge(tmp_path_factory.mktemp("browser") / "hive")
    try:
        yield d
    finally:
        d.kill()


@pytest.fixture(scope="module")
def browser(chromium):
    """This process's Chromium (support/browser_worker.py), driven by this module."""
    with chromium.in_use() as b:
        yield b


def log_in(page: Page, password: str = PASSWORD, account: str = "alice") -> None:
    page.fill('input[name="account"]', account)
    page.fill('input[name="password"]', password)
    follow(page, "button:has-text('Log in')")


def logged_in_state(browser, daemon) -> dict:
    """Log in once through the login page: the storage state later contexts start with."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{daemon.url}/")
        assert "/login" in page.url
        log_in(page)
        page.wait_for_url(f"{daemon.url}/")
        return context.storage_state()
    finally:
        context.close()


@pytest.fixture(scope="module")
def session_state(request, browser, daemon):
    if getattr(request.module, "SHARE_FORGE", False):
        return request.getfixturevalue("shared_session_state")
    return logged_in_state(browser, daemon)


class Browsing:
    """A logged-in browser context; records uncaught JS errors of every page it opens,
    and whatever the page's Content-Security-Policy refused (a script, a style, a
    connection the forge's own pages need)."""

    def __init__(self, context, daemon):
        self.context = context
        self.daemon = daemon
        self.js_errors: list[str] = []
        context.set_default_timeout(TIMEOUT_MS)
        context.on("page", self._watch)

    def _watch(self, page: Page) -> None:
        page.on("pageerror", lambda e: self.js_errors.append(f"{page.url}: {e}"))
        page.on("console", lambda m: self._console(page, m))

    def _console(self, page: Page, message) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.js_errors.append(f"{page.url}: {message.text}")

    def open(self, path: str) -> Page:
        page = self.context.new_page()
        page.goto(self.daemon.url + path)
        return page


@pytest.fixture
def web(browser, daemon, session_state):
    context = browser.new_context(
        storage_state=session_state, viewport={"width": 1400, "height": 900}
    )
    b = Browsing(context, daemon)
    try:
        yield b
    finally:
        context.close()
    assert b.js_errors == []


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    where = os.environ.get("HYPERHIVE_SCREENSHOTS")
    path = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def follow(page: Page, selector: str) -> None:
    """Click something that loads a new page (a link, a form's button) and wait for it."""
    with page.expect_navigation():
        page.click(selector)


# -- actions the browser tests share ------------------------------------------------------


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


def live(page: Page) -> None:
    """Wait until the page's websocket is open (forge.js lights the live dot)."""
    page.wait_for_selector("#live.on")

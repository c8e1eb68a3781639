"""What the browser tests of one pytest process (an xdist worker) share, as a plugin
(conftest.py loads it): one Playwright driver with one headless Chromium, and one forge
for the modules whose tests leave each other's state alone (`SHARE_FORGE = True`).

A fixture imported into several test modules is a fixture of each (pytest registers it
per module, and a session-scoped one then starts once per module): these are defined
here, once. Each test still gets a fresh browser context (support/browser.py's `web`),
so cookies and storage are the test's own.

Playwright's sync API marks its event loop as the thread's running loop between its
calls, and `asyncio.run()` refuses to start in a thread with a running loop: the driver
lives for the whole session, so the mark is set only while a browser module runs
(`Chromium.in_use`), and other tests in this process still run their own loops."""

import asyncio
import contextlib
from collections.abc import Iterator

import pytest

from .cputime import apart


class Chromium:
    """The process's Playwright driver and headless Chromium, started on first use."""

    def __init__(self) -> None:
        # here, not at the top: support.browser skips the test when Debian's chromium is
        # missing, and a run without browser tests does not import Playwright
        from playwright.sync_api import sync_playwright

        from .browser import CHROMIUM, LAUNCH_ARGS

        self._manager = sync_playwright()
        self._playwright = self._manager.start()
        self._loop = asyncio.get_running_loop()  # Playwright's, marked by its last call
        try:
            self.browser = self._playwright.chromium.launch(
                executable_path=CHROMIUM, args=LAUNCH_ARGS
            )
        except BaseException:
            self._manager.__exit__()
            raise

    @contextlib.contextmanager
    def in_use(self) -> Iterator:
        """Mark Playwright's loop as running while the browser is driven (a sync call
        resumes the loop where it waited, expecting the mark), then put the mark back as
        it was: nested uses leave it set, the outermost clears it."""
        before = asyncio._get_running_loop()
        asyncio._set_running_loop(self._loop)
        try:
            yield self.browser
        finally:
            asyncio._set_running_loop(before)

    def close(self) -> None:
        with self.in_use():
            try:
                self.browser.close()
            finally:
                self._manager.__exit__()  # ends the driver; the loop clears its mark


@pytest.fixture(scope="session")
def chromium(pytestconfig) -> Iterator[Chromium]:
    c = Chromium()
    asyncio._set_running_loop(None)  # until a module uses it (support/browser.py's `browser`)
    try:
        yield c
    finally:
        # what Chromium took over the session, reaped here, is no one test's (--cpu-top)
        with apart(pytestconfig, "Chromium and its Playwright driver"):
            c.close()


@pytest.fixture(scope="session")
def shared_forge(tmp_path_factory, pytestconfig):
    """One `hyperhive up` with the operator and alice, for every module that shares it."""
    from .browser import start_forge

    d = start_forge(tmp_path_factory.mktemp("shared-forge") / "hive")
    try:
        yield d
    finally:
        with apart(pytestconfig, "the shared forge (SHARE_FORGE)"):
            d.kill()


@pytest.fixture(scope="session")
def shared_session_state(chromium: Chromium, shared_forge) -> dict:
    from .browser import logged_in_state

    with chromium.in_use() as browser:
        return logged_in_state(browser, shared_forge)

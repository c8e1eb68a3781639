"""The Chromium a pytest process's browser tests share (support/browser_worker.py) lives
for the whole process, beside tests that run event loops of their own: Playwright's loop
is the thread's running loop only while the browser is driven."""

import asyncio

import pytest


async def answer() -> int:
    await asyncio.sleep(0)
    return 42


def test_other_tests_run_their_own_event_loops_beside_the_shared_browser(chromium):
    assert asyncio.run(answer()) == 42  # Playwright's driver runs, its loop is not marked
    with chromium.in_use() as browser:
        page = browser.new_page()
        try:
            refused = answer()
            with pytest.raises(RuntimeError, match="running event loop"):
                asyncio.run(refused)  # what a browser module's test must not do
            refused.close()
            with chromium.in_use():  # a session fixture used inside a browser module
                page.set_content("<p>inner</p>")
            page.set_content("<p>outer</p>")  # the inner use left the mark as it was
            assert page.inner_text("p") == "outer"
        finally:
            page.close()
    assert asyncio.run(answer()) == 42

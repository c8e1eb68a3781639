"""Review comments and follow-ups in a real browser (headless Chromium, Playwright) against
`hyperhive up` as a real process (support.browser's fixtures, on the forge the sharing
modules use, where no manager is deployed, so no harness takes the manager's messages,
and none of them sends it one): write on a line in both views, on a file and on the
change, reply, send; the manager reads them with its MCP `recv` (a `hyperhive mcp`
subprocess), answers with `review_reply` and proposes a follow-up
(`request_apply_commit` with `follows`); then the follow-up's page and its interdiff."""

import json
from concurrent.futures import ThreadPoolExecutor

from support.browser import (  # noqa: F401
    browser,
    change_and_propose,
    daemon,
    follow,
    live,
    review_path,
    session_state,
    shots,
    web,
)
from support.hive import commit_config
from support.mcp import over_stdio, text

from hyperhive.home import Home

SHARE_FORGE = True  # its approvals are its own ("cmt"); its messages are the manager's only


def write(page, selector: str, words: str) -> None:
    """Type into the comment form under `selector` and save it (a new page loads)."""
    page.fill(f"{selector} textarea[name=text]", words)
    follow(page, f"{selector} button:not(.cancel)")


def test_comment_reply_send_the_manager_answers_over_mcp_and_follows_up(web, daemon, shots):  # noqa: F811
    target = change_and_propose(daemon, "cmt")
    path = review_path(target)
    page = web.open(path)
    tool = page.locator('.file[data-path="tools/cmt.py"]')
    # unified: a click on line 3's new number opens a form under that row
    tool.locator("tr.add td.num:nth-child(2)", has_text="3").click()
    write(page, "tr.form-row", "Why +1 and not +2?")
    assert page.url.endswith(f"{path}#comment-1")
    inline = tool.locator("tr.comment-row #thread-1")
    assert "Why +1 and not +2?" in inline.inner_text()
    row_above = page.evaluate(
        "document.getElementById('thread-1').closest('tr').previousElementSibling"
        ".children[1].textContent"
    )
    assert row_above == "3"

    # side by side: the thread stays at its line; a click on a right-hand number comments
    page.goto(f"{web.daemon.url}{path}?view=split")
    assert tool.locator("table.split tr.comment-row #thread-1").count() == 1
    notes = page.locator('.file[data-path="notes/cmt.md"]')
    notes.locator("td.num:nth-child(3)", has_text="3").click()
    write(page, "tr.form-row", "Say more in the note.")
    assert page.url.endswith(f"{path}?view=split#comment-2")
    assert notes.locator("table.split tr.comment-row #thread-2").count() == 1

    # a whole file, the whole change, and a reply
    notes.locator("button.file-comment").click()
    write(page, ".file-comments.form-row", "Is this file needed at all?")
    write(page, "#change-comment", "Otherwise fine.")
    page.click("#thread-1 details.reply summary")
    write(page, "#thread-1 details.reply", "Or +3, even.")
    assert page.locator("#thread-1 .comment").count() == 2
    assert notes.locator(".file-comments #thread-3").count() == 1
    assert page.locator("#threads > #thread-4").count() == 1  # the change's: in the list
    assert page.inner_text("#unsent-count") == "5 not sent to the manager yet"

    follow(page, "#send-comments")
    assert page.locator(".badge.unsent").count() == 0
    assert page.locator(".badge.sent").count() == 5

    # The manager: reads them, answers comment 1, and proposes a change that follows up
    sock = Home(daemon.root).agent_socket("manager")
    files = {"tools/cmt.py": 'def cmt(x):\n    """Check cmt."""\n    return x + 2\n'}
    fix = commit_config(Home(daemon.root), "manager", files, "cmt: +2 as asked")

    async def manager(session):
        got = json.loads(text(await session.call_tool("recv", {})))
        answer = {"approval": target, "comment": 1, "text": "+1 is what the spec says."}
        replied = json.loads(text(await session.call_tool("review_reply", answer)))
        again = {"name": "manager", "commit": fix, "follows": target}
        proposed = json.loads(text(await session.call_tool("request_apply_commit", again)))
        return got, replied, proposed["approval"]

    live(page)  # the page follows the conversation
    with ThreadPoolExecutor(1) as pool:  # Playwright's loop holds this thread
        got, replied, later = pool.submit(over_stdio, sock, manager).result()
    (m,) = got["messages"]
    body = m["body"]
    assert m["from"] == "operator" and body.startswith(f"review_comments: {target}\n")
    assert "--- comment 1 by alice: tools/cmt.py line 3 (new)" in body
    assert ">     return x + 1\nWhy +1 and not +2?\n" in body
    assert f"link: {web.daemon.url}{path}#comment-1" in body
    assert "--- comment 3 by alice: notes/cmt.md (the file)" in body
    assert "--- comment 4 by alice: the whole change\nOtherwise fine." in body
    assert "--- comment 5 by alice: tools/cmt.py line 3 (new)" in body
    assert replied == {"approval": target, "comment": 6}

    page.wait_for_selector("#comments-changed:not([hidden])")  # told live, not reloaded
    follow(page, "#comments-reload")
    answer = page.locator("#thread-1 .comment.from-manager")
    assert "+1 is what the spec says." in answer.inner_text()
    assert page.inner_text("#followed-by").startswith(f"followed up by {later}")
    page.screenshot(path=str(shots / "review-comments.png"), full_page=True)

    # The follow-up: what it follows, then the interdiff (like Gerrit's patch sets)
    follow(page, f"#followed-by a[href='{review_path(later)}']")
    assert page.inner_text("#followup").startswith(f"follows {target}")
    assert page.locator('.file[data-path="notes/cmt.md"]').count() == 1  # against deployed
    follow(page, "#diff-interdiff")
    assert page.locator("#interdiff-note").is_visible()
    assert page.locator(".diff .file").count() == 1  # only what changed since
    tool = page.locator('.file[data-path="tools/cmt.py"]')
    assert tool.locator("tr.del").inner_text().strip().endswith("return x + 1")
    assert tool.locator("tr.add").inner_text().strip().endswith("return x + 2")
    assert page.inner_text("#followed-comments") == "6 comments"  # the conversation answered

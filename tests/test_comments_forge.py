"""Review comments and follow-ups in the forge, through Flask's test client: the forms
(session + CSRF), the JSON API (bearer), Send, a denial carrying them, the repo browser,
the interdiff of a follow-up."""

import re
import time

import pytest
from support.hive import commit_config, csrf, git, log_in

from forge_ui import create_app
from hyperhive import operator, tokens
from hyperhive.broker.messages import Broker
from hyperhive.hive import Hive
from hyperhive.workflow import comments
from hyperhive.workflow.approvals import Approvals

CODE = "{ ... }:\n{\n  a = 1;\n  b = 2;\n}\n"


@pytest.fixture
def client(home, runtime):
    (home.applied_dir("manager") / "hooks" / "post-receive").unlink()  # no deploys
    commit_config(home, "manager", {"agent.nix": CODE, "notes.md": "n\n"}, "a and b")
    Approvals(home, "manager").propose("HEAD", "manager")  # manager#2
    c = create_app(Hive(home, runtime)).test_client()
    return log_in(c, home, "alice")


def post(client, path, data, page="/review/manager/2"):
    return client.post(path, data={"csrf_token": csrf(client, page), **data})


def test_a_line_comment_from_the_form_lands_in_git_and_on_the_page(client, home):
    a = Approvals(home, "manager").get(2)
    r = post(
        client,
        "/review/manager/2/comments",
        {
            "text": "why b?",
            "path": "agent.nix",
            "side": "new",
            "line": "4",
            "commit": a.commit,
            "view": "split",
        },
    )
    assert r.status_code == 302
    assert r.headers["Location"] == "/review/manager/2?view=split#comment-1"
    page = client.get("/review/manager/2?view=split").get_data(as_text=True)
    thread = re.search(r'<div class="thread panel" id="thread-1"[^>]*>', page).group(0)
    assert 'data-path="agent.nix"' in thread and 'data-line="4"' in thread
    assert f'data-commit="{a.commit}"' in thread
    assert "b = 2;" in page and "why b?" in page and "Send 1 comment to the manager" in page
    log = git(home.applied_dir("manager"), "log", "--format=%an %s", "refs/hyperhive/review/2")
    assert log.strip() == "alice comment 1 on manager#2: agent.nix line 4 (new)"
    # the repo browser lists it: the review ref's log
    browsed = client.get("/repos/manager/applied/log?rev=refs/hyperhive/review/2")
    assert browsed.status_code == 200 and "comment 1 on manager#2" in browsed.get_data(as_text=True)


def test_writing_needs_the_csrf_token_or_an_operator_token(client, home, app_anon):
    r = client.post("/review/manager/2/comments", data={"text": "no token"})
    assert r.status_code == 403
    r = app_anon.post(
        "/api/approvals/manager/2/comments",
        json={"text": "over the API"},
        headers={"Authorization": f"Bearer {operator.token(home)}"},
    )
    assert r.status_code == 201 and r.get_json()["actor"] == "operator"
    # the manager's token reaches the git remote, never the forge: it replies over MCP
    manager = tokens.issue(home, "manager", "operator")
    r = app_anon.post(
        "/api/approvals/manager/2/comments",
        json={"text": "manager here"},
        headers={"Authorization": f"Bearer {manager}"},
    )
    assert r.status_code == 401
    r = client.post(
        "/api/approvals/manager/2/comments",
        json={"text": "x" * 4001},
        headers={"X-CSRFToken": csrf(client)},
    )
    assert r.status_code == 400 and "at most 4000 characters" in r.get_json()["error"]
    r = client.post(
        "/api/approvals/manager/2/comments",
        json={"text": "which file?", "line": 3},
        headers={"X-CSRFToken": csrf(client)},
    )
    assert r.status_code == 400 and "needs the file's path" in r.get_json()["error"]
    listed = app_anon.get(
        "/api/approvals/manager/2/comments",
        headers={"Authorization": f"Bearer {operator.token(home)}"},
    ).get_json()
    assert [c["text"] for c in listed["comments"]] == ["over the API"]


@pytest.fixture
def app_anon(client, home, runtime):
    return create_app(Hive(home, runtime)).test_client()


def test_send_delivers_them_and_the_page_says_sent(client, home):
    post(client, "/review/manager/2/comments", {"text": "whole change <script>alert(1)</script>"})
    r = post(client, "/review/manager/2/comments/send", {})
    assert r.status_code == 302 and r.headers["Location"].endswith("#comments")
    (m,) = Broker(home).recv("manager")
    assert m["body"].startswith("review_comments: manager#2\n")
    assert "review: http://localhost/review/manager/2\n" in m["body"]
    page = client.get("/review/manager/2").get_data(as_text=True)
    assert '<span class="badge sent">sent</span>' in page and "send-comments" not in page
    assert "whole change &lt;script&gt;alert(1)&lt;/script&gt;" in page  # text, never markup
    assert "<script>alert(1)" not in page


def test_a_denial_carries_the_unsent_comments_unless_kept(client, home):
    post(client, "/review/manager/2/comments", {"text": "not like this"})
    confirm = post(client, "/review/manager/2/deny", {"reason": "redo it"})
    assert "keep my 1 unsent comment back" in confirm.get_data(as_text=True)
    done = post(client, "/review/manager/2/deny", {"reason": "redo it", "confirm": "yes"})
    assert done.status_code == 303  # post/redirect/get: the done page
    (m,) = Broker(home).recv("manager")
    assert "denied by alice: redo it" in m["body"] and "not like this" in m["body"]
    assert comments.read(home, "manager", 2).deliveries[-1].denied

    commit_config(home, "manager", {"notes.md": "m\n"}, "again")
    Approvals(home, "manager").propose("HEAD", "manager")  # manager#3
    post(client, "/review/manager/3/comments", {"text": "keep this one"}, "/review/manager/3")
    form = {"reason": "no", "confirm": "yes", "keep_comments": "yes"}
    post(client, "/review/manager/3/deny", form, "/review/manager/3")
    assert Broker(home).recv("manager") == []
    assert [c.number for c in comments.read(home, "manager", 3).unsent()] == [1]


def test_a_follow_up_shows_what_it_follows_and_the_interdiff(client, home):
    post(client, "/review/manager/2/comments", {"text": "b should be 3"})
    commit_config(home, "manager", {"agent.nix": CODE.replace("b = 2", "b = 3")}, "b is 3")
    Approvals(home, "manager").propose("HEAD", "manager", follows=2)  # manager#3

    page = client.get("/review/manager/3").get_data(as_text=True)
    assert re.search(r'follows <a href="/review/manager/2" class="mono">manager#2</a>', page)
    assert 'data-path="notes.md"' in page  # against deployed: every file of the change
    inter = client.get("/review/manager/3?diff=interdiff").get_data(as_text=True)
    assert 'id="interdiff-note"' in inter and 'data-path="notes.md"' not in inter
    assert 'data-path="agent.nix"' in inter and "1 file changed" in inter
    old = Approvals(home, "manager").get(2).commit
    assert f'data-old="{old}"' in inter  # comments now point into the followed commit
    r = post(
        client,
        "/review/manager/3/comments",
        {
            "text": "old b",
            "path": "agent.nix",
            "side": "old",
            "line": "4",
            "commit": old,
            "diff": "interdiff",
        },
        "/review/manager/3",
    )
    assert r.headers["Location"] == "/review/manager/3?diff=interdiff#comment-1"
    assert comments.read(home, "manager", 3).comments[0].anchor.quote == "  b = 2;"
    earlier = client.get("/review/manager/2").get_data(as_text=True)
    assert re.search(
        r'followed up by <a class="mono" href="/review/manager/3">manager#3</a>', earlier
    )


def test_comments_outlive_the_pruning_of_the_approvals_tags(client, home):
    from hyperhive.workflow import retention

    post(client, "/review/manager/2/comments", {"text": "kept for the audit"})
    post(client, "/review/manager/2/deny", {"reason": "no", "confirm": "yes"})
    report = retention.prune(home, 1, now=time.time() + 3 * 86400)
    assert {t.tag for t in report.removed} == {"proposal/2", "denied/2"}

    page = client.get("/review/manager/2").get_data(as_text=True)
    assert 'id="pruned"' in page and "kept for the audit" in page
    assert "change-comment" not in page and 'details class="reply"' not in page  # read-only
    log = git(home.applied_dir("manager"), "log", "--format=%s", "refs/hyperhive/review/2")
    assert log.split("\n")[:2] == [
        "sent comments 1 of manager#2 to manager",
        "comment 1 on manager#2: the whole change",
    ]
    r = post(client, "/review/manager/2/comments", {"text": "too late"})
    assert r.status_code == 404  # a pruned approval takes no more comments

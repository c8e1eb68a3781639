"""ETags and 304 on the review, commit and blob pages (forge_ui/etags.py): the same page
seen again by the same session is not sent again; a change of anything the page says, or
another session, gets the whole page."""

import re
import time

import pytest
from support.hive import commit_config, csrf_in, git, log_in

from forge_ui import create_app, diffcache, filters, policy_view
from hyperhive import viewed
from hyperhive.hive import Hive
from hyperhive.workflow import comments
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.deploy import deploy


@pytest.fixture
def app(home, runtime, monkeypatch):
    """The forge, its pages held still: ages as at one moment, and the policy diff (nix, in
    the background) never evaluated, so two renders say the same unless a test changes
    something."""
    monkeypatch.setattr(policy_view, "cached_or_queued", lambda hive, approval: None)
    monkeypatch.setattr(diffcache, "HIGHLIGHT_SECONDS", None)  # highlighted at once
    app = create_app(Hive(home, runtime))
    now = time.time() + 120
    app.jinja_env.filters["age"] = lambda ts, at=None: filters.age(ts, now)
    return app


@pytest.fixture
def client(app, home):
    return log_in(app.test_client(), home, "alice")


@pytest.fixture
def review(home, runtime):
    """manager#2: a change of agent.nix, reviewed against manager#1 (deployed here, not by
    the shipped hook's `hyperhive deploy` process)."""
    (home.applied_dir("manager") / "hooks" / "post-receive").unlink()
    Approvals(home, "manager").approve(1, "alice")
    deploy(home, "manager", 1, runtime)
    commit_config(home, "manager", {"agent.nix": "{ ... }:\n{\n  networking = 1;\n}\n"}, "net")
    return Approvals(home, "manager").propose("HEAD", "manager", reason="a network")


def nonce(r) -> str:
    return re.search(r"'nonce-([^']+)'", r.headers["Content-Security-Policy"])[1]


def test_the_review_page_is_not_sent_again_while_it_says_the_same(client, home, review):
    path = f"/review/manager/{review.id}"
    first = client.get(path)
    assert first.status_code == 200 and "networking" in first.get_data(as_text=True)
    tag = first.headers["ETag"]
    assert tag.startswith('W/"') and first.headers["Cache-Control"] == "private, no-cache"
    again = client.get(path)
    # Rendered again (a new nonce, a new signature of the CSRF token): the same tag.
    assert nonce(again) != nonce(first) and again.headers["ETag"] == tag
    assert nonce(first) in first.get_data(as_text=True)
    same = client.get(path, headers={"If-None-Match": tag})
    assert same.status_code == 304 and same.data == b"" and same.headers["ETag"] == tag
    # The browser keeps the stored page's headers: a new nonce would block its scripts.
    assert "Content-Security-Policy" not in same.headers
    assert same.headers["X-Frame-Options"] == "DENY"
    assert client.get(path + "?view=split", headers={"If-None-Match": tag}).status_code == 200


def test_a_change_of_what_the_page_says_gives_a_new_tag(client, home, review):
    path = f"/review/manager/{review.id}"
    tag = client.get(path).headers["ETag"]

    def comment():
        comments.add(home, "manager", review.id, "alice", "why a network?")

    def mark_viewed():
        page = client.get(path).get_data(as_text=True)
        sides = re.search(r'data-path="agent.nix"[^>]*data-sides="([^"]+)"', page)[1]
        viewed.mark(home, "alice", "agent.nix", sides, True)

    def deny():
        Approvals(home, "manager").deny(review.id, "bob", "no network")

    for change in (comment, mark_viewed, deny):
        change()
        r = client.get(path, headers={"If-None-Match": tag})
        assert r.status_code == 200 and r.headers["ETag"] != tag, change.__name__
        tag = r.headers["ETag"]
        assert client.get(path, headers={"If-None-Match": tag}).status_code == 304


def test_no_304_across_sessions(app, client, home, review):
    """The page carries the session's CSRF token: another session's tag never matches,
    nor a new session of the same account."""
    path = f"/review/manager/{review.id}"
    tag = client.get(path).headers["ETag"]
    for other in (log_in(app.test_client(), home, "bob"), log_in(app.test_client(), home)):
        r = other.get(path, headers={"If-None-Match": tag})
        assert r.status_code == 200 and r.headers["ETag"] != tag
        token = csrf_in(r.get_data(as_text=True))
        assert token  # its own token, in the page it got whole


def test_commit_and_blob_pages_answer_304_to_their_tag(client, home, review):
    sha = review.commit
    for path in (f"/repos/manager/applied/commit/{sha}", "/repos/manager/config/blob/agent.nix"):
        first = client.get(path)
        assert first.status_code == 200, path
        tag = first.headers["ETag"]
        assert client.get(path, headers={"If-None-Match": tag}).status_code == 304
        assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
    # The blob page at HEAD says something else once HEAD moves: a new tag.
    path = "/repos/manager/config/blob/agent.nix"
    tag = client.get(path).headers["ETag"]
    commit_config(home, "manager", {"agent.nix": "{ ... }:\n{\n  networking = 2;\n}\n"}, "2")
    assert git(home.config_dir("manager"), "show", "HEAD:agent.nix").count("= 2;") == 1
    r = client.get(path, headers={"If-None-Match": tag})
    assert r.status_code == 200 and r.headers["ETag"] != tag
    assert "networking = 2" in re.sub(r"<[^>]+>", "", r.get_data(as_text=True))

"""The review around the diff, in-process (Flask's test client on a real hive): a decided
approval says who decided, when and why and hides its controls; approve/deny end on a
done page reached by a redirect (post/redirect/get), and no reload of a step is a bare
405; every page links to the next thing to read (commit pages, the review of a tag, the
build's meta pin, the clone URL); the favicon; styled 404 and 405 pages."""

import pytest
from support.hive import commit_config, csrf, log_in

from forge_ui import create_app
from forge_ui.filters import utc
from hyperhive.hive import Hive
from hyperhive.workflow import meta
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.deploy import deploy


@pytest.fixture
def client(home, runtime):
    (home.applied_dir("manager") / "hooks" / "post-receive").unlink()  # deploys by hand
    c = create_app(Hive(home, runtime)).test_client()
    log_in(c, home, "alice")
    return c


def test_deny_redirects_to_a_done_page_and_the_review_says_who_decided(client, home):
    data = {"csrf_token": csrf(client), "reason": "too <broad>", "confirm": "yes"}
    r = client.post("/review/manager/1/deny", data=data)
    assert (r.status_code, r.headers["Location"]) == (303, "/review/manager/1/done")
    for _ in range(2):  # a reload of the done page shows it again, asks nothing
        page = client.get("/review/manager/1/done").get_data(as_text=True)
        assert "manager#1</span> denied" in page
        assert 'by <strong class="decided-by">alice</strong>' in page
        assert "too &lt;broad&gt;" in page and "build log" not in page
    denied = Approvals(home, "manager").get(1).states["denied"]
    page = client.get("/review/manager/1").get_data(as_text=True)
    assert '<div class="actions panel" id="actions" hidden>' in page
    assert f'on {utc(denied.time)}:</span> <span class="decided-why">too &lt;broad&gt;' in page
    # Reloading a step of a decision already taken: the refusal, never a bare 405.
    for path in ("/review/manager/1/approve", "/review/manager/1/deny"):
        r = client.get(path)
        assert r.status_code == 200 and b"Yes, " in r.data
    r = client.post(
        "/review/manager/1/approve", data={"csrf_token": csrf(client), "confirm": "yes"}
    )
    assert r.status_code == 409 and b"already denied by alice" in r.data


def test_an_undecided_done_page_goes_to_the_review(client):
    page = client.get("/review/manager/1").get_data(as_text=True)
    assert '<div class="actions panel" id="actions">' in page and 'id="decided"' not in page
    r = client.get("/review/manager/1/done")
    assert (r.status_code, r.headers["Location"]) == (302, "/review/manager/1")


def test_every_page_links_to_what_to_read_next(client, home, runtime):
    approvals = Approvals(home, "manager")
    approvals.approve(1, "alice")
    first = deploy(home, "manager", 1, runtime).commit
    commit_config(home, "manager", {"notes.md": "hi\n"}, "add notes")
    second = approvals.propose("HEAD", "manager")

    page = client.get("/review/manager/1/done").get_data(as_text=True)  # the build, followed
    assert 'id="build-link" href="/builds/manager/1"' in page and "/ws/build/manager/1" in page
    page = client.get(f"/review/manager/{second.id}").get_data(as_text=True)
    assert f'commit <a href="/repos/manager/applied/commit/{second.commit}">' in page
    assert f'against deployed <a href="/repos/manager/applied/commit/{first}">' in page
    page = client.get("/builds/manager/1").get_data(as_text=True)
    pin = meta.deploy_commit(home, "manager", 1)
    assert pin and 'id="meta-pin"' in page and f"/repos/meta/commit/{pin}" in page
    assert f'href="/repos/manager/applied/commit/{first}"' in page
    assert 'href="/review/manager/1"' in page
    # A tag pill on a commit page leads to its review; a branch pill to the commit.
    page = client.get(f"/repos/manager/applied/commit/{first}").get_data(as_text=True)
    assert 'href="/review/manager/1" title="review manager#1">deployed/1</a>' in page
    assert 'href="/repos/manager/applied/commit/main">main</a>' in page
    page = client.get("/repos/manager/config/log").get_data(as_text=True)
    assert 'value="http://localhost/git/manager/config.git"' in page
    assert 'value="http://localhost/git/meta.git"' in client.get("/repos/meta/log").get_data(
        as_text=True
    )
    assert '<a href="/repos">Repos</a>' in page


def test_the_favicon_and_styled_404_and_405(client):
    page = client.get("/").get_data(as_text=True)
    assert '<link rel="icon" type="image/svg+xml" href="/static/favicon.svg">' in page
    r = client.get("/static/favicon.svg")
    assert r.status_code == 200 and r.mimetype == "image/svg+xml" and b"<svg" in r.data
    r = client.get("/no/such/page")
    assert r.status_code == 404
    page = r.get_data(as_text=True)
    assert '<header class="top">' in page and 'class="what">Not found</span>' in page
    assert "/no/such/page" in page
    r = client.post("/agents/manager", data={"csrf_token": csrf(client)})
    assert r.status_code == 405
    page = r.get_data(as_text=True)
    assert '<header class="top">' in page and 'class="what">Method not allowed</span>' in page


def test_the_favicon_needs_no_session(home, runtime):
    anon = create_app(Hive(home, runtime)).test_client()
    r = anon.get("/favicon.ico")
    assert (r.status_code, r.headers["Location"]) == (301, "/static/favicon.svg")

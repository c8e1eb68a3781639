"""The forge through Flask's test client: auth, CSRF, every page and the JSON API. The
tests that only read and are refused share one hive and app (`seen`, `anon_seen`)."""

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from support.hive import PASSWORD, commit_config, csrf, git, log_in

from forge_ui import create_app, state
from hyperhive import operator
from hyperhive.agents import init_hive
from hyperhive.errors import BadInput
from hyperhive.hive import Hive
from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.deploy import deploy


@pytest.fixture
def app(home, runtime):
    return create_app(Hive(home, runtime))


@pytest.fixture
def anon(app, home):
    """Not logged in; the operator has PASSWORD (a scrypt hash: 0.16 s of CPU, so only
    the tests that log in with a password pay it)."""
    operator.set_password(home, PASSWORD)
    return app.test_client()


@pytest.fixture
def client(app, home):
    c = app.test_client()
    log_in(c, home, "alice")
    return c


@pytest.fixture(scope="module")
def shared_app(tmp_path_factory):
    """One hive and forge for the module's tests that change nothing in it."""
    home = Home(tmp_path_factory.mktemp("seen") / "hive")
    init_hive(home, LocalRuntime(home), "operator")
    operator.set_password(home, PASSWORD)
    return create_app(Hive(home, LocalRuntime(home))), home


@pytest.fixture(scope="module")
def anon_seen(shared_app):
    """Never logs in: a fresh client's view of the shared forge."""
    return shared_app[0].test_client()


@pytest.fixture(scope="module")
def seen(shared_app):
    app, home = shared_app
    return log_in(app.test_client(), home, "alice")


def tags(home, name="manager") -> list[str]:
    return git(home.applied_dir(name), "for-each-ref", "--format=%(refname)").split()


def no_hook(home, name="manager"):
    (home.applied_dir(name) / "hooks" / "post-receive").unlink()


def approve_and_deploy(home, runtime):
    """manager#1 approved and deployed here, not by the shipped hook's `hyperhive deploy`
    process (test_dashboard_lists_agents_approvals_and_recent runs that one)."""
    no_hook(home)
    Approvals(home, "manager").approve(1, "alice")
    deploy(home, "manager", 1, runtime)


# -- auth ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/", "/agents/manager", "/review/manager/1", "/builds/manager/1", "/builds/manager/1/raw"],
)
def test_pages_need_a_session(anon_seen, path):
    r = anon_seen.get(path)
    assert r.status_code == 302
    assert r.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("path", ["/api/state", "/api/agents/manager/history"])
def test_api_needs_a_session_or_token(anon_seen, path):
    r = anon_seen.get(path)
    assert r.status_code == 401 and "error" in r.get_json()
    r = anon_seen.get(path, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.get_json()["error"] == "invalid bearer token"


def test_bearer_token_works_without_csrf(anon, home):
    no_hook(home)
    auth = {"Authorization": f"Bearer {operator.token(home)}"}
    assert anon.get("/api/state", headers=auth).status_code == 200
    r = anon.post("/api/approvals/manager/1/approve", headers=auth)
    assert r.status_code == 409 and "has not finished" in r.get_json()["error"]
    r = anon.post("/api/approvals/manager/1/approve", headers=auth, json={"force": True})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["state"] == "approved"
    assert "refs/tags/approved/1" in tags(home)
    assert "Actor: operator" in git(home.applied_dir("manager"), "cat-file", "-p", "approved/1")


def test_login_with_password_then_logout(anon):
    page = anon.get("/login")
    assert page.status_code == 200 and b"Log in" in page.data
    token = re.search(rb'name="csrf-token" content="([^"]+)"', page.data).group(1).decode()
    r = anon.post(
        "/login?next=/agents/manager",
        data={"csrf_token": token, "account": "operator", "password": PASSWORD},
    )
    assert r.status_code == 302 and r.headers["Location"] == "/agents/manager"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert anon.get("/").status_code == 200
    r = anon.post("/logout", data={"csrf_token": csrf(anon)})
    assert r.status_code == 302
    assert anon.get("/").status_code == 302


def test_login_with_the_token(anon, home):
    token = csrf(anon, "/login")
    r = anon.post("/login", data={"csrf_token": token, "password": operator.token(home)})
    assert r.status_code == 302 and r.headers["Location"] == "/"


@pytest.mark.parametrize("bad", ["wrong", "", PASSWORD + "x"])
def test_wrong_password_is_refused(anon, bad):
    token = csrf(anon, "/login")
    r = anon.post("/login", data={"csrf_token": token, "account": "operator", "password": bad})
    assert r.status_code == 401 and b"wrong account, password or token" in r.data
    assert anon.get("/").status_code == 302


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "javascript:x"])
def test_login_never_redirects_off_site(anon, target):
    token = csrf(anon, "/login")
    r = anon.post(
        f"/login?next={target}",
        data={"csrf_token": token, "account": "operator", "password": PASSWORD},
    )
    assert r.status_code == 302 and r.headers["Location"] == "/"


def test_a_token_or_password_that_is_not_ascii_is_refused_not_a_500(anon, home):
    operator.token(home)  # there is a token to compare with
    form = {"csrf_token": csrf(anon, "/login"), "account": "operator", "password": "pässwört"}
    r = anon.post("/login", data=form)
    assert r.status_code == 401 and b"wrong account, password or token" in r.data
    r = anon.get("/api/state", headers={"Authorization": "Bearer pässwört"})
    assert r.status_code == 401 and r.get_json()["error"] == "invalid bearer token"


def test_login_without_csrf_token_is_refused(anon):
    r = anon.post("/login", data={"password": PASSWORD})
    assert r.status_code == 403


# -- CSRF and the decision flow -------------------------------------------------------


def test_state_changes_need_the_csrf_token(client, home):
    before = tags(home)
    for data in ({}, {"csrf_token": "forged"}):
        r = client.post("/review/manager/1/approve", data={**data, "confirm": "yes"})
        assert r.status_code == 403 and b"CSRF" in r.data
    r = client.post("/api/approvals/manager/1/approve")
    assert r.status_code == 403 and "CSRF" in r.get_json()["error"]
    assert tags(home) == before


def test_no_state_change_over_get(client, home):
    before = tags(home)
    for path in ("/review/manager/1/approve", "/review/manager/1/deny"):
        r = client.get(path)  # a reload of the confirm step: the confirm step again
        assert r.status_code == 200 and b"Yes, " in r.data
    assert client.get("/api/approvals/manager/1/approve").status_code == 405
    assert tags(home) == before


def test_approve_needs_a_confirm_step(client, home):
    no_hook(home)
    token = csrf(client)
    r = client.post("/review/manager/1/approve", data={"csrf_token": token})
    assert r.status_code == 200 and b"Yes, approve manager#1" in r.data
    assert b'name="force"' in r.data and b"has not finished" in r.data  # no check ran
    assert "refs/tags/approved/1" not in tags(home)
    r = client.post("/review/manager/1/approve", data={"csrf_token": token, "confirm": "yes"})
    assert r.status_code == 409 and b"approve anyway" in r.data
    data = {"csrf_token": token, "confirm": "yes", "force": "yes"}
    r = client.post("/review/manager/1/approve", data=data)
    assert r.status_code == 303 and r.headers["Location"] == "/review/manager/1/done"
    r = client.get(r.headers["Location"])
    assert r.status_code == 200 and b"manager#1</span> approved" in r.data
    shown = git(home.applied_dir("manager"), "cat-file", "-p", "approved/1")
    assert "Actor: alice" in shown and "Check: unfinished, overridden" in shown
    # A second approve of the same id is refused with who decided it.
    r = client.post("/review/manager/1/approve", data={"csrf_token": token, "confirm": "yes"})
    assert r.status_code == 409 and b"already approved by alice" in r.data


def test_deny_needs_a_reason_and_a_confirm_step(client, home):
    token = csrf(client)
    r = client.post("/review/manager/1/deny", data={"csrf_token": token, "reason": "  "})
    assert r.status_code == 400 and b"needs a reason" in r.data
    r = client.post("/review/manager/1/deny", data={"csrf_token": token, "reason": "too broad"})
    assert r.status_code == 200 and b"Yes, deny manager#1" in r.data
    assert "refs/tags/denied/1" not in tags(home)
    data = {"csrf_token": token, "reason": "too broad", "confirm": "yes"}
    assert client.post("/review/manager/1/deny", data=data).status_code == 303
    assert "Reason: too broad" in git(home.applied_dir("manager"), "cat-file", "-p", "denied/1")
    r = client.post("/review/manager/1/approve", data={"csrf_token": token, "confirm": "yes"})
    assert r.status_code == 409 and b"already denied by alice" in r.data


def test_a_body_over_the_limit_is_a_clear_413_and_nothing_changes(client, home):
    reason = "x" * (2 << 20)
    data = {"csrf_token": csrf(client), "reason": reason, "confirm": "yes"}
    r = client.post("/review/manager/1/deny", data=data)
    assert r.status_code == 413 and b"over the forge&#39;s limit of 65536 bytes" in r.data
    r = client.post(
        "/api/approvals/manager/1/deny",
        json={"reason": reason},
        headers={"Authorization": f"Bearer {operator.token(home)}"},
    )
    assert r.status_code == 413
    assert r.get_json() == {"error": "the request body is over the forge's limit of 65536 bytes"}
    assert "refs/tags/denied/1" not in tags(home)


# -- pages ------------------------------------------------------------------------------


def test_dashboard_lists_agents_approvals_and_recent(client, home):
    page = client.get("/").get_data(as_text=True)
    assert "<title>Dashboard · hyperhive</title>" in page
    assert 'data-target="manager#1"' in page and "/review/manager/1" in page
    assert "No deploys yet." in page
    Approvals(home, "manager").approve(1, "alice")  # the shipped hook deploys it
    page = client.get("/").get_data(as_text=True)
    assert "Nothing to review." in page
    assert 'badge state-deployed">deployed' in page


def test_review_page_shows_the_diff_history_and_actions(client, home, runtime):
    approve_and_deploy(home, runtime)
    commit_config(home, "manager", {"agent.nix": "{ ... }:\n{\n  networking = 1;\n}\n"}, "net")
    Approvals(home, "manager").propose("HEAD", "manager", reason="needs a network")
    page = client.get("/review/manager/2").get_data(as_text=True)
    assert "<title>Review manager#2 · hyperhive</title>" in page
    assert "agent.nix" in page and "networking" in page
    assert "needs a network" in page
    assert 'id="approve" ' in page and "disabled" not in page.split('id="approve"')[1][:20]
    split = client.get("/review/manager/2?view=split")
    assert split.status_code == 200
    # A decided approval keeps its review page, with the buttons off.
    page = client.get("/review/manager/1").get_data(as_text=True)
    assert "build log" in page and "Duration:" in page
    assert 'id="approve" disabled' in page


def test_failed_hook_shows_in_the_history(client, home):
    hook = home.applied_dir("manager") / "hooks" / "post-receive"
    hook.write_text("#!/bin/sh\necho broken on purpose\nexit 3\n")
    Approvals(home, "manager").approve(1, "alice")
    page = client.get("/review/manager/1").get_data(as_text=True)
    assert "exited 3" in page and "broken on purpose" in page


def test_agent_page(client):
    page = client.get("/agents/manager").get_data(as_text=True)
    assert "<title>manager · hyperhive</title>" in page and "manager#1" in page


def test_agents_running_unsandboxed_are_a_red_warning(client, home):
    for path in ("/", "/agents/manager"):  # sandboxed, the default: nothing to say
        assert "unsandboxed" not in client.get(path).get_data(as_text=True)
    (home.root / "hyperhive.toml").write_text("[local]\nsandbox = false\n")
    for path in ("/", "/agents/manager"):
        page = client.get(path).get_data(as_text=True)
        warning = re.search(r'<p class="error unsandboxed" role="alert">(.*?)</p>', page, re.S)
        assert warning and "sandbox = false" in warning.group(1)


def test_build_log_page_and_raw(client, home, runtime):
    approve_and_deploy(home, runtime)
    page = client.get("/builds/manager/1").get_data(as_text=True)
    assert "nix-instantiate --parse agent.nix" in page
    r = client.get("/builds/manager/1/raw")
    assert r.mimetype == "text/plain" and r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.data == home.build_log("manager", 1).read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/review/manager/9",
        "/review/ghost/1",
        "/agents/ghost",
        "/builds/manager/9",
        "/builds/ghost/1/raw",
        "/api/agents/ghost/history",
    ],
)
def test_unknown_agents_and_ids_are_404(seen, path):
    assert seen.get(path).status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/agents/..",
        "/agents/%2e%2e",
        "/agents/..%2F..%2Fetc",
        "/review/..%2Fmanager/1",
        "/review/manager%2F..%2Fx/1",
        "/builds/%2e%2e/1",
        "/builds/manager/..%2F1",
        "/api/agents/..%2F..%2Fetc/history",
        "/api/agents/Manager/history",
    ],
)
def test_traversal_in_any_segment_is_refused(seen, path):
    r = seen.get(path)
    assert r.status_code in (400, 404), (path, r.status_code)
    assert b"root:" not in r.data


# -- JSON API ---------------------------------------------------------------------------


def api_post(client, path, **kw):
    return client.post(path, headers={"X-CSRFToken": csrf(client)}, **kw)


def test_api_decisions_and_refusals(client, home):
    no_hook(home)
    r = api_post(client, "/api/approvals/manager/1/deny", json={})
    assert r.status_code == 400 and "reason" in r.get_json()["error"]
    r = api_post(
        client, "/api/approvals/manager/1/deny", data="{nope", content_type="application/json"
    )
    assert r.status_code == 400 and "JSON object" in r.get_json()["error"]
    r = api_post(client, "/api/approvals/manager/1/deny", json=["a list"])
    assert r.status_code == 400
    r = api_post(client, "/api/approvals/manager/9/approve")
    assert r.status_code == 404 and r.get_json()["error"] == "unknown approval manager#9"
    r = api_post(client, "/api/approvals/ghost/1/approve")
    assert r.status_code == 404 and "unknown agent" in r.get_json()["error"]
    r = api_post(client, "/api/approvals/manager/1/deny", json={"reason": "no"})
    assert r.status_code == 200 and r.get_json()["state"] == "denied"
    r = api_post(client, "/api/approvals/manager/1/approve")
    assert r.status_code == 409 and "already denied by alice" in r.get_json()["error"]


def test_api_history_matches_the_cli_shape(client, home):
    Approvals(home, "manager").approve(1, "alice")
    body = client.get("/api/agents/manager/history").get_json()
    (a,) = body["approvals"]
    assert [s["state"] for s in a["states"]] == ["proposal", "approved", "building", "deployed"]
    assert a["hooks"] and all(h["exit"] == 0 for h in a["hooks"])


def test_api_state_names_the_host_each_agent_runs_on(client):
    """The seam for more than one host (docs/multi-host.md): every agent runs here."""
    agents = client.get("/api/state").get_json()["agents"]
    assert agents and {a["runtime"]["host"] for a in agents} == {"local"}


def test_api_state_reports_a_section_that_failed_to_load(client, monkeypatch):
    def broken(hive):
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(state.SECTIONS, "recent", broken)
    body = client.get("/api/state").get_json()
    assert body["recent"] is None
    assert body["errors"] == [{"section": "recent", "error": "RuntimeError: disk on fire"}]
    assert body["approvals"][0]["target"] == "manager#1"
    page = client.get("/").get_data(as_text=True)
    assert "Could not load recent: RuntimeError: disk on fire" in page


# -- operator questions and inbox --------------------------------------------------------


def test_questions_are_answered_from_the_dashboard(client, home):
    from hyperhive.broker import questions
    from hyperhive.broker.messages import Broker

    broker = Broker(home)
    qid = questions.ask(broker, "manager", "rotate the keys?", ["yes", "later"])
    broker.send("manager", "operator", "status: all green")
    page = client.get("/").get_data(as_text=True)
    assert f'data-question="{qid}"' in page and "rotate the keys?" in page
    assert "status: all green" in page
    assert client.post(f"/questions/{qid}/answer", data={"answer": "yes"}).status_code == 403
    r = client.post(f"/questions/{qid}/answer", data={"answer": "yes", "csrf_token": csrf(client)})
    assert r.status_code == 302
    (m,) = broker.recv("manager")
    assert m["from"] == "operator" and "yes" in m["body"]
    r = client.post(f"/questions/{qid}/answer", data={"answer": "no", "csrf_token": csrf(client)})
    assert r.status_code == 409 and b"already answered by alice" in r.data
    r = client.post("/questions/999/answer", data={"answer": "x", "csrf_token": csrf(client)})
    assert r.status_code == 404


@pytest.mark.parametrize("path", ["/", "/review/manager/1", "/builds/manager/1", "/agents/manager"])
def test_pages_forbid_framing_and_run_only_their_own_scripts(seen, path):
    r = seen.get(path)
    assert r.status_code == 200
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["Referrer-Policy"] == "same-origin"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    csp = r.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    nonce = re.search(r"script-src 'self' 'nonce-([^']+)'", csp).group(1)
    inline = re.findall(r"<script(?![^>]*\bsrc=)([^>]*)>", r.get_data(as_text=True))
    assert inline and all(f'nonce="{nonce}"' in attrs for attrs in inline)
    assert seen.get(path).headers["Content-Security-Policy"] != csp  # a nonce per answer


def test_the_login_page_and_the_api_carry_the_headers_too(anon_seen):
    for r in (anon_seen.get("/login"), anon_seen.get("/api/state")):
        assert r.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]


def test_open_dashboards_share_one_load_of_the_state(home, runtime, monkeypatch):
    hive = Hive(home, runtime)
    loads = []
    monkeypatch.setitem(state.SECTIONS, "agents", lambda h: loads.append(1) or ["row"])
    # no policy evaluation queued: its end publishes a state event of its own
    monkeypatch.setitem(state.SECTIONS, "approvals", lambda h: [])
    latest = state.Latest(hive)
    hive.bus.publish("state", {"agent": "manager", "ref": "refs/tags/proposal/1"})
    barrier = threading.Barrier(8)

    def dashboard() -> dict:  # eight dashboards woken by the same event
        barrier.wait()
        return latest.get(max_age=60)

    with ThreadPoolExecutor(8) as pool:
        seen = list(pool.map(lambda _: dashboard(), range(8)))
    assert len(loads) == 1 and all(s["agents"] == ["row"] for s in seen)
    assert latest.get(max_age=60) is seen[0]  # nothing changed since

    hive.bus.publish("state", {"agent": "manager", "ref": "refs/tags/approved/1"})
    latest.get(max_age=60)
    assert len(loads) == 2  # a change since the load: loaded again
    latest.get(max_age=0)
    assert len(loads) == 3  # too old for the caller: loaded again
    hive.bus.publish("stats", {"agent": "manager"})
    latest.get(max_age=60)
    assert len(loads) == 3  # other topics are not the dashboard's state


def test_a_sections_version_moves_with_its_data_alone():
    data = {"agents": [{"name": "a"}], "recent": [], "errors": []}
    before = state.versions(data)
    assert set(before) == {"agents", "recent", "errors"}
    assert state.versions({**data, "agents": [{"name": "a"}]}) == before  # equal data
    after = state.versions({**data, "agents": [{"name": "b"}]})
    assert after["agents"] != before["agents"]
    assert {k: v for k, v in after.items() if k != "agents"} == {
        k: v for k, v in before.items() if k != "agents"
    }
    assert state.parse_have('{"agents": "x", "nope": "y"}') == {"agents": "x"}
    assert state.parse_have(None) == {}
    for bad in ("[]", '{"agents": 1}', "{", "x" * (state.MAX_HAVE + 1)):
        with pytest.raises(BadInput):
            state.parse_have(bad)


def test_sections_without_session_data_render_once_for_every_dashboard(app, home, monkeypatch):
    """Two operators' dashboards: a section that reads nothing of the session is rendered
    once per version for both; one with a form (its CSRF token) for each."""
    from forge_ui.views import dashboard

    rendered = []
    real = dashboard.render_template
    monkeypatch.setattr(
        dashboard, "render_template", lambda name, **kw: rendered.append(name) or real(name, **kw)
    )
    pages, seen = [], []  # each page and the versions it was rendered with
    for who in ("alice", "bob"):
        pages.append(log_in(app.test_client(), home, who).get("/"))
        held = re.search(r"const held = (\{.*\});", pages[-1].get_data(as_text=True))
        seen.append(json.loads(held.group(1)))
    assert all(p.status_code == 200 for p in pages)
    assert not dashboard.shared(app.jinja_env, "drafts")  # its spawn form's token
    assert rendered.count("dash/_drafts.html") == 2
    for name in ("agents", "approvals", "recent", "kept"):  # a background evaluation
        assert dashboard.shared(app.jinja_env, name)  # may change the approvals between
        assert rendered.count(f"dash/_{name}.html") == len({v[name] for v in seen}), name
    assert seen[0]["agents"] == seen[1]["agents"] and rendered.count("dash/_agents.html") == 1
    drafts = [
        re.search(r'name="csrf_token" value="([^"]+)"', p.get_data(as_text=True)).group(1)
        for p in pages
    ]
    assert drafts[0] != drafts[1]

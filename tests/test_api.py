"""The JSON state API through Flask's test client."""

from forge_ui import create_app
from hyperhive.workflow.approvals import Approvals


def test_state_lists_agents_and_pending_approvals(home, runtime):
    client = create_app(
        home, runtime, lambda: {"running": {"manager": 3}, "queued": {}}
    ).test_client()
    body = client.get("/api/state").get_json()
    assert [a["name"] for a in body["agents"]] == ["manager"]
    assert body["agents"][0]["pending"] == [1]
    assert body["agents"][0]["runtime"]["state"] == "not deployed"
    (approval,) = body["approvals"]
    assert approval["target"] == "manager#1"
    assert approval["subject"] == "create agent manager"
    assert approval["states"][0]["trailers"]["Reason"] == "new agent"
    assert body["builds"] == {"running": {"manager": 3}, "queued": {}}


def test_decided_approvals_leave_the_queue(home, runtime):
    Approvals(home, "manager").deny(1, "operator", "no")
    body = create_app(home, runtime).test_client().get("/api/state").get_json()
    assert body["approvals"] == []
    assert body["agents"][0]["pending"] == []


def test_unknown_paths_and_methods_answer_json(home, runtime):
    client = create_app(home, runtime).test_client()
    r = client.get("/api/nothing")
    assert r.status_code == 404 and "error" in r.get_json()
    r = client.post("/api/state")
    assert r.status_code == 405 and "error" in r.get_json()

"""Checks of proposals (workflow/checks.py) on the local runtime with the real
nix-instantiate: the result as a `checked/<id>` tag read back with the git CLI, the gate
on approving, a hanging evaluation stopped, a destroyed agent's check dropped, reruns,
the bounded log, retention."""

import json
import threading
import time

import pytest
from support.daemon import Daemon, bearer, ws
from support.hive import commit_config, csrf_in, git, log_in, run_cli
from support.inprocess import run_main
from support.wait import wait_for

from hyperhive.home import Home
from hyperhive.runtime.local import LocalRuntime
from hyperhive.workflow import checks, retention
from hyperhive.workflow.approvals import Approvals
from hyperhive.workflow.deploy import BuildLog, deploy

NAME = "manager"
GOOD = '{ ... }:\n{ hyperhive.allowedRecipients = [ "operator" ]; }\n'
BROKEN = '{ ... }:\n{ hyperhive.allowedRecipients = [ "operator" ] ++ builtins.nonexistent; }\n'
# About 10^10 additions in bounded memory: an evaluation that does not end in any test's time.
HANGS = (
    "{ ... }:\nlet n = builtins.genList (x: x) 100000;\n"
    "in { hyperhive.model = toString (builtins.foldl' "
    "(a: _: builtins.foldl' (b: _: b + 1) a n) 0 n); }\n"
)


def propose(home, text: str) -> int:
    commit_config(home, NAME, {"agent.nix": text}, "change")
    return Approvals(home, NAME).propose("HEAD", "manager").id


def tags(home) -> list[str]:
    return git(home.applied_dir(NAME), "tag", "--list", "checked/*").split()


def test_a_passing_check_is_a_tag_with_its_policy(home):
    approval_id = propose(home, GOOD)
    told = []
    check = checks.run(home, NAME, approval_id, LocalRuntime(home), 60, told.append)
    assert check.result == "passed" and check.run == 1
    assert check.policy == {"allowedRecipients": ["operator"]}
    assert check.digest == checks.digest(check.policy)
    applied = home.applied_dir(NAME)
    assert tags(home) == [f"checked/{approval_id}"]
    shown = git(applied, "cat-file", "-p", f"checked/{approval_id}")
    commit = git(applied, "rev-parse", f"proposal/{approval_id}^{{commit}}").strip()
    assert f"object {commit}" in shown
    for trailer in ("Result: passed", "Duration: ", "Check-Log: ", "Policy-Digest: sha256:"):
        assert trailer in shown
    assert checks.latest(home, NAME, approval_id) == check
    log = home.check_log(NAME, approval_id).read_text()
    assert "nix-instantiate" in log and "check passed in" in log
    assert told and told[0].startswith(f"check_passed: {NAME}#{approval_id}")
    # passed: approving records it
    a = checks.approve(home, NAME, approval_id, "operator")
    assert a.states["approved"].trailers["Check"] == "passed"


def test_a_failing_check_gates_approval_and_force_is_recorded(home):
    approval_id = propose(home, BROKEN)
    told = []
    check = checks.run(home, NAME, approval_id, LocalRuntime(home), 60, told.append)
    assert check.result == "failed"
    assert "nonexistent" in check.reason and check.tail
    assert "Result: failed" in git(home.applied_dir(NAME), "cat-file", "-p", check.tag)
    assert told[0].startswith(f"check_failed: {NAME}#{approval_id}") and "nonexistent" in told[0]
    with pytest.raises(checks.CheckNotPassed, match="failed: cannot evaluate"):
        checks.approve(home, NAME, approval_id, "operator")
    a = checks.approve(home, NAME, approval_id, "operator", force=True)
    trailers = a.states["approved"].trailers
    assert trailers["Check"] == "failed, overridden" and trailers["Check-Tag"] == check.tag
    assert "Check: failed, overridden" in git(
        home.applied_dir(NAME), "cat-file", "-p", f"approved/{approval_id}"
    )


def test_unfinished_check_needs_force(home):
    with pytest.raises(checks.CheckNotPassed, match="has not finished"):
        checks.approve(home, NAME, 1, "operator")
    a = checks.approve(home, NAME, 1, "operator", force=True)
    assert a.states["approved"].trailers["Check"] == "unfinished, overridden"


def test_a_hanging_evaluation_is_stopped_at_the_timeout(home):
    approval_id = propose(home, HANGS)
    began = time.monotonic()
    check = checks.run(home, NAME, approval_id, LocalRuntime(home), 0.5)
    assert time.monotonic() - began < 30
    assert check.result == "failed" and check.reason == "timed out after 0.5s: stopped"
    assert "timed out" in home.check_log(NAME, approval_id).read_text()


def test_a_rerun_is_a_new_tag_and_the_latest_counts(home):
    approval_id = propose(home, GOOD)
    runtime = LocalRuntime(home)
    first = checks.run(home, NAME, approval_id, runtime, 60)
    second = checks.run(home, NAME, approval_id, runtime, 60)
    assert (first.run, second.run) == (1, 2)
    assert tags(home) == [f"checked/{approval_id}", f"checked/{approval_id}.2"]
    assert checks.latest(home, NAME, approval_id).tag == f"refs/tags/checked/{approval_id}.2"
    assert home.check_log(NAME, approval_id, 2).exists()
    # the tags are outside the state machine: the approval is still a proposal
    assert Approvals(home, NAME).get(approval_id).state == "proposal"


def test_racing_checks_of_one_proposal_with_no_daemon_run_it_once(home):
    """Ten approvals of one proposal with no daemon each want its check first (`hyperhive
    approve` runs `run_once`): one runs it, the others wait on the agent's check lock and
    take its result; a rerun still runs."""
    approval_id = propose(home, GOOD)
    ran, found = [], []

    def check() -> None:
        started = lambda _limit, path: ran.append(path)  # noqa: E731
        found.append(
            checks.run_once(home, NAME, approval_id, LocalRuntime(home), 60, None, started)
        )

    threads = [threading.Thread(target=check) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ran) == 1 and len(found) == 10
    assert {(c.tag, c.result) for c in found} == {(f"refs/tags/checked/{approval_id}", "passed")}
    assert tags(home) == [f"checked/{approval_id}"]
    rerun = checks.run(home, NAME, approval_id, LocalRuntime(home), 60)
    assert rerun.run == 2 and len(tags(home)) == 2


def test_decided_while_running_is_still_recorded(home):
    approval_id = propose(home, GOOD)

    def decide(limit, log):  # the operator approves (anyway) while the check runs
        checks.approve(home, NAME, approval_id, "operator", force=True)

    check = checks.run(home, NAME, approval_id, LocalRuntime(home), 60, started=decide)
    assert check.result == "passed" and tags(home) == [f"checked/{approval_id}"]
    approved = Approvals(home, NAME).get(approval_id).states["approved"]
    assert approved.trailers["Check"] == "unfinished, overridden"


def test_a_destroyed_agents_check_is_dropped(home):
    approval_id = propose(home, GOOD)

    def destroy(limit, log):
        home.destroyed_file(NAME).touch()

    assert checks.run(home, NAME, approval_id, LocalRuntime(home), 60, started=destroy) is None
    assert tags(home) == [] and not home.check_log(NAME, approval_id).exists()


def test_cancel_stops_the_running_command_and_records_nothing(home):
    approval_id = propose(home, HANGS)

    def cancel_soon(limit, log):
        import threading

        threading.Timer(0.3, limit.cancel, ("cancelled: the daemon stops",)).start()

    began = time.monotonic()
    check = checks.run(home, NAME, approval_id, LocalRuntime(home), 60, started=cancel_soon)
    assert check is None and time.monotonic() - began < 30  # not recorded: it runs again
    assert tags(home) == [] and not home.check_log(NAME, approval_id).exists()


def test_the_log_is_bounded_and_keeps_the_tail(tmp_path):
    seen = []
    log = BuildLog(Home(tmp_path), tmp_path / "x.log", NAME, 1, seen.append, max_bytes=100)
    for i in range(50):
        log.line(f"line {i:03d} " + "x" * 20)
    log.close()
    text = (tmp_path / "x.log").read_text()
    assert len(text.encode()) <= 100 + 80 and "the log is cut here" in text
    assert log.tail[-1].startswith("line 049") and len(seen) == text.count("\n")


def test_retention_removes_checks_with_their_proposal(home):
    runtime = LocalRuntime(home)
    checks.run(home, NAME, 1, runtime, 60)
    checks.run(home, NAME, 1, runtime, 60)
    pending = propose(home, GOOD)
    checks.run(home, NAME, pending, runtime, 60)
    checks.approve(home, NAME, 1, "operator")
    # the deploy's hook runs `hyperhive deploy`; build here as well in case it did not
    if Approvals(home, NAME).get(1).state == "approved":
        deploy(home, NAME, 1, runtime)
    assert Approvals(home, NAME).get(1).state == "deployed"
    report = retention.prune(home, 30)
    removed = {t.tag for t in report.removed}
    assert {"checked/1", "checked/1.2", "proposal/1"} <= removed
    assert tags(home) == [f"checked/{pending}"]  # a pending approval's check stays
    assert not home.check_log(NAME, 1).exists() and not home.check_log(NAME, 1, 2).exists()
    assert home.check_log(NAME, pending).exists()
    # the prune record names them, as git shows it
    record = git(home.meta_dir, "log", "-1", "--format=%B", "refs/hyperhive/pruned")
    assert f"Pruned: {NAME} checked/1.2 " in record


def test_cli_approve_checks_here_without_a_daemon_and_force(home):
    bad = propose(home, BROKEN)
    proc = run_main(home.root, "approve", f"{NAME}#{bad}")
    assert proc.returncode == 1 and "approve anyway with --force" in proc.stderr
    assert tags(home) == [f"checked/{bad}"]  # checked here: no daemon runs
    proc = run_main(home.root, "approvals", "--json")
    listed = {a["id"]: a for a in json.loads(proc.stdout)}
    assert listed[bad]["check"]["state"] == "failed"
    assert "failed" in run_main(home.root, "approvals").stdout
    proc = run_main(home.root, "approve", f"{NAME}#{bad}", "--force")
    assert proc.returncode == 0, proc.stderr
    assert "Check: failed, overridden" in git(
        home.applied_dir(NAME), "cat-file", "-p", f"approved/{bad}"
    )
    history = run_main(home.root, "history", NAME).stdout
    assert "check     " in history and "failed" in history
    proc = run_cli(home.root, "check", f"{NAME}#{bad}")  # a real process
    assert proc.returncode == 1 and "failed" in proc.stdout + proc.stderr
    assert tags(home) == [f"checked/{bad}", f"checked/{bad}.2"]


# -- on a real daemon ---------------------------------------------------------------------


def test_the_daemon_checks_proposals_tells_the_manager_and_reruns(tmp_path):
    (tmp_path / "hive").mkdir()
    (tmp_path / "hive" / "hyperhive.toml").write_text("[checks]\ntimeout_seconds = 60\n")
    daemon = Daemon(tmp_path / "hive").start()
    home = Home(daemon.root)
    try:
        # manager#1, proposed by init before the daemon ran, is checked at its start
        wait_for(lambda: "checked/1" in tags(home), what="the check of manager#1")
        got = daemon.get("/api/approvals/manager/1")
        assert got["target"] == "manager#1" and got["state"] == "proposal"
        assert got["check"]["state"] == "passed" and got["check"]["runs"] == 1
        assert got["check"]["policy_digest"].startswith("sha256:")
        listed = daemon.get("/api/state")["approvals"]
        assert [a["check"]["state"] for a in listed] == ["passed"]
        # a proposal through the CLI: the daemon checks it off its event
        commit_config(home, NAME, {"agent.nix": BROKEN}, "broken")
        assert run_main(home.root, "propose", NAME).stdout.strip() == f"{NAME}#2"
        wait_for(lambda: "checked/2" in tags(home), what="the check of manager#2")
        assert daemon.get("/api/approvals/manager/2")["check"]["state"] == "failed"
        proc = run_main(home.root, "approve", f"{NAME}#2")
        assert proc.returncode == 1 and "approve anyway" in proc.stderr
        # the manager was told the failure, from system (the operator's passed
        # proposal would only have cost it a turn)
        inbox = json.loads(run_main(home.root, "inbox", NAME, "--json").stdout)
        bodies = [m["body"] for m in inbox if m["from"] == "system"]
        assert [b.split("\n")[0] for b in bodies] == ["check_failed: manager#2"]
        assert "builtins.nonexistent" in bodies[0] or "nonexistent" in bodies[0]
        # the review page's live check: its status and the log from the start
        client = ws(daemon, "/ws/check/manager/2", Authorization=bearer(daemon))
        try:
            first = json.loads(client.receive(timeout=30))
        finally:
            client.close()
        assert first["state"] == "failed" and "check failed" in first["status"]
        assert first["reset"] and "nix-instantiate" in first["text"]
        assert first["offset"] == len(first["text"].encode())
        # a rerun on the daemon is a new tag
        proc = run_main(home.root, "check", f"{NAME}#2")
        assert proc.returncode == 0 and "on the daemon" in proc.stdout, proc.stderr
        wait_for(lambda: "checked/2.2" in tags(home), what="the rerun of manager#2")
        assert daemon.get("/api/approvals/manager/2")["check"]["runs"] == 2
        assert daemon.stop() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()


# -- the forge --------------------------------------------------------------------------


def test_review_page_dashboard_and_confirm_show_the_check(home, runtime):
    from forge_ui import create_app
    from hyperhive.daemon.checker import CheckWorker
    from hyperhive.hive import Hive
    from hyperhive.settings import Checks

    (home.applied_dir(NAME) / "hooks" / "post-receive").unlink()  # no deploy on approve
    worker = CheckWorker(home, runtime, None, Checks())  # not started: what is queued stays
    app = create_app(Hive(home, runtime, checks=worker))
    client = log_in(app.test_client(), home)
    page = client.get(f"/review/{NAME}/1").get_data(as_text=True)
    assert 'id="check"' in page and "check unfinished" in page
    token = csrf_in(page)
    r = client.post(f"/checks/{NAME}/1/rerun", data={"csrf_token": token})
    assert r.status_code == 302
    assert "check queued" in client.get(f"/review/{NAME}/1").get_data(as_text=True)
    assert "check-queued" in client.get("/").get_data(as_text=True)  # the dashboard's column
    bad = propose(home, BROKEN)
    checks.run(home, NAME, bad, runtime, 60)
    page = client.get(f"/review/{NAME}/{bad}").get_data(as_text=True)
    assert "check failed" in page and "nonexistent" in page and "check-tail" in page
    raw = client.get(f"/checks/{NAME}/{bad}/raw")
    assert raw.status_code == 200 and b"check failed" in raw.data
    confirm = client.post(f"/review/{NAME}/{bad}/approve", data={"csrf_token": token})
    assert b'name="force"' in confirm.data and b"The check failed" in confirm.data
    got = client.get(f"/api/approvals/{NAME}/{bad}").get_json()
    assert got["check"]["state"] == "failed" and got["check"]["tail"]
    r = client.post(
        f"/api/approvals/{NAME}/{bad}/approve",
        json={"force": "maybe"},
        headers={"X-CSRFToken": token},
    )
    assert r.status_code == 400
    data = {"csrf_token": token, "confirm": "yes", "force": "yes"}
    assert client.post(f"/review/{NAME}/{bad}/approve", data=data).status_code == 303
    shown = git(home.applied_dir(NAME), "cat-file", "-p", f"approved/{bad}")
    assert "Check: failed, overridden" in shown and "Actor: alice" in shown


def test_the_worker_drops_a_destroyed_agents_queue_and_refuses_bad_settings(home, runtime):
    from hyperhive.daemon.checker import CheckWorker
    from hyperhive.errors import BadSettings
    from hyperhive.settings import Checks, load_settings

    worker = CheckWorker(home, runtime, None, Checks())  # not started: the queue stays
    second = propose(home, GOOD)
    worker.changed({"agent": NAME, "ref": f"refs/tags/proposal/{second}"})
    worker.sweep()  # finds manager#1, proposed before: both queued, once each
    assert worker.status()["queued"] == [f"{NAME}#{second}", f"{NAME}#1"]
    assert worker.submit(NAME, 1) == {"state": "queued", "ahead": 1}
    home.destroyed_file(NAME).touch()
    worker.changed({"agent": NAME, "ref": "destroy"})
    assert worker.status() == {"running": {}, "queued": []}
    (home.root / "hyperhive.toml").write_text("[checks]\nworkers = 0\n")
    with pytest.raises(BadSettings, match="checks.workers must be at least 1"):
        load_settings(home)

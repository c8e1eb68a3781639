"""The daemon's supervisor with stand-in runtimes: crash reports from `system` (a name no
agent may take), the restart backoff, the status poll of unsupervised runtimes."""

import threading
import time

import pytest
from support.hive import run_cli
from support.runtimes import StandIn, set_deployed

from hyperhive.agents import create_agent
from hyperhive.broker.messages import MAX_BODY, Broker
from hyperhive.daemon import supervisor
from hyperhive.daemon.supervisor import Supervisor, crash_body
from hyperhive.errors import InvalidName
from hyperhive.hive import Hive
from hyperhive.runtime import record
from hyperhive.settings import Local


@pytest.fixture
def worker(home, runtime):
    create_agent(home, "worker", runtime, "operator")
    set_deployed(home, "worker", "r1")
    return "worker"


def make(home, supervised):
    rt = StandIn(supervised)
    broker = Broker(home)
    return Supervisor(Hive(home, rt), broker), rt, broker


def system_messages(broker, to):
    return [m for m in broker.inbox(to) if m["from"] == "system"]


def test_a_crash_is_told_with_the_log_tail_and_restarted_after_a_backoff(home, worker, monkeypatch):
    sup, rt, broker = make(home, supervised=True)
    sup.start()
    assert rt.on_exit == sup.exited and rt.calls == [("start", "worker")]
    rt.calls.clear()

    rt.on_exit("worker", -9)
    (m,) = system_messages(broker, "manager")
    assert m["body"].splitlines() == [
        "container_crash: worker",
        "The harness of agent worker exited unexpectedly (killed by SIGKILL); "
        "it is restarted in 5 s.",
        "Last 3 lines of its log:",
        "worker line 0",
        "worker line 1",
        "worker line 2",
    ]
    sup.sync()
    assert rt.calls == []  # waiting out the backoff
    rt.on_exit("worker", 1)
    assert len(system_messages(broker, "manager")) == 1  # the second of an episode: logged
    rt.on_exit("worker", 1)
    again = system_messages(broker, "manager")[1]["body"]
    assert "(exit status 1), 3 times in a row; it is restarted in 20 s." in again
    assert "Further crashes are only logged until it stays up 10 minutes" in again
    rt.on_exit("worker", 1)
    assert len(system_messages(broker, "manager")) == 2  # a crash loop is told twice only
    set_deployed(home, "worker", "r2")  # a new deploy: no waiting
    sup.sync()
    assert rt.calls == [("start", "worker")]
    rt.on_exit("worker", 1)  # and a new episode: told again, backoff from the start
    assert "restarted in 5 s." in system_messages(broker, "manager")[2]["body"]
    set_deployed(home, "worker", "r1")
    now = supervisor.time.time()
    monkeypatch.setattr(supervisor.time, "time", lambda: now + 6)  # the backoff is over
    rt.calls.clear()
    sup.sync()
    assert rt.calls == [("start", "worker")]


def test_the_backoff_doubles_from_the_setting_up_to_five_minutes():
    assert [supervisor.backoff(5.0, n) for n in range(1, 9)] == [
        5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0,
    ]  # fmt: skip
    assert supervisor.backoff(0.2, 3) == 0.8
    assert supervisor.backoff(5.0, 5000) == 300.0  # days of a crash loop: no overflow


def test_restart_seconds_sets_the_first_wait_and_the_sync_period(home, worker, monkeypatch):
    """`[local] restart_seconds` and `sync_seconds` (the test daemons run with short ones):
    the crash report names the wait, the sync honours it, the scheduler gets the period."""
    rt, broker = StandIn(True), Broker(home)
    sup = Supervisor(Hive(home, rt), broker, Local(restart_seconds=0.5, sync_seconds=2.0))
    assert [job[:2] for job in sup.jobs()] == [("agents", 2.0)]
    sup.start()
    rt.calls.clear()
    now = supervisor.time.time()
    monkeypatch.setattr(supervisor.time, "time", lambda: now)
    for _ in range(3):
        rt.on_exit("worker", 1)
    told = [m["body"] for m in system_messages(broker, "manager")]
    assert "it is restarted in 0.5 s." in told[0] and "it is restarted in 2 s." in told[1]
    monkeypatch.setattr(supervisor.time, "time", lambda: now + 1.9)
    sup.sync()
    assert rt.calls == []  # the third crash in a row waits 2 s
    monkeypatch.setattr(supervisor.time, "time", lambda: now + 2.1)
    sup.sync()
    assert rt.calls == [("start", "worker")]


def test_the_managers_crash_goes_to_the_operator(home, worker):
    set_deployed(home, "manager", "m1")
    sup, rt, broker = make(home, supervised=True)
    sup.exited("manager", -15)
    (m,) = system_messages(broker, "operator")
    assert m["body"].startswith("container_crash: manager\n")


def test_stop_stops_what_it_started_and_a_late_exit_is_not_restarted(home, worker):
    sup, rt, broker = make(home, supervised=True)
    sup.start()
    sup.stop()
    assert rt.calls == [("start", "worker"), ("stop", "worker")]
    sup.exited("worker", 0)
    assert "restarted" not in system_messages(broker, "manager")[0]["body"]
    sup.sync()
    assert rt.calls[-1] == ("stop", "worker")  # nothing starts any more


def test_agents_gone_are_stopped(home, worker):
    sup, rt, broker = make(home, supervised=True)
    sup.start()
    record.forget(home, "worker")  # as a destroy does
    sup.sync()
    assert rt.calls == [("start", "worker"), ("stop", "worker")]


def test_unsupervised_runtimes_are_polled_for_containers_that_went_down(home, worker):
    sup, rt, broker = make(home, supervised=False)
    sup.start()
    assert rt.calls == [] and rt.on_exit is None  # containers run on their own
    assert [job[:2] for job in sup.jobs()] == [("agents", supervisor.POLL_SECONDS)]
    sup.check()
    assert system_messages(broker, "manager") == []
    rt.states["worker"] = "down"
    sup.check()
    sup.check()  # told once, not at every poll
    (m,) = system_messages(broker, "manager")
    assert m["body"].startswith(
        "container_crash: worker\nThe container of agent worker went down unexpectedly."
    )


def test_a_status_that_cannot_be_told_does_not_hide_a_crash(home, worker):
    sup, rt, broker = make(home, supervised=False)
    sup.check()
    rt.states["worker"] = "unknown"  # `nixos-container status` failed this once
    sup.check()
    rt.states["worker"] = "down"
    sup.check()
    (m,) = system_messages(broker, "manager")
    assert "worker went down unexpectedly" in m["body"]


def test_a_crash_body_fits_a_message():
    body = crash_body("worker", "it died", ["x" * 10_000] * 1000)
    assert len(body.encode()) <= MAX_BODY
    assert body.startswith("container_crash: worker\nit died\nLast ")
    assert all(len(line) <= supervisor.MAX_LINE for line in body.splitlines())
    assert crash_body("w", "it died", []).endswith("(its log is empty)")


@pytest.mark.parametrize("name", ["system", "operator"])
def test_the_broker_names_are_no_agent_names(home, runtime, name):
    with pytest.raises(InvalidName, match="reserved"):
        create_agent(home, name, runtime, "operator")
    proc = run_cli(home.root, "agent", "create", name)
    assert proc.returncode == 1 and "reserved" in proc.stderr
    assert not home.agent_dir(name).exists()


def test_the_daemons_stop_signals_every_harness_before_it_waits_for_one(
    home, runtime, tmp_path, monkeypatch
):
    """Harnesses that take their time to exit (a turn winding down) are stopped together:
    one by one, 200 of them outlasted the daemon's graceful stop. Each of these exits
    only once every one of them has been told to (a stop one by one would wait 10 s on
    the first, then kill it)."""
    from hyperhive.runtime import local_harness

    names = ["h1", "h2", "h3"]
    for name in names:
        create_agent(home, name, runtime, "operator")
        set_deployed(home, name, "r1")
    marks, ready, go = tmp_path / "marks", tmp_path / "ready", tmp_path / "go"
    marks.mkdir()
    ready.mkdir()
    script = tmp_path / "slow-harness"
    script.write_text(
        "#!/bin/sh\n"
        f"trap 'touch {marks}/$HYPERHIVE_AGENT; while [ ! -e {go} ]; do sleep 0.05; done;"
        " exit 0' TERM\n"
        f"touch {ready}/$HYPERHIVE_AGENT\n"  # the trap is set: a SIGTERM now is caught
        "while :; do sleep 0.05; done\n"
    )
    script.chmod(0o755)
    monkeypatch.setattr(local_harness.Harnesses, "sandboxed", lambda self: False)
    monkeypatch.setattr(local_harness.Harnesses, "argv", lambda self, name, sb=False: [str(script)])
    monkeypatch.setattr(local_harness.Harnesses, "write_etc", lambda self, name: None)
    monkeypatch.setattr(local_harness, "STOP_SECONDS", 60.0)
    sup = Supervisor(Hive(home, runtime), Broker(home))
    sup.sync()
    assert sorted(sup.started) == names and all(runtime.harnesses.is_running(n) for n in names)
    deadline = time.monotonic() + 30
    while len(list(ready.iterdir())) < 3:
        assert time.monotonic() < deadline, sorted(ready.iterdir())
        time.sleep(0.02)

    done = threading.Thread(target=sup.stop)
    done.start()
    deadline = time.monotonic() + 30
    while len(list(marks.iterdir())) < 3:  # every harness was told before any exits
        assert time.monotonic() < deadline, sorted(marks.iterdir())
        time.sleep(0.02)
    go.touch()
    done.join(timeout=30)
    assert not done.is_alive()
    assert sorted(p.name for p in marks.iterdir()) == names
    assert not any(runtime.harnesses.is_running(n) for n in names) and not sup.started


def test_the_daemon_does_not_wait_for_its_agents_to_start(home, worker):
    """`start(wait=False)`: the first start of every agent runs on its own thread, so the
    daemon serves meanwhile; a stop in the middle stops what was started."""
    sup, rt, broker = make(home, supervised=True)
    release = threading.Event()
    started = rt.start
    rt.start = lambda name, emit=None: release.wait(30) and started(name)
    sup.start(wait=False)
    assert sup.starter.is_alive() and rt.calls == []  # still starting: start() returned
    release.set()
    sup.starter.join(timeout=30)
    assert rt.calls == [("start", "worker")] and sup.started == {"worker"}
    sup.stop()
    assert rt.calls[-1] == ("stop", "worker")

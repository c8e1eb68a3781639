"""The daemon's scheduler: jobs run, a failing run is logged and the job goes on, bad
schedules are refused, and stop waits for a running job."""

import logging
import threading
from datetime import datetime, timedelta

import pytest

from hyperhive.daemon.scheduler import Scheduler
from hyperhive.errors import BadInput

WAIT = 30  # seconds: a generous bound for things that happen within milliseconds


@pytest.fixture
def scheduler():
    s = Scheduler()
    yield s
    s.stop()


def test_a_failing_run_is_logged_and_the_job_runs_again(scheduler, caplog):
    runs = []
    again = threading.Event()

    def job():
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("disk full")
        again.set()

    scheduler.add_every("flaky", 0.05, job)
    scheduler.start()
    assert again.wait(WAIT)
    failures = [r for r in caplog.records if r.name == "hyperhive.scheduler" and r.exc_info]
    assert failures and "job flaky failed" in failures[0].getMessage()
    assert "disk full" in caplog.text


def test_daily_jobs_run_at_the_given_local_time(scheduler):
    scheduler.add_daily("retention", "04:15", lambda: None)
    assert scheduler.next_run("retention") is None  # computed at start
    scheduler.start()
    at = scheduler.next_run("retention")
    now = datetime.now(at.tzinfo)
    assert (at.hour, at.minute, at.second) == (4, 15, 0)
    assert now < at <= now + timedelta(days=1)
    assert scheduler.next_run("nope") is None


def test_a_daily_run_missed_while_down_happens_at_start(scheduler):
    ran = threading.Event()
    scheduler.add_daily("missed", "04:15", ran.set, datetime.now() - timedelta(days=2))
    scheduler.add_daily("kept", "04:15", lambda: None, datetime.now())
    scheduler.start()
    assert ran.wait(WAIT)
    at = scheduler.next_run("kept")
    assert (at.hour, at.minute) == (4, 15)  # ran since its last due time: no catch-up


@pytest.mark.parametrize("at", ["4:15", "24:00", "12:60", "noon", "", "04:15:00"])
def test_a_bad_time_is_refused(scheduler, at):
    with pytest.raises(BadInput, match="HH:MM"):
        scheduler.add_daily("retention", at, lambda: None)


def test_bad_periods_and_duplicate_ids_are_refused(scheduler):
    for seconds in (0, -1):
        with pytest.raises(BadInput, match="more than 0 s"):
            scheduler.add_every("sample", seconds, lambda: None)
    scheduler.add_every("sample", 60, lambda: None)
    with pytest.raises(BadInput, match="already scheduled"):
        scheduler.add_daily("sample", "03:30", lambda: None)


def test_stop_waits_for_a_running_job(caplog):
    caplog.set_level(logging.INFO)
    scheduler = Scheduler()
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def job():
        started.set()
        release.wait(WAIT)
        finished.set()

    scheduler.add_every("slow", 0.05, job)
    scheduler.start()
    assert started.wait(WAIT)
    stopper = threading.Thread(target=scheduler.stop)
    stopper.start()
    stopper.join(0.2)
    assert stopper.is_alive()  # held by the running job
    release.set()
    stopper.join(WAIT)
    assert not stopper.is_alive() and finished.is_set()
    scheduler.stop()  # stopping twice is harmless
    # APScheduler's per-run INFO lines stay out of the daemon's log.
    assert not [r for r in caplog.records if r.name.startswith("apscheduler") and r.levelno < 30]

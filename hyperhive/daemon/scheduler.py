"""The daemon's periodic jobs (retention, telemetry): an APScheduler BackgroundScheduler
behind a small API. `Services` in `up.py` owns one, adds its jobs and starts and stops it.

A job that raises is logged with its traceback and runs again at its next time: one bad
run never ends the job or the scheduler. Runs of one job never overlap, and runs missed
while the process was busy or suspended collapse into one run as soon as it can.
"""

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from hyperhive.errors import BadInput
from hyperhive.settings import HH_MM

log = logging.getLogger("hyperhive.scheduler")

# APScheduler logs every run at INFO ("Running job …"): a flood with per-minute jobs.
# Its warnings (a missed run) still show.
logging.getLogger("apscheduler").setLevel(logging.WARNING)


class Scheduler:
    def __init__(self) -> None:
        self._sched = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
        )

    def add_daily(
        self,
        job_id: str,
        at: str,
        func: Callable[[], object],
        last_run: datetime | None = None,
    ) -> None:
        """Run `func` every day at `at` ("HH:MM", 24 h, the daemon's local time). Given
        the job's `last_run`, a run missed while the daemon was down happens at once
        (a daemon that is never up at `at` still prunes, once per start)."""
        match = HH_MM.fullmatch(at)
        if not match:
            raise BadInput(f"job {job_id}: the time must be HH:MM (24 h), not {at!r}")
        hour, minute = (int(g) for g in match.groups())
        now = datetime.now()
        due = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if due > now:
            due -= timedelta(days=1)
        missed = last_run is not None and last_run < due
        self._add(job_id, CronTrigger(hour=hour, minute=minute), func, now if missed else None)
        log.info("job %s: daily at %s%s", job_id, at, " (missed: runs now)" if missed else "")

    def add_every(self, job_id: str, seconds: float, func: Callable[[], object]) -> None:
        """Run `func` every `seconds`, the first time `seconds` after the start."""
        if not seconds > 0:
            raise BadInput(f"job {job_id}: the period must be more than 0 s, not {seconds!r}")
        self._add(job_id, IntervalTrigger(seconds=seconds), func)
        log.info("job %s: every %g s", job_id, seconds)

    def _add(
        self, job_id: str, trigger, func: Callable[[], object], first: datetime | None = None
    ) -> None:
        if self._sched.get_job(job_id) is not None:
            raise BadInput(f"a job {job_id!r} is already scheduled")

        def run() -> None:
            try:
                func()
            except Exception:
                log.exception("job %s failed; it runs again at its next time", job_id)

        extra = {"next_run_time": first} if first else {}
        self._sched.add_job(run, trigger, id=job_id, name=job_id, **extra)

    def next_run(self, job_id: str) -> datetime | None:
        """When the job runs next (None: no such job; before `start` too, the time is
        computed only then)."""
        job = self._sched.get_job(job_id)
        return getattr(job, "next_run_time", None) if job else None

    def start(self) -> None:
        self._sched.start()

    def stop(self) -> None:
        """Stop scheduling and wait for running jobs to finish."""
        if self._sched.running:
            self._sched.shutdown(wait=True)

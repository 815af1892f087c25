"""``python -m app cron``: the process that fires the schedules (``app.automation``), on rq's
own cron scheduler (``rq.cron.CronScheduler``).

rq's scheduler keeps a list of cron jobs, sleeps until the next one is due, "enqueues" it, and
registers itself, its heartbeats and the jobs it fired in Redis (``rq:cron_scheduler:*``,
``rq:cron_job:<name>:jobs``), where rq's monitoring finds them. Regio adapts two things:

- **The jobs come from the automation database**, not from a config file: before each look
  (``enqueue_jobs``) the scheduler reads the enabled schedules again (``sync``), keeping the
  timing of those unchanged, and it never sleeps more than ``SYNC_SECONDS``, so a schedule made
  or changed on the web is picked up within that time. The schedules live in SQLite and each
  firing is recorded there first (``automation.claim_tick``): a restarted cron process (or the
  whole service after a restart) goes on where it was, firing once a tick it missed while down.
- **Firing queues the run itself** (``ScheduleJob.enqueue`` calls ``automation.fire_schedule``):
  rq's ``CronJob.enqueue`` would queue a call of a function, pickled, for a worker to make the
  run later; Regio's workers read JSON only, and a run queued at the tick is on time even when
  every worker is busy. The run's job id is still recorded in rq's cron history.

Ctrl-C or SIGTERM stops it (rq's handlers). Start it next to the workers, one per service (a
second one on another host is harmless: ticks are claimed in the database).
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from rq import cron_job_registry
from rq.cron import CronJob, CronScheduler

from app import automation, jobs
from app.plumbing import iso, parse_time

log = logging.getLogger("regio.cron")

#: Longest sleep between two looks at the schedules (a new schedule waits at most this long).
SYNC_SECONDS = 1.0


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def signature(schedule: automation.Schedule) -> tuple[Any, ...]:
    """What makes a schedule's timing: a change of any of these makes its job again."""
    s = schedule
    return (s.cron, s.interval, s.timezone, s.last_fired, s.updated, s.enabled)


class ScheduleJob(CronJob):
    """One schedule as a cron job of rq's scheduler: due at ``automation.pending_tick``."""

    def __init__(self, schedule: automation.Schedule, values: Mapping[str, Any]) -> None:
        super().__init__(
            queue_name=jobs.QUEUE_NAME,
            func=automation.fire_schedule,
            args=(schedule.id,),
            cron=schedule.cron if not schedule.interval else None,
            interval=schedule.interval or None,
            name=f"regio-schedule-{schedule.id}",
        )
        self.schedule = schedule
        self.values = values
        if schedule.last_fired:
            self.latest_enqueue_time = parse_time(schedule.last_fired)
        self.next_enqueue_time = automation.pending_tick(schedule, _now())

    def should_run(self) -> bool:
        return self.next_enqueue_time is not None and _now() >= self.next_enqueue_time

    def get_next_enqueue_time(self) -> dt.datetime:
        return automation.pending_tick(self.schedule, _now())

    def enqueue(self, connection: Any) -> Any:  # type: ignore[override]
        """Fire the schedule at its due tick: the run is queued here (see the module doc)."""
        tick = self.next_enqueue_time or _now()
        try:
            run = automation.fire_schedule(self.values, self.schedule.id, tick, connection)
        except Exception:  # a database or Redis hiccup: logged, the next tick comes anyway
            log.exception("schedule %s failed to fire", self.schedule.id)
            run = None
        self.schedule = replace(self.schedule, last_fired=iso(tick))
        if run is not None:
            stamp = _now().timestamp()
            with connection.pipeline() as pipeline:
                pipeline.zadd(self.job_history_key, {run.job_id: stamp})
                cron_job_registry.add(self.name, pipeline, enqueue_timestamp=stamp)
                pipeline.execute()
        return run


class RegioCron(CronScheduler):
    """rq's cron scheduler with Regio's schedules as its jobs (see the module docstring)."""

    def __init__(self, connection: Any, values: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(connection=connection, **kwargs)
        self.values = values
        self.db = automation.db_path(values["SESSIONS"])
        self._by_id: dict[str, ScheduleJob] = {}

    def sync(self) -> None:
        """Take the enabled schedules from the database; unchanged ones keep their job."""
        try:
            schedules = [s for s in automation.list_schedules(self.db) if s.enabled]
        except Exception:  # e.g. the database is locked for longer than its busy timeout
            log.exception("could not read the schedules; keeping the ones known")
            return
        jobs_by_id: dict[str, ScheduleJob] = {}
        for schedule in schedules:
            job = self._by_id.get(schedule.id)
            if job is None or signature(job.schedule) != signature(schedule):
                try:
                    job = ScheduleJob(schedule, self.values)
                except Exception:  # e.g. a time zone this host does not know
                    log.exception("schedule %s cannot be timed; left out", schedule.id)
                    continue
                if schedule.id not in self._by_id:
                    log.info(
                        "schedule %s: %s on session %s, next at %s",
                        schedule.id, schedule.script, schedule.session_id,
                        iso(job.next_enqueue_time),
                    )  # fmt: skip
            jobs_by_id[schedule.id] = job
        for gone in set(self._by_id) - set(jobs_by_id):
            log.info("schedule %s removed or disabled", gone)
        self._by_id = jobs_by_id
        self._cron_jobs = list(jobs_by_id.values())

    def enqueue_jobs(self) -> list[CronJob]:
        self.sync()
        return super().enqueue_jobs()

    def calculate_sleep_interval(self) -> float:
        return min(super().calculate_sleep_interval(), SYNC_SECONDS)


def main(values: Mapping[str, Any]) -> int:
    """Run the cron process until Ctrl-C or SIGTERM."""
    import redis

    logging.basicConfig(level=logging.INFO, format="[regio cron] %(message)s", stream=sys.stderr)
    if not values["REDIS_URL"]:
        print(
            "error: REGIO_REDIS_URL is not set: `make run` starts the cron process with it",
            file=sys.stderr,
        )
        return 2
    scheduler = RegioCron(redis.Redis.from_url(values["REDIS_URL"]), values)
    scheduler.start()
    return 0

"""The reconciler: settles the runs that the queue or their worker lost.

The run record (``app.runs``) is the source of truth and rq only carries a run to a worker, so a
worker that dies, a Redis restarted without its snapshot or a job rq gave up on would leave a run
QUEUED or EXECUTING forever. ``reconcile`` finds them; ``start_reconciler_thread`` runs it in each
web process at start-up and every ``RECONCILE_EVERY`` seconds. It is cheap (one SELECT of the
active runs, one Redis pipeline) and safe to run concurrently on several processes and hosts,
since every change is a conditional update of the record.

- EXECUTING runs whose heartbeat key (``app.runner.ALIVE_KEY``) expired, or whose rq job failed,
  was stopped or vanished, become ERROR "worker lost (...)" (ABORTED if a cancel was pending);
  leftover processes of the run on this host are killed. They are not re-run: a half-done run
  may have written products.
- QUEUED runs whose job vanished from Redis are queued again, up to ``MAX_REQUEUES`` times, since
  nothing of them ran yet; QUEUED runs whose job failed before the script started (e.g. the
  worker cannot import ``app.jobs``) become ERROR with rq's reason. Runs younger than
  ``queued_grace`` seconds are left alone (being enqueued right now).

It reads the jobs through ``app.jobs`` (``job_states``) and queues again with it
(``enqueue_run``): it does not import rq. With the default ``HEARTBEAT_TTL`` (10 s) and
``RECONCILE_EVERY`` (15 s), a run whose worker was killed is settled within 25 s.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis

from app import jobs, runs
from app.plumbing import now, parse_time
from app.runner import ALIVE_KEY, CANCEL_KEY, HEARTBEAT_TTL, kill_run_processes
from app.runs import ABORTED, ERROR, EXECUTING, QUEUED, Run

log = logging.getLogger("regio.reconciler")

RECONCILE_EVERY = 15.0  # seconds between two passes of the reconciler thread
QUEUED_GRACE = 30.0  # seconds a new QUEUED run is left alone (it is being enqueued)
MAX_REQUEUES = 3  # times a QUEUED run whose job vanished is queued again before it fails


def reconcile(
    db_path: Path | str,
    redis_conn: redis.Redis,
    *,
    queue_name: str = jobs.QUEUE_NAME,
    scripts_dir: Path | str | None = None,
    queued_grace: float = QUEUED_GRACE,
    heartbeat_ttl: float = HEARTBEAT_TTL,
) -> list[str]:
    """Settle runs the queue and the workers lost (see the module docstring); returns their ids."""
    active = runs.list_active(db_path)
    if not active:
        return []
    states = jobs.job_states(redis_conn, [r.job_id for r in active])
    with redis_conn.pipeline(transaction=False) as pipe:
        for run in active:
            pipe.exists(ALIVE_KEY.format(run.id))
            pipe.exists(CANCEL_KEY.format(run.id))
        flags = pipe.execute()
    changed = []
    for i, (run, job) in enumerate(zip(active, states, strict=True)):
        alive, cancelled = bool(flags[2 * i]), bool(flags[2 * i + 1])
        if run.phase == EXECUTING:
            reason = _lost_reason(run, job, alive, heartbeat_ttl)
            if reason and _settle(db_path, redis_conn, run, f"worker lost ({reason})", cancelled):
                changed.append(run.id)
            continue
        if _age(run.created) < queued_grace:
            continue
        if job is None:
            if run.requeues < MAX_REQUEUES:
                if _requeue(db_path, redis_conn, run, queue_name, scripts_dir, heartbeat_ttl):
                    changed.append(run.id)
                continue
            reason = f"the queue lost this run {run.requeues + 1} times"
        else:
            reason = _queued_problem(job, alive, queued_grace)
        if reason and _settle(db_path, redis_conn, run, reason, cancelled):
            changed.append(run.id)
    return changed


def _lost_reason(
    run: Run, job: jobs.JobState | None, alive: bool, heartbeat_ttl: float
) -> str | None:
    if job is None:
        return "its job vanished from Redis"
    if job.failed:
        return job.failure()
    if job.finished:
        return "the job ended without recording the run's outcome"
    if not alive:
        return (
            f"no heartbeat from {run.worker or 'its worker'} on {run.host} for {heartbeat_ttl:g} s"
        )
    return None


def _queued_problem(job: jobs.JobState, alive: bool, grace: float) -> str | None:
    if job.failed:
        return f"the worker could not start the run: {job.failure()}"
    if job.finished:
        return "the job ended without running the script"
    stuck = job.started and not alive and job.started_at
    if stuck and _age(job.started_at) > grace:
        return "worker lost before the script started"
    return None


def _settle(db_path: Path | str, conn: redis.Redis, run: Run, reason: str, cancelled: bool) -> bool:
    """Close a lost run (ABORTED if a cancel was pending, else ERROR); False if it moved meanwhile."""
    phase, error = (ABORTED, "cancelled (its worker was gone)") if cancelled else (ERROR, reason)
    try:
        runs.finish(
            db_path, run.id, phase, expect={"phase": run.phase},
            ended=now(), error=error,
            failing_stage=run.stage if phase == ERROR else None,
            log_tail=runs.log_tail(run.run_dir) or None,
        )  # fmt: skip
    except runs.PhaseError:
        return False
    runs.append_log(run.run_dir, f"{phase}: {error}")
    if run.host == socket.gethostname():
        kill_run_processes(run.id)
    conn.delete(ALIVE_KEY.format(run.id), CANCEL_KEY.format(run.id))
    log.warning("run %s settled %s: %s", run.id, phase, error)
    return True


def _requeue(
    db_path: Path | str,
    conn: redis.Redis,
    run: Run,
    queue_name: str,
    scripts_dir: Path | str | None,
    heartbeat_ttl: float,
) -> bool:
    """Queue a QUEUED run again whose job vanished; only one of concurrent reconcilers does it."""
    try:
        run = runs.update(
            db_path, run.id, expect={"phase": QUEUED, "requeues": run.requeues},
            requeues=run.requeues + 1,
        )  # fmt: skip
    except runs.PhaseError:
        return False
    jobs.enqueue_run(
        run, conn, db_path, queue_name, scripts_dir=scripts_dir, heartbeat_ttl=heartbeat_ttl
    )
    runs.append_log(run.run_dir, "the queue lost this run (Redis restarted?); queued again")
    log.warning("run %s: its job vanished from the queue; queued again", run.id)
    return True


def _age(timestamp: str | dt.datetime) -> float:
    """Seconds since an ISO 8601 time or a datetime (without a time zone: UTC, as rq's)."""
    when = parse_time(timestamp) if isinstance(timestamp, str) else timestamp
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return (dt.datetime.now(dt.UTC) - when).total_seconds()


class ReconcilerThread(threading.Thread):
    """Calls ``reconcile`` now and every ``interval`` seconds until ``stop()``."""

    def __init__(
        self,
        db_path: Path | str,
        redis_conn: redis.Redis,
        interval: float = RECONCILE_EVERY,
        **options: Any,
    ) -> None:
        super().__init__(name="regio-reconciler", daemon=True)
        self.db_path = db_path
        self.redis_conn = redis_conn
        self.interval = interval
        self.options = options
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                reconcile(self.db_path, self.redis_conn, **self.options)
            except Exception:  # a Redis or disk hiccup must not end the thread
                log.exception("reconciling runs failed; trying again in %s s", self.interval)
            self.stopping.wait(self.interval)

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.join(timeout)


def start_reconciler_thread(app: Any, interval: float = RECONCILE_EVERY) -> ReconcilerThread:
    """Start the reconciler for a Flask app (kept in ``app.extensions["regio.reconciler"]``).

    Call it in each web process after any fork (threads do not survive a fork): with gunicorn,
    from ``create_app`` without ``--preload``, or from a ``post_fork`` hook.
    """
    values: Mapping[str, Any] = app.extensions["regio.settings"]
    thread = ReconcilerThread(
        runs.db_path(values["SESSIONS"]), app.extensions["regio.redis"], interval
    )
    app.extensions["regio.reconciler"] = thread
    thread.start()
    return thread

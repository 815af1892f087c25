"""The rq glue of runs: enqueue, the job entry point, the worker, cancel. The one module that
imports rq.

The run record (``app.runs``) is the source of truth; rq only carries a run to a worker:

- ``enqueue`` queues a QUEUED run (``runs.create``) as an rq job whose id is the run's ``job_id``;
- ``execute`` is the job: rq runs it in its work horse, a process forked per job by ``rq worker``,
  and it hands the run to the process supervisor (``app.runner.Runner``), which starts the script,
  watches it and closes the record;
- ``RegioWorker`` and ``worker_command``: start workers with ``worker_command``. rq's own
  heartbeats are short (``--worker-ttl``, ``--job-monitoring-interval``), and its worker class
  (``RegioWorker``) preloads this module (and through it the runner) before rq forks a horse per
  job, which keeps the cost of a run over its script to a few tens of milliseconds
  (``bench/runs.py``). It also keeps the worker's warm server (``app.warm``, ``REGIO_WARM``):
  started with the worker, restarted before a job if it died, stopped with the worker; Python
  scripts then start without paying their imports (``bench/run_to_products.py``). A job never
  depends on it: without one, its run starts cold;
- ``cancel``: a QUEUED run becomes ABORTED at once and its rq job is cancelled; an EXECUTING run
  gets the cancel key (``app.runner.CANCEL_KEY``) and its runner ends it ABORTED within
  ``runner.POLL`` + ``runner.KILL_GRACE`` seconds. The record's conditional updates settle the
  races (a worker picking the job up while it is being cancelled finds it ABORTED and does
  nothing);
- what the rest of Regio reads of rq: ``job_states`` (for the reconciler, ``app.reconciler``),
  ``worker_names`` and ``queue_length`` (for the status pages).

Jobs carry JSON, never pickle (``SERIALIZER``): a job is the name of ``execute`` and a few
strings and numbers, and a worker that unpickled what it found in Redis would run any code whoever
can write to Redis chose. Every queue and job handle here uses it, ``worker_command`` passes it
to ``rq worker`` (``--serializer``) and ``RegioWorker`` uses it whatever it is given, so a worker
started without the option still reads JSON. Other code that builds rq queues or workers on
Regio's Redis (tests, scripts) takes ``SERIALIZER`` from here (or ``queue``).

JSON alone does not make a job harmless: an rq job names the function to call, so whoever can
write to Redis could still queue ``os.system``. ``RegioWorker`` runs its jobs as ``RegioJob``,
which calls nothing but ``execute`` (``ALLOWED_FUNCTIONS``) and no callback: any other job fails
("refused") without running. Redis still needs a password on a shared network (README, "More
workers, more hosts").
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis
from rq import Queue, get_current_job
from rq import Worker as _RqWorker
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from app import catalog, runs, warm
from app.plumbing import now
from app.runner import CANCEL_KEY, HEARTBEAT_TTL, Runner
from app.runs import ABORTED, QUEUED, Run

QUEUE_NAME = "regio"
CANCEL_TTL = 24 * 3600  # a cancel request nobody picked up is forgotten after a day
JOB_TIMEOUT_MARGIN = 60  # rq's own job timeout: a backstop this much above the script's limit
RESULT_TTL = 24 * 3600
FAILURE_TTL = 7 * 24 * 3600
WORKER_TTL = 30  # rq worker registration TTL when idle (rq's default: 420 s)
JOB_MONITORING_INTERVAL = 5  # rq worker heartbeat while a job runs (rq's default: 30 s)

_GONE = frozenset(s.value for s in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED))

#: How jobs, their results and metadata are stored in Redis: JSON (rq's default is pickle).
SERIALIZER = JSONSerializer
SERIALIZER_PATH = f"{JSONSerializer.__module__}.{JSONSerializer.__qualname__}"
#: The functions a Regio worker calls; every other job it finds in its queue fails unrun.
ALLOWED_FUNCTIONS = frozenset({"app.jobs.execute"})


class JobRefused(RuntimeError):
    """A job in Regio's queue that is not a Regio run (``ALLOWED_FUNCTIONS``)."""


class RegioJob(Job):
    """An rq job that calls only ``ALLOWED_FUNCTIONS`` (by name, no bound instance) and never
    imports a callback named in Redis (Regio sets none)."""

    @property
    def func(self):
        name = self.func_name
        if name not in ALLOWED_FUNCTIONS or self.instance is not None:
            raise JobRefused(f"job {self.id} calls {name!r}, which is not a Regio job: refused")
        return super().func

    @property
    def success_callback(self):
        return None

    @property
    def failure_callback(self):
        return None

    @property
    def stopped_callback(self):
        return None


class RegioWorker(_RqWorker):
    """rq's forking worker, reading jobs as JSON (``SERIALIZER``) whatever serializer it is
    given (``rq worker`` passes pickle unless told otherwise), and running them as ``RegioJob``
    (only ``execute``) whatever job class it is given.

    Naming it on the command line (``--worker-class``) makes the worker import this module (and
    Flask, sqlite-utils...) once, before it forks: every work horse starts with them loaded,
    which saves ~0.3 s per run (see bench/runs.py)."""

    def __init__(self, queues, *args, **kwargs) -> None:
        kwargs["serializer"] = SERIALIZER
        kwargs["job_class"] = RegioJob
        if isinstance(queues, Queue | str):
            queues = [queues]
        # rq's command line builds its queues with its own serializer: rebuild them by name
        names = [q.name if isinstance(q, Queue) else q for q in queues]
        super().__init__(names, *args, **kwargs)

    def work(self, *args, **kwargs):
        """rq's loop, with the warm server running beside it (stopped when the loop ends)."""
        ensure_warm_server(self.log)
        try:
            return super().work(*args, **kwargs)
        finally:
            if warm.CURRENT is not None:
                warm.CURRENT.stop()
                warm.CURRENT = None

    def fork_work_horse(self, job, queue):
        """Restart the warm server if it died, then fork the horse (which inherits it)."""
        ensure_warm_server(self.log)
        return super().fork_work_horse(job, queue)


def _bwrap_works(mode: str) -> bool:
    """Whether scripts run in bubblewrap here (warm starts need it)."""
    from app import sandbox

    bwrap = sandbox.find_bwrap() if mode != "off" else None
    return bwrap is not None and sandbox.probe(bwrap) is None


def ensure_warm_server(log=None) -> warm.Zygote | None:
    """Start (or restart) this worker's warm server when the settings ask for it
    (``REGIO_WARM=auto``) and scripts run in bubblewrap; returns it, or None."""
    from app import settings

    try:
        config = settings.load()
    except settings.SettingError:
        return None  # the runner reports bad settings on the run
    if config["WARM"] == "off" or not _bwrap_works(config["SANDBOX"]):
        if warm.CURRENT is not None:
            warm.CURRENT.stop()
            warm.CURRENT = None
        return None
    if warm.CURRENT is None:
        preload = config["WARM_PRELOAD"].replace(",", " ").split() or warm.DEFAULT_PRELOAD
        warm.CURRENT = warm.Zygote(preload)
    if not warm.CURRENT.alive():
        if warm.CURRENT.start():
            if log is not None:
                log.info(
                    "warm server %s started (pid %s)", warm.CURRENT.starts, warm.CURRENT.proc.pid
                )
        elif log is not None:
            log.warning("%s: Python scripts start cold", warm.CURRENT.problem)
    return warm.current()


def queue(redis_conn: redis.Redis, queue_name: str = QUEUE_NAME) -> Queue:
    """The rq queue of Regio runs, with Regio's serializer."""
    return Queue(queue_name, connection=redis_conn, serializer=SERIALIZER)


def worker_command(
    redis_url: str, name: str | None = None, queue_name: str = QUEUE_NAME
) -> list[str]:
    """The command line of an rq worker for Regio runs: preloaded, with short heartbeats."""
    command = [sys.executable, "-m", "rq.cli", "worker", "--url", redis_url,
               "--worker-class", "app.jobs.RegioWorker",
               "--serializer", SERIALIZER_PATH,
               "--worker-ttl", str(WORKER_TTL),
               "--job-monitoring-interval", str(JOB_MONITORING_INTERVAL)]  # fmt: skip
    if name:
        command += ["--name", name]
    return [*command, queue_name]


# --------------------------------------------------------------------------------- enqueue


def enqueue(
    run: Run,
    script: catalog.Script,
    redis_conn: redis.Redis,
    db_path: Path | str,
    queue_name: str = QUEUE_NAME,
    *,
    scripts_dir: Path | str | None = None,
    heartbeat_ttl: float = HEARTBEAT_TTL,
) -> Job:
    """Queue a QUEUED run (``runs.create``) for the workers; returns the rq job.

    ``scripts_dir`` is where the worker looks the script up; None (the default) means the worker's
    own ``REGIO_SCRIPTS``, the right thing when workers run on other hosts.
    """
    if script.name != run.script:
        raise ValueError(f"run {run.id} is a run of {run.script!r}, not of {script.name!r}")
    return enqueue_run(
        run, redis_conn, db_path, queue_name,
        scripts_dir=scripts_dir, heartbeat_ttl=heartbeat_ttl, time_limit=script.time_limit,
    )  # fmt: skip


def enqueue_run(
    run: Run,
    redis_conn: redis.Redis,
    db_path: Path | str,
    queue_name: str = QUEUE_NAME,
    *,
    scripts_dir: Path | str | None = None,
    heartbeat_ttl: float = HEARTBEAT_TTL,
    time_limit: int | None = None,
) -> Job:
    """Put a QUEUED run's job (id ``run.job_id``) on the queue, without checking its script:
    ``enqueue`` for a new run, the reconciler (``app.reconciler``) for a run whose job vanished.
    rq's own timeout is the run's time limit (else ``time_limit``, else an hour) plus
    ``JOB_TIMEOUT_MARGIN``: a backstop, the runner enforces the limit."""
    time_limit = run.time_limit or time_limit or 3600
    return queue(redis_conn, queue_name).enqueue_call(
        execute,
        args=(run.id, str(db_path)),
        kwargs={
            "scripts_dir": str(scripts_dir) if scripts_dir else None,
            "heartbeat_ttl": heartbeat_ttl,
        },
        timeout=time_limit + JOB_TIMEOUT_MARGIN,
        result_ttl=RESULT_TTL,
        failure_ttl=FAILURE_TTL,
        description=f"regio run {run.id} ({run.script} {run.script_version})",
        job_id=run.job_id,
    )


# ------------------------------------------------------------------------------ the job


def execute(
    run_id: str,
    db_path: str,
    scripts_dir: str | None = None,
    heartbeat_ttl: float = HEARTBEAT_TTL,
) -> str:
    """The rq job: run a QUEUED run's script to its end (``app.runner.Runner``); returns the
    run's final phase."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("app.jobs.execute runs inside an rq worker (see app.jobs.enqueue)")
    if scripts_dir is None:
        from app import settings

        scripts_dir = str(settings.load()["SCRIPTS"])
    runner = Runner(
        run_id,
        Path(db_path),
        job.connection,
        job.worker_name or "",
        Path(scripts_dir),
        heartbeat_ttl,
    )
    return runner.run()


# ----------------------------------------------------------------------------------- cancel


def cancel(run_id: str, db_path: Path | str, redis_conn: redis.Redis, *, wait: float = 0.0) -> Run:
    """Cancel a run; returns its record (waiting up to ``wait`` seconds for it to end).

    A QUEUED run is ABORTED at once and its job removed from the queue. An EXECUTING run gets a
    cancel request; its runner kills the script and ends the run ABORTED. A finished run is left
    as it is.
    """
    run = runs.get(db_path, run_id)
    if run.terminal:
        return run
    redis_conn.set(CANCEL_KEY.format(run_id), "1", ex=CANCEL_TTL)
    try:
        run = runs.finish(
            db_path, run_id, ABORTED, expect={"phase": QUEUED},
            ended=now(), error="cancelled before it started",
        )  # fmt: skip
    except runs.PhaseError:
        run = runs.get(db_path, run_id)  # EXECUTING: the runner acts on the request
    else:
        with contextlib.suppress(NoSuchJobError, InvalidJobOperation):
            Job.fetch(run.job_id, connection=redis_conn, serializer=SERIALIZER).cancel()
        redis_conn.delete(CANCEL_KEY.format(run_id))
        runs.append_log(run.run_dir, "ABORTED: cancelled before it started")
        return run
    deadline = time.monotonic() + wait
    while not run.terminal and time.monotonic() < deadline:
        time.sleep(0.1)
        run = runs.get(db_path, run_id)
    return run


# ------------------------------------------------------------------------- reading rq's state


@dataclass(frozen=True)
class JobState:
    """What the reconciler needs to know of a run's rq job, in plain terms."""

    status: str | None  # rq's job status: "queued", "started", "finished", "failed"...
    started_at: dt.datetime | None  # when a worker took the job (rq's time, UTC)
    _job: Job = field(repr=False, compare=False)

    @property
    def failed(self) -> bool:
        """rq gave up on the job: it failed, was stopped or cancelled."""
        return self.status in _GONE

    @property
    def finished(self) -> bool:
        return self.status == JobStatus.FINISHED.value

    @property
    def started(self) -> bool:
        return self.status == JobStatus.STARTED.value

    def failure(self) -> str:
        """rq's reason for a failed job, its last line (e.g. 'rq job failed: Work-horse
        terminated unexpectedly'); one Redis round trip."""
        result = self._job.latest_result()
        text = (result.exc_string if result else None) or ""
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        return f"rq job {self.status}: {lines[-1] if lines else 'no reason given'}"


def job_states(redis_conn: redis.Redis, job_ids: Sequence[str | None]) -> list[JobState | None]:
    """The state of each job (None for a job Redis does not know), in one round trip."""
    found = Job.fetch_many(
        [job_id or "" for job_id in job_ids], connection=redis_conn, serializer=SERIALIZER
    )
    states: list[JobState | None] = []
    for job in found:
        if job is None:
            states.append(None)
            continue
        status = job.get_status(refresh=False)
        states.append(JobState(status.value if status else None, job.started_at, job))
    return states


def worker_names(redis_conn: redis.Redis) -> list[str]:
    """The names of the rq workers registered (alive) in this Redis."""
    return [worker.name for worker in _RqWorker.all(connection=redis_conn, serializer=SERIALIZER)]


def queue_length(redis_conn: redis.Redis, queue_name: str = QUEUE_NAME) -> int:
    """How many jobs wait in the queue."""
    return queue(redis_conn, queue_name).count

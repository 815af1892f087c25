"""Running scripts on RQ workers: enqueue, the job function, cancel, and the reconciler.

This is the only module that imports rq. The run record (``app.runs``) is the source of truth; rq
only carries a run to a worker. The job (``execute``) runs in rq's work horse, a process forked per
job by ``rq worker``; it starts the script as a subprocess and supervises it:

- the script runs in the run folder with argv ``[*script.command(), "input.json"]``, no shell (the
  parameters only ever travel in ``input.json``), stdout and stderr merged, in a session of its
  own (so its whole process group can be signalled), and with the Linux parent-death signal set
  to SIGKILL, so it cannot outlive the work horse;
- every output line goes to ``log.txt`` as soon as it is complete; ``[STAGE] name`` and
  ``[PROGRESS] k/n`` lines update the record (at once on a stage change, at most every
  ``PROGRESS_EVERY`` seconds for progress); the last ``[ERROR] message`` line, else the last line
  of text, becomes the user's error message when the script fails;
- every ``POLL`` seconds it checks the time limit, a cancel request (Redis key
  ``regio:cancel:<run_id>``) and whether the rq worker that forked the horse is still alive;
  stopping sends SIGTERM to the script's process group, then SIGKILL after ``KILL_GRACE``
  seconds. When the script's main process ends, whatever is left of its group is killed, as are
  processes that escaped the group but carry ``REGIO_RUN_ID=<run id>`` in their environment;
- it refreshes a heartbeat key ``regio:alive:<run_id>`` (TTL ``heartbeat_ttl``) and re-reads the
  record: if someone else already closed the run (a reconciler that believed it lost), it stops.

The outcome: exit code 0 -> COMPLETED; non-zero or a signal -> ERROR "stage 'X' failed: ...";
time limit -> ERROR "time limit exceeded (N s)"; cancel -> ABORTED; worker died -> ERROR "worker
lost (...)". ``provenance.json`` is written in every case.

**Cancel** (``cancel``): a QUEUED run becomes ABORTED at once and its rq job is cancelled; an
EXECUTING run gets the cancel key and its runner ends it ABORTED within ``POLL`` + ``KILL_GRACE``
seconds. The record's conditional updates settle the races (a worker picking the job up while
it is being cancelled finds it ABORTED and does nothing).

**Reconciler** (``reconcile``; ``start_reconciler_thread`` runs it at start-up and every
``RECONCILE_EVERY`` seconds): cheap (one SELECT of the active runs, one Redis pipeline) and safe
to run concurrently on several processes and hosts, since every change is a conditional update.

- EXECUTING runs whose heartbeat key expired, or whose rq job failed, was stopped or vanished,
  become ERROR "worker lost (...)" (ABORTED if a cancel was pending); leftover processes of the run
  on this host are killed. They are not re-run: a half-done run may have written products.
- QUEUED runs whose job vanished from Redis (a Redis restarted without its snapshot) are queued
  again, up to ``MAX_REQUEUES`` times, since nothing of them ran yet; QUEUED runs whose job failed
  before the script started (e.g. the worker cannot import ``app.jobs``) become ERROR with rq's
  reason. Runs younger than ``queued_grace`` seconds are left alone (being enqueued right now).

With the default ``HEARTBEAT_TTL`` (10 s) and ``RECONCILE_EVERY`` (15 s) a run whose worker was
killed is settled within 25 s. Start workers with ``worker_command``: rq's own heartbeats are
short too (``--worker-ttl``, ``--job-monitoring-interval``), and its worker class
(``RegioWorker``) preloads this module before rq forks a horse per job, which keeps the cost of a
run over its script to a few tens of milliseconds (``bench/runs.py``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import selectors
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from rq import Queue, get_current_job
from rq import Worker as _RqWorker
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus

from app import catalog, notify, runs
from app.plumbing import die_with_parent, now
from app.runs import ABORTED, COMPLETED, ERROR, EXECUTING, QUEUED, Run

log = logging.getLogger("regio.jobs")

QUEUE_NAME = "regio"
CANCEL_KEY = "regio:cancel:{}"
ALIVE_KEY = "regio:alive:{}"
CANCEL_TTL = 24 * 3600  # a cancel request nobody picked up is forgotten after a day
HEARTBEAT_TTL = 10.0  # seconds without a heartbeat before a run counts as lost
POLL = 0.2  # seconds between the runner's checks (cancel, time limit, worker alive)
PROGRESS_EVERY = 0.5  # at most one progress write per this many seconds
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
DRAIN_TIMEOUT = 2.0  # seconds to read output left in the pipe after the script ended
JOB_TIMEOUT_MARGIN = 60  # rq's own job timeout: a backstop this much above the script's limit
RESULT_TTL = 24 * 3600
FAILURE_TTL = 7 * 24 * 3600
RECONCILE_EVERY = 15.0
QUEUED_GRACE = 30.0
MAX_REQUEUES = 3
WORKER_TTL = 30  # rq worker registration TTL when idle (rq's default: 420 s)
JOB_MONITORING_INTERVAL = 5  # rq worker heartbeat while a job runs (rq's default: 30 s)
MAX_LINE = 64 * 1024  # a longer line without a newline is logged in pieces
MAX_STAGES = 500
#: Settings a script may read from its environment (nothing secret).
SCRIPT_SETTINGS = ("REGIO_RESPONSES",)

_MARKER = re.compile(r"^\[(STAGE|PROGRESS|ERROR)\]\s*(.*?)\s*$")
_PROGRESS = re.compile(r"^(\d+)\s*/\s*(\d+)$")


class RegioWorker(_RqWorker):
    """rq's forking worker. Naming it on the command line (``--worker-class``) makes the worker
    import this module (and Flask, sqlite-utils...) once, before it forks: every work horse starts
    with them loaded, which saves ~0.3 s per run (see bench/runs.py)."""


def worker_command(
    redis_url: str, name: str | None = None, queue_name: str = QUEUE_NAME
) -> list[str]:
    """The command line of an rq worker for Regio runs: preloaded, with short heartbeats."""
    command = [sys.executable, "-m", "rq.cli", "worker", "--url", redis_url,
               "--worker-class", "app.jobs.RegioWorker",
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
    return _enqueue_job(
        run, redis_conn, db_path, queue_name, scripts_dir, heartbeat_ttl, script.time_limit
    )


def _enqueue_job(
    run: Run,
    redis_conn: redis.Redis,
    db_path: Path | str,
    queue_name: str,
    scripts_dir: Path | str | None,
    heartbeat_ttl: float,
    time_limit: int | None = None,
) -> Job:
    time_limit = run.time_limit or time_limit or 3600
    queue = Queue(queue_name, connection=redis_conn)
    return queue.enqueue_call(
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
    """The rq job: run a QUEUED run's script to its end; returns the run's final phase."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("app.jobs.execute runs inside an rq worker (see app.jobs.enqueue)")
    if scripts_dir is None:
        from app import settings

        scripts_dir = str(settings.load()["SCRIPTS"])
    runner = _Runner(
        run_id,
        Path(db_path),
        job.connection,
        job.worker_name or "",
        Path(scripts_dir),
        heartbeat_ttl,
    )
    return runner.run()


@dataclass(frozen=True)
class _Stop:
    """Why the runner stops a script early. ``phase`` None: the record was closed by someone else."""

    phase: str | None
    error: str
    sig: signal.Signals = signal.SIGTERM


class _Runner:
    """Supervises one script process for ``execute`` (see the module docstring)."""

    def __init__(
        self,
        run_id: str,
        db_path: Path,
        conn: redis.Redis,
        worker: str,
        scripts_dir: Path,
        heartbeat_ttl: float,
    ) -> None:
        self.run_id = run_id
        self.db_path = db_path
        self.conn = conn
        self.worker = worker
        self.scripts_dir = scripts_dir
        self.heartbeat_ttl = heartbeat_ttl
        self.host = socket.gethostname()
        self.parent = os.getppid()  # the rq worker that forked this horse
        self.run_dir = Path()
        self.logfile: Any = None
        self.partial = b""
        self.stage: str | None = None
        self.stages: list[dict[str, Any]] = []
        self.progress: tuple[int | None, int | None] = (None, None)
        self.state_dirty = False
        self.stage_dirty = False
        self.last_state_write = 0.0
        self.next_beat = 0.0
        self.error_line: str | None = None
        self.last_text: str | None = None
        self.tail: deque[str] = deque(maxlen=runs.LOG_TAIL_LINES)
        self.stop: _Stop | None = None
        self.kill_at = float("inf")
        self.redis_trouble = False
        self.time_limit = 0
        self.notifier = notify.RunNotifier(db_path)

    # -- phases

    def run(self) -> str:
        run = runs.get(self.db_path, self.run_id)
        self.run_dir = run.path
        if run.phase != QUEUED:
            return run.phase  # cancelled (or settled) while it waited in the queue
        try:
            script = catalog.load_script(self.scripts_dir, run.script)
            if script.version != run.script_version:
                raise catalog.CatalogError(
                    f"this worker has version {script.version} of {script.name!r}, the run asked "
                    f"for {run.script_version}: update the worker's scripts folder"
                )
        except catalog.CatalogError as exc:
            return self._close(ERROR, f"the script cannot start: {exc}", expect=QUEUED)
        self._beat(force=True)
        try:
            run = runs.update(
                self.db_path, self.run_id, phase=EXECUTING, expect={"phase": QUEUED},
                started=now(), worker=self.worker, host=self.host,
            )  # fmt: skip
        except runs.PhaseError:
            return runs.get(self.db_path, self.run_id).phase
        try:
            with open(run.path / runs.LOG, "ab", buffering=0) as self.logfile:
                return self._supervise(run, script)
        except Exception as exc:  # e.g. the run folder vanished: the record must not stay EXECUTING
            self.logfile = None
            if not runs.get(self.db_path, self.run_id).terminal:
                self._close(ERROR, f"the runner failed: {exc!r}")
            raise
        finally:
            self.logfile = None
            self.notifier.ended(run)  # never raises; waits <= notify.END_WAIT s

    def _supervise(self, run: Run, script: catalog.Script) -> str:
        command = [*script.command(), str(run.path / runs.INPUT)]
        self._say(f"run {run.id}: {script.name} {script.version} on {self.host} ({self.worker})")
        self._say("command: " + " ".join(command))
        if self._cancel_requested():
            self._say("ABORTED: cancelled before the script started")
            return self._close(ABORTED, "cancelled before the script started")
        self.time_limit = run.time_limit or script.time_limit
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                command,
                cwd=run.path,
                env=self._script_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: signalled as a whole
                preexec_fn=die_with_parent(os.getpid()),  # noqa: PLW1509 - the horse has no threads
            )
        except OSError as exc:  # not executable, no such interpreter, a script without #!
            self._say(f"ERROR: the script cannot start: {exc}")
            return self._close(ERROR, f"the script cannot start: {exc}")
        # after the fork: no notification thread may exist while preexec_fn runs in the child
        self.notifier.started(run)  # never raises; sends from a background thread
        try:
            self._update(pid=proc.pid)
            self._watch(proc, started + self.time_limit)
        except BaseException as exc:
            self._say(f"the runner failed: {exc!r}")
            self.stop = self.stop or _Stop(ERROR, f"the runner failed: {exc!r}")
            raise
        finally:
            _signal_group(proc.pid, signal.SIGKILL)  # whatever is left of the script
            proc.stdout.close()  # type: ignore[union-attr]
            code = proc.wait()
            kill_run_processes(self.run_id)  # and processes that left its group
            phase, error = self._outcome(code)
            self._say(f"{phase} after {time.monotonic() - started:.1f} s: {error or 'exit code 0'}")
            self._close(phase, error, exit_code=code)
        return runs.get(self.db_path, self.run_id).phase

    def _outcome(self, code: int) -> tuple[str, str | None]:
        if self.stop is not None:
            phase = self.stop.phase or runs.get(self.db_path, self.run_id).phase
            return phase, self.stop.error
        if code == 0:
            return COMPLETED, None
        what = f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        detail = self.error_line or self.last_text or what
        where = f"stage '{self.stage}' failed" if self.stage else "the script failed"
        return ERROR, f"{where}: {detail}"

    def _close(
        self, phase: str, error: str | None, exit_code: int | None = None, expect: str = EXECUTING
    ) -> str:
        """Record the final phase (unless someone else closed the run), provenance, clean keys."""
        if self.stop is not None and self.stop.phase is None:
            run = runs.get(self.db_path, self.run_id)
        else:
            failed = phase != COMPLETED
            try:
                run = _retry_busy(
                    lambda: runs.finish(
                        self.db_path,
                        self.run_id,
                        phase,
                        expect={"phase": expect},
                        ended=now(),
                        exit_code=exit_code,
                        error=error,
                        failing_stage=self.stage if phase == ERROR else None,
                        log_tail="\n".join(self.tail) if failed and self.tail else None,
                        stage=self.stage,
                        stages=self.stages,
                        progress_done=self.progress[0],
                        progress_total=self.progress[1],
                    )
                )
            except runs.PhaseError:
                run = runs.get(self.db_path, self.run_id)
            if self.logfile is None:
                runs.append_log(self.run_dir, f"{phase}: {error}")
        with contextlib.suppress(redis.RedisError):
            self.conn.delete(ALIVE_KEY.format(self.run_id), CANCEL_KEY.format(self.run_id))
        return run.phase

    # -- watching the process

    def _watch(self, proc: subprocess.Popen, deadline: float) -> None:
        """Pump output and run the checks until the script's main process has ended."""
        fd = proc.stdout.fileno()  # type: ignore[union-attr]
        os.set_blocking(fd, False)
        ended_at: float | None = None
        eof = False
        next_check = 0.0
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while True:
                wait = POLL
                if self.state_dirty:  # wake up in time for the throttled progress write
                    wait = max(
                        0.0, min(POLL, self.last_state_write + PROGRESS_EVERY - time.monotonic())
                    )
                if eof:
                    time.sleep(wait)
                elif selector.select(wait):
                    with contextlib.suppress(BlockingIOError):
                        data = os.read(fd, 65536)
                        if data:
                            self._feed(data)
                        else:
                            eof = True
                            selector.unregister(fd)
                now = time.monotonic()
                if ended_at is None and _has_ended(proc.pid):
                    ended_at = now
                    _signal_group(proc.pid, signal.SIGKILL)  # children it left behind
                if ended_at is not None and (eof or now - ended_at > DRAIN_TIMEOUT):
                    break
                if now >= next_check:
                    next_check = now + POLL
                    self._check(proc.pid, now, deadline)
                self._flush_state(now)
        if self.partial:
            self._feed(b"\n")

    def _check(self, pgid: int, now: float, deadline: float) -> None:
        if self.stop is None:
            self.stop = self._stop_reason(now, deadline)
            if self.stop is not None:
                self._say(f"stopping the script: {self.stop.error}")
                _signal_group(pgid, self.stop.sig)
                self.kill_at = now + KILL_GRACE
        elif now >= self.kill_at:
            _signal_group(pgid, signal.SIGKILL)
            self.kill_at = float("inf")
        self._beat()

    def _stop_reason(self, now: float, deadline: float) -> _Stop | None:
        if os.getppid() != self.parent:
            return _Stop(ERROR, "worker lost (the rq worker process died)", signal.SIGKILL)
        if now >= deadline:
            return _Stop(ERROR, f"time limit exceeded ({self.time_limit} s)")
        if self._cancel_requested():
            return _Stop(ABORTED, "cancelled")
        return None

    def _cancel_requested(self) -> bool:
        try:
            return bool(self.conn.exists(CANCEL_KEY.format(self.run_id)))
        except redis.RedisError as exc:
            self._redis_trouble(exc)
            return False

    def _beat(self, force: bool = False) -> None:
        """Refresh the heartbeat key; stop if the record was closed by someone else."""
        now = time.monotonic()
        if not force and now < self.next_beat:
            return
        self.next_beat = now + min(2.0, self.heartbeat_ttl / 4)
        try:
            value = f"{self.worker}@{self.host}:{os.getpid()}"
            self.conn.set(ALIVE_KEY.format(self.run_id), value, px=int(self.heartbeat_ttl * 1000))
            self.redis_trouble = False
        except redis.RedisError as exc:
            self._redis_trouble(exc)
        if self.logfile is not None and self.stop is None:
            run = runs.get(self.db_path, self.run_id)
            if run.terminal:
                self.stop = _Stop(None, f"the run was closed meanwhile: {run.phase} ({run.error})")
                self._say(f"stopping the script: {self.stop.error}")
                self.kill_at = now  # SIGKILL at the next check

    def _redis_trouble(self, exc: Exception) -> None:
        if not self.redis_trouble:
            self.redis_trouble = True
            self._say(f"Redis is unreachable ({exc}); the run goes on")

    # -- output

    def _feed(self, data: bytes) -> None:
        """Log the complete lines of ``data`` (keeping a partial last line) and parse them."""
        self.partial += data
        if b"\n" not in self.partial and len(self.partial) < MAX_LINE:
            return
        *lines, self.partial = self.partial.split(b"\n")
        if len(self.partial) >= MAX_LINE:
            lines.append(self.partial)
            self.partial = b""
        self.logfile.write(b"\n".join(lines) + b"\n")
        for raw in lines:
            self._line(raw.decode("utf-8", errors="replace").split("\r")[-1].strip())

    def _line(self, text: str) -> None:
        self.tail.append(text)
        marker = _MARKER.match(text)
        if marker is None:
            if text:
                self.last_text = text[:500]
            return
        kind, value = marker.groups()
        if kind == "STAGE" and value:
            self.stage = value[:100]
            if len(self.stages) < MAX_STAGES:
                self.stages.append({"name": self.stage, "started": now()})
            self.progress = (None, None)
            self.stage_dirty = True
        elif kind == "PROGRESS" and (numbers := _PROGRESS.match(value)):
            self.progress = (int(numbers[1]), int(numbers[2]))
            self.state_dirty = True
        elif kind == "ERROR" and value:
            self.error_line = value[:500]

    def _flush_state(self, now: float) -> None:
        """Write stage and progress to the record: at once on a stage change, else throttled."""
        if not (
            self.stage_dirty or (self.state_dirty and now - self.last_state_write >= PROGRESS_EVERY)
        ):
            return
        self.last_state_write = now
        self.stage_dirty = self.state_dirty = False
        self._update(
            stage=self.stage, stages=self.stages,
            progress_done=self.progress[0], progress_total=self.progress[1],
        )  # fmt: skip

    def _update(self, **changes: Any) -> None:
        try:
            runs.update(self.db_path, self.run_id, expect={"phase": EXECUTING}, **changes)
        except runs.PhaseError:
            self.next_beat = 0.0  # closed elsewhere: the next _beat stops the script
        except sqlite3.OperationalError as exc:  # database busy beyond the timeout: retry later
            self._say(f"could not update the run record ({exc}); retrying")
            self.state_dirty = True

    def _say(self, message: str) -> None:
        """A runner line in the log, never in the middle of a script line."""
        if self.logfile is None:
            return
        if self.partial:
            self.logfile.write(self.partial + b"\n")
            self.partial = b""
        self.logfile.write(f"[regio] {message}\n".encode())

    def _script_env(self) -> dict[str, str]:
        """The worker's environment without Regio's and rq's settings (secrets stay out), but
        with the settings meant for scripts (``SCRIPT_SETTINGS``)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REGIO_", "RQ_"))}
        env.update({k: os.environ[k] for k in SCRIPT_SETTINGS if os.environ.get(k)})
        env.update(PYTHONUNBUFFERED="1", REGIO_RUN_ID=self.run_id)
        return env


def _retry_busy(fn: Any, attempts: int = 5) -> Any:
    """Call ``fn`` again when SQLite stays locked beyond its busy timeout (a slow shared disk)."""
    for attempt in range(attempts):
        try:
            return fn()
        except sqlite3.OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(1.0)


def _has_ended(pid: int) -> bool:
    """Whether the child ended, without reaping it: its pid (= its group id) stays reserved."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def run_processes(run_id: str) -> list[int]:
    """Pids of this host's processes whose environment carries ``REGIO_RUN_ID=<run_id>``."""
    marker = f"REGIO_RUN_ID={run_id}".encode()
    found = []
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as f:
                    environ = f.read()
            except OSError:
                continue
            if marker in environ.split(b"\0"):
                found.append(int(entry.name))
    return found


def kill_run_processes(run_id: str) -> list[int]:
    """SIGKILL every process of this host belonging to the run; returns their pids."""
    pids = [pid for pid in run_processes(run_id) if pid != os.getpid()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return pids


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
            Job.fetch(run.job_id, connection=redis_conn).cancel()
        redis_conn.delete(CANCEL_KEY.format(run_id))
        runs.append_log(run.run_dir, "ABORTED: cancelled before it started")
        return run
    deadline = time.monotonic() + wait
    while not run.terminal and time.monotonic() < deadline:
        time.sleep(0.1)
        run = runs.get(db_path, run_id)
    return run


# -------------------------------------------------------------------------------- reconcile


def reconcile(
    db_path: Path | str,
    redis_conn: redis.Redis,
    *,
    queue_name: str = QUEUE_NAME,
    scripts_dir: Path | str | None = None,
    queued_grace: float = QUEUED_GRACE,
    heartbeat_ttl: float = HEARTBEAT_TTL,
) -> list[str]:
    """Settle runs the queue and the workers lost (see the module docstring); returns their ids."""
    active = runs.list_active(db_path)
    if not active:
        return []
    jobs = Job.fetch_many([r.job_id or "" for r in active], connection=redis_conn)
    with redis_conn.pipeline(transaction=False) as pipe:
        for run in active:
            pipe.exists(ALIVE_KEY.format(run.id))
            pipe.exists(CANCEL_KEY.format(run.id))
        flags = pipe.execute()
    changed = []
    for i, (run, job) in enumerate(zip(active, jobs, strict=True)):
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


def _lost_reason(run: Run, job: Job | None, alive: bool, heartbeat_ttl: float) -> str | None:
    if job is None:
        return "its job vanished from Redis"
    status = job.get_status(refresh=False)
    if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
        return _job_failure(job)
    if status == JobStatus.FINISHED:
        return "the job ended without recording the run's outcome"
    if not alive:
        return (
            f"no heartbeat from {run.worker or 'its worker'} on {run.host} for {heartbeat_ttl:g} s"
        )
    return None


def _queued_problem(job: Job, alive: bool, grace: float) -> str | None:
    status = job.get_status(refresh=False)
    if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
        return f"the worker could not start the run: {_job_failure(job)}"
    if status == JobStatus.FINISHED:
        return "the job ended without running the script"
    stuck = status == JobStatus.STARTED and not alive and job.started_at
    if stuck and _age(job.started_at) > grace:
        return "worker lost before the script started"
    return None


def _job_failure(job: Job) -> str:
    """The last line of rq's reason for a failed job (e.g. 'Work-horse terminated unexpectedly')."""
    status = job.get_status(refresh=False)
    result = job.latest_result()
    text = (result.exc_string if result else None) or ""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return f"rq job {status.value}: {lines[-1] if lines else 'no reason given'}"


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
    _enqueue_job(run, conn, db_path, queue_name, scripts_dir, heartbeat_ttl)
    runs.append_log(run.run_dir, "the queue lost this run (Redis restarted?); queued again")
    log.warning("run %s: its job vanished from the queue; queued again", run.id)
    return True


def _age(timestamp: str | dt.datetime) -> float:
    """Seconds since an ISO 8601 time (or an aware datetime)."""
    when = timestamp if isinstance(timestamp, dt.datetime) else dt.datetime.fromisoformat(timestamp)
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

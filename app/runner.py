"""The process supervisor of a run: starts its script, watches it to its end, closes the record.

``Runner`` does the work of the rq job (``app.jobs.execute``) inside rq's work horse, the process
``rq worker`` forks per job; it does not import rq. It owns:

- the script's process: it runs in the run folder with argv ``[*script.command(), "input.json"]``,
  no shell (the parameters only ever travel in ``input.json``), stdout and stderr merged, in a
  session of its own (so its whole process group can be signalled), and with the Linux
  parent-death signal set to SIGKILL (``app.plumbing.die_with_parent``), so it cannot outlive the
  work horse. Its environment is the worker's without ``REGIO_*`` and ``RQ_*`` (secrets stay out)
  except ``SCRIPT_SETTINGS``, plus ``REGIO_RUN_ID=<run id>``;
- the run's log: every output line goes to ``log.txt`` as soon as it is complete; ``[STAGE] name``
  and ``[PROGRESS] k/n`` lines update the record (at once on a stage change, at most every
  ``PROGRESS_EVERY`` seconds for progress); the last ``[ERROR] message`` line, else the last line
  of text, becomes the user's error message when the script fails;
- the checks, every ``POLL`` seconds: the time limit, a cancel request (Redis key ``CANCEL_KEY``,
  set by ``app.jobs.cancel``) and whether the rq worker that forked the horse is still alive.
  Stopping sends SIGTERM to the script's process group, then SIGKILL after ``KILL_GRACE`` seconds.
  When the script's main process ends, whatever is left of its group is killed, as are processes
  that escaped the group but carry ``REGIO_RUN_ID`` (``kill_run_processes``, which the reconciler
  uses too);
- the heartbeat: a Redis key ``ALIVE_KEY`` refreshed with a TTL of ``heartbeat_ttl`` seconds, which
  ``app.reconciler`` reads. With each beat it re-reads the record: if someone else already closed
  the run (a reconciler that believed it lost), it stops the script;
- closing the record (``app.runs``, the source of truth; every change a conditional update):
  exit code 0 -> COMPLETED; non-zero or a signal -> ERROR "stage 'X' failed: ..."; time limit ->
  ERROR "time limit exceeded (N s)"; cancel -> ABORTED; worker died -> ERROR "worker lost
  (...)". ``provenance.json`` is written in every case, and the run's notifications are sent
  (``app.notify``).
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import socket
import sqlite3
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from app import catalog, notify, runs
from app.plumbing import die_with_parent, now
from app.runs import ABORTED, COMPLETED, ERROR, EXECUTING, QUEUED, Run

CANCEL_KEY = "regio:cancel:{}"
ALIVE_KEY = "regio:alive:{}"
HEARTBEAT_TTL = 10.0  # seconds without a heartbeat before a run counts as lost
POLL = 0.2  # seconds between the runner's checks (cancel, time limit, worker alive)
PROGRESS_EVERY = 0.5  # at most one progress write per this many seconds
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
DRAIN_TIMEOUT = 2.0  # seconds to read output left in the pipe after the script ended
MAX_LINE = 64 * 1024  # a longer line without a newline is logged in pieces
MAX_STAGES = 500
#: Settings a script may read from its environment (nothing secret).
SCRIPT_SETTINGS = ("REGIO_RESPONSES",)

_MARKER = re.compile(r"^\[(STAGE|PROGRESS|ERROR)\]\s*(.*?)\s*$")
_PROGRESS = re.compile(r"^(\d+)\s*/\s*(\d+)$")


@dataclass(frozen=True)
class _Stop:
    """Why the runner stops a script early. ``phase`` None: the record was closed by someone else."""

    phase: str | None
    error: str
    sig: signal.Signals = signal.SIGTERM


class Runner:
    """Supervises one run's script process to its end (see the module docstring)."""

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
        self.logfile.write(runs.log_line(message))

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

"""The process supervisor of a run: starts its script, watches it to its end, closes the record.

``Runner`` does the work of the rq job (``app.jobs.execute``) inside rq's work horse, the process
``rq worker`` forks per job; it does not import rq. It owns:

- the script's process: it runs in the run folder with argv ``[*script.command(), "input.json"]``,
  no shell (the parameters only ever travel in ``input.json``), stdout and stderr merged, confined
  by ``app.sandbox`` (``REGIO_SANDBOX``): in bubblewrap, which shows it its run folder and
  read-only the system, Python, scripts, archive and input files and nothing of the instance or
  the sessions, in PID and network namespaces of its own; or, as the fallback, under
  ``app/reaper.py``, a child subreaper. Either way every descendant of the script (a grandchild
  with a clean environment and a session of its own included) ends when the script ends. The
  wrapper gets the Linux parent-death signal (``app.plumbing.die_with_parent``), so nothing
  outlives the work horse. The environment is the worker's without ``REGIO_*`` and ``RQ_*``
  (secrets stay out) except ``SCRIPT_SETTINGS``, plus ``REGIO_RUN_ID=<run id>``. A Python
  script in bubblewrap starts warm when the worker runs a warm server (``app.warm``,
  ``REGIO_WARM``): bubblewrap runs a holder, and the warm server forks the script into the
  sandbox's namespaces; the runner watches bubblewrap either way, and starts the script cold
  (the log says why) when the warm start cannot be made;
- the run's log: every output line goes to ``log.txt`` as soon as it is complete, up to
  ``REGIO_LOG_MAX_BYTES`` (beyond, the script's output is counted and dropped, and the log, the
  record's ``log_dropped`` and the provenance say so); ``[STAGE] name`` and ``[PROGRESS] k/n``
  lines update the record (at once on a stage change, at most every ``PROGRESS_EVERY`` seconds
  for progress), even beyond the cap, and so does ``[STAGES] n`` (the stage count announced up
  front, overriding the manifest's); the last ``[ERROR] message`` line, else the last line of
  text, becomes the user's error message when the script fails;
- the checks, every ``POLL`` seconds: the time limit, a cancel request (Redis key ``CANCEL_KEY``,
  set by ``app.jobs.cancel``) and whether the rq worker that forked the horse is still alive.
  Stopping sends SIGTERM to the script's processes, then SIGKILL to all of them and the wrapper
  after ``KILL_GRACE`` seconds. Processes that carry ``REGIO_RUN_ID`` are killed at the end too
  (``kill_run_processes``, which the reconciler uses for runs whose worker died);
- the heartbeat: a Redis key ``ALIVE_KEY`` refreshed with a TTL of ``heartbeat_ttl`` seconds, which
  ``app.reconciler`` reads. With each beat it re-reads the record: if someone else already closed
  the run (a reconciler that believed it lost), it stops the script;
- closing the record (``app.runs``, the source of truth; every change a conditional update):
  exit code 0 -> COMPLETED; non-zero or a signal -> ERROR "stage 'X' failed: ..."; time limit ->
  ERROR "time limit exceeded (N s)"; cancel -> ABORTED; worker died -> ERROR "worker lost
  (...)". ``provenance.json`` and ``bundle.zip`` are written in every case, once the script's
  processes are gone and before the record shows the final phase (the heartbeat goes on
  meanwhile), and the run's notifications are sent (``app.notify``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import selectors
import signal
import socket
import sqlite3
import stat
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from app import catalog, notify, runs, sandbox, settings, warm
from app.plumbing import die_with_parent, now
from app.reaper import descendants
from app.reaper import kill_tree as _kill_descendants
from app.runs import ABORTED, COMPLETED, ERROR, EXECUTING, QUEUED, Run
from app.sessions import SessionNotFound, SessionStore  # loaded before rq forks a horse

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

_MARKER = re.compile(r"^\[(STAGES|STAGE|PROGRESS|ERROR)\]\s*(.*?)\s*$")
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
        config: Mapping[str, Any] | None = None,
    ) -> None:
        """``config``: the settings (``app.settings.load``), by default the worker's own."""
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
        self.config: dict[str, Any] = dict(config) if config is not None else {}
        self.session_id = ""
        self.log_max = settings.BY_NAME["LOG_MAX_BYTES"].default
        self.log_size = 0
        self.log_dropped: int | None = None  # None until the script starts
        self.sandboxed = False  # the script runs in bubblewrap
        self.warm_pidfd: int | None = None  # the script's process when started warm

    # -- phases

    def run(self) -> str:
        run = runs.get(self.db_path, self.run_id)
        self.run_dir = run.path
        self.session_id = run.session_id
        if run.phase != QUEUED:
            return run.phase  # cancelled (or settled) while it waited in the queue
        try:
            if not self.config:
                self.config = settings.load()
        except settings.SettingError as exc:
            return self._close(ERROR, f"the worker's settings are wrong: {exc}", expect=QUEUED)
        self.log_max = self.config["LOG_MAX_BYTES"]
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
            with runs.open_log(run.path) as self.logfile:
                self.log_size = os.fstat(self.logfile.fileno()).st_size
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
        conn = None
        try:
            _check_executable(command[0])
            argv, env, death = self._confine(run, command)
            started_warm = self._start_warm(run, script, command, argv, env, death)
            if started_warm is not None:
                proc, out, conn = started_warm
            else:
                proc = subprocess.Popen(
                    argv,
                    cwd=run.path,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group and session
                    preexec_fn=die_with_parent(os.getpid(), death),  # noqa: PLW1509 - no threads
                )
                out = proc.stdout
        except (OSError, sandbox.SandboxError) as exc:  # not executable, no #!, no sandbox
            self._say(f"ERROR: the script cannot start: {exc}")
            return self._close(ERROR, f"the script cannot start: {exc}")
        self.log_dropped = 0
        # after the fork: no notification thread may exist while preexec_fn runs in the child
        self.notifier.started(run)  # never raises; sends from a background thread
        try:
            self._update(pid=proc.pid)
            self._watch(proc, out.fileno(), started + self.time_limit)
        except BaseException as exc:
            self._say(f"the runner failed: {exc!r}")
            self.stop = self.stop or _Stop(ERROR, f"the runner failed: {exc!r}")
            raise
        finally:
            _kill_script(proc.pid)  # whatever is left of the script
            out.close()
            if conn is not None:
                conn.close()
            if self.warm_pidfd is not None:
                os.close(self.warm_pidfd)
            code = proc.wait()
            kill_run_processes(self.run_id)  # and any process of the run left on this host
            if runs.disarm(run.path):
                self._say("cleared the set-user-ID/set-group-ID bits the script left on files")
            if self.log_dropped:
                self._say(
                    f"the log was cut at REGIO_LOG_MAX_BYTES ({self.log_max} bytes): "
                    f"{self.log_dropped} bytes of the script's output were dropped"
                )
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
            if self.logfile is None:  # no open log: the runner's lines go through append_log
                with contextlib.suppress(OSError):
                    runs.append_log(self.run_dir, f"{phase}: {error}")
            extra = self._bundle_files()
            try:
                with self._keep_alive():  # the bundle may take a while: the run is not lost
                    run = _retry_busy(
                        lambda: runs.finish(
                            self.db_path,
                            self.run_id,
                            phase,
                            expect={"phase": expect},
                            bundle_files=extra,
                            ended=now(),
                            exit_code=exit_code,
                            error=error,
                            failing_stage=self.stage if phase == ERROR else None,
                            log_tail="\n".join(self.tail) if failed and self.tail else None,
                            stage=self.stage,
                            stages=self.stages,
                            progress_done=self.progress[0],
                            progress_total=self.progress[1],
                            log_dropped=self.log_dropped,
                        )
                    )
            except runs.PhaseError:
                run = runs.get(self.db_path, self.run_id)
        with contextlib.suppress(redis.RedisError):
            self.conn.delete(ALIVE_KEY.format(self.run_id), CANCEL_KEY.format(self.run_id))
        return run.phase

    # -- watching the process

    def _watch(self, proc: subprocess.Popen, fd: int, deadline: float) -> None:
        """Pump output (``fd``) and run the checks until the script's main process has ended."""
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
                    _kill_script(proc.pid)  # children it left behind
                if ended_at is not None and (eof or now - ended_at > DRAIN_TIMEOUT):
                    break
                if now >= next_check:
                    next_check = now + POLL
                    self._check(proc.pid, now, deadline)
                self._flush_state(now)
        if self.partial:
            self._feed(b"\n")

    def _check(self, pid: int, now: float, deadline: float) -> None:
        if self.stop is None:
            self.stop = self._stop_reason(now, deadline)
            if self.stop is not None:
                self._say(f"stopping the script: {self.stop.error}")
                if self.warm_pidfd is not None:  # not below bubblewrap: the warm server's child
                    with contextlib.suppress(OSError):
                        signal.pidfd_send_signal(self.warm_pidfd, self.stop.sig)
                _signal_script(pid, self.stop.sig)
                self.kill_at = now + KILL_GRACE
        elif now >= self.kill_at:
            _kill_script(pid)
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
        self._output(b"\n".join(lines) + b"\n")
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
        elif kind == "STAGES" and value.isdigit() and 0 < int(value) <= MAX_STAGES:
            self._update(stage_count=int(value))  # announced up front: "stage k of n"
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
        """A runner line in the log, never in the middle of a script line (runner lines are
        few and short: they are kept beyond the cap)."""
        if self.logfile is None:
            return
        if self.partial:
            self._output(self.partial + b"\n")
            self.partial = b""
        self._write(runs.log_line(message))

    def _output(self, data: bytes) -> None:
        """The script's complete lines to the log, up to ``REGIO_LOG_MAX_BYTES``; beyond, they
        are counted in ``log_dropped`` (the first time, whole lines that fit are kept and the
        log says it is cut)."""
        if self.log_dropped:
            self.log_dropped += len(data)
            return
        room = self.log_max - self.log_size
        if len(data) <= room:
            self._write(data)
            return
        keep = data[: max(0, room)]
        keep = keep[: keep.rfind(b"\n") + 1]
        self._write(keep)
        self.log_dropped = len(data) - len(keep)
        self._write(
            runs.log_line(
                f"the log reached REGIO_LOG_MAX_BYTES ({self.log_max} bytes): the script's "
                "further output is not kept (stages and progress are still followed)"
            )
        )

    def _write(self, data: bytes) -> None:
        self.logfile.write(data)
        self.log_size += len(data)

    # -- confinement

    def _confine(
        self, run: Run, command: list[str]
    ) -> tuple[list[str], dict[str, str], signal.Signals]:
        """The command line starting ``command`` confined (``app.sandbox``), its environment,
        and the parent-death signal of the wrapper. SandboxError if REGIO_SANDBOX=bwrap and
        bubblewrap does not work."""
        env = self._script_env()
        mode = self.config["SANDBOX"]
        why = "REGIO_SANDBOX=off"
        if mode != "off":
            bwrap = sandbox.find_bwrap()
            why = sandbox.probe(bwrap) if bwrap else "bubblewrap (bwrap) is not installed"
            if why is None and bwrap:
                plan = self._layout(run)
                for path, reason in plan.hidden:
                    self._say(f"sandbox: {path} is not shown to the script: {reason}")
                self._say(
                    "sandbox: bubblewrap; the run folder read-write, the system, Python, "
                    "scripts, archive and input files read-only; no network"
                )
                env.update(HOME="/tmp", TMPDIR="/tmp")
                if plan.files:  # matplotlib's font list, where the sandbox shows it
                    env["MPLCONFIGDIR"] = sandbox.SANDBOX_FONT_CACHE
                self.sandboxed = True
                # bwrap --die-with-parent takes the whole sandbox with it
                return sandbox.bwrap_command(bwrap, command, plan), env, signal.SIGKILL
            if mode == "bwrap":
                raise sandbox.SandboxError(f"REGIO_SANDBOX=bwrap but {why}")
        self._say(
            f"sandbox: none, the fallback ({why}): the script can read and write what the "
            "worker can; its descendants still end with it"
        )
        # SIGTERM: the reaper kills the script's processes before it exits
        return sandbox.reaper_command(command), env, signal.SIGTERM

    def _start_warm(
        self,
        run: Run,
        script: catalog.Script,
        command: list[str],
        argv: list[str],
        env: dict[str, str],
        death: signal.Signals,
    ) -> tuple[subprocess.Popen, Any, Any] | None:
        """Start a Python script warm (``app.warm``): bubblewrap as ``argv`` with the holder in
        place of ``command``, the script forked by the worker's warm server in its namespaces.
        Returns the bubblewrap process, the log pipe and the warm server connection, or None
        (the log says why) for a cold start."""
        if (
            not self.sandboxed
            or self.config.get("WARM", "auto") == "off"
            or script.executable.suffix != ".py"
            or argv[-len(command) :] != command
        ):
            return None
        if script.cold_start:
            self._say("start: cold (the manifest says cold_start = true)")
            return None
        zygote = warm.current()
        if zygote is None:
            self._say("start: cold (this worker runs no warm server)")
            return None
        holder = argv[: len(argv) - len(command)] + warm.HOLDER
        log_r, log_w = os.pipe()
        ready_r, ready_w = os.pipe()
        status_r, status_w = os.pipe()
        proc = None
        try:
            proc = subprocess.Popen(
                holder,
                cwd=run.path,
                env=env,
                stdin=status_r,
                stdout=ready_w,
                stderr=log_w,
                start_new_session=True,
                preexec_fn=die_with_parent(os.getpid(), death),  # noqa: PLW1509 - no threads yet
            )
            os.close(ready_w)
            ready_w = -1
            if warm._read_line(ready_r, warm.READY_TIMEOUT) != "ready":
                raise warm.WarmError("the sandbox did not start")
            conn, pid = warm.start_in_sandbox(
                zygote, warm.sandbox_pid(proc.pid), log_w, status_w, command[1:], str(run.path), env
            )
        except (OSError, warm.WarmError) as exc:
            if proc is not None:
                _kill_script(proc.pid)
                proc.wait()
            os.close(log_w)
            self._drain(log_r)  # what bubblewrap said
            os.close(log_r)
            self._say(f"start: cold (the warm start failed: {exc})")
            return None
        finally:
            for fd in (ready_r, ready_w, status_r, status_w):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        os.close(log_w)
        with contextlib.suppress(OSError):  # it may have ended already
            self.warm_pidfd = os.pidfd_open(pid)
        self._say(
            "start: warm (forked in the sandbox by the worker's warm server, which had "
            "imported the science packages)"
        )
        return proc, open(log_r, "rb", buffering=0), conn

    def _drain(self, fd: int) -> None:
        os.set_blocking(fd, False)
        with contextlib.suppress(OSError):
            while data := os.read(fd, 65536):
                self._feed(data)
        if self.partial:
            self._feed(b"\n")

    def _layout(self, run: Run) -> sandbox.Layout:
        """What the script sees: see ``app.sandbox``. Paths come from this worker's settings."""
        cfg = self.config
        archives = settings.archive_dirs(cfg)
        read_only = [
            *sandbox.python_paths(),
            *sandbox.package_paths(),
            *sandbox.software_paths(os.environ),
            *sandbox.script_paths(self.scripts_dir),
            *archives,
            *([cfg["RESPONSES"]] if cfg.get("RESPONSES") else []),
            *cfg.get("SANDBOX_PATHS", []),
            *self._input_files(run),
        ]
        private = [cfg["SESSIONS"], self.db_path.parent, cfg["INSTANCE"]]
        plan = sandbox.layout(run.path, read_only=read_only, private=private, allowed=archives)
        # matplotlib's font list: the warm server's (it makes one when it starts), else this
        # worker's own
        zygote = warm.current()
        folders = [Path(zygote.folder) / "mpl"] if zygote is not None and zygote.folder else []
        plan.files = sandbox.font_caches([*folders, sandbox.matplotlib_cache(os.environ)])
        return plan

    @staticmethod
    def _input_files(run: Run) -> list[Path]:
        """The data files ``input.json`` names (each observation's ``path``)."""
        try:
            data = runs.read_input(run.path)
        except (OSError, ValueError):
            return []
        observations = data.get("observations") if isinstance(data, dict) else None
        paths = []
        for obs in observations if isinstance(observations, list) else []:
            path = obs.get("path") if isinstance(obs, dict) else None
            if isinstance(path, str) and path.startswith("/") and "\x00" not in path:
                paths.append(Path(path))
        return paths

    def _bundle_files(self) -> dict[str, Path]:
        """The session's region files, for the bundle (none if the session is gone)."""
        try:
            return SessionStore(self.db_path.parent).region_files(self.session_id)
        except (SessionNotFound, OSError):
            return {}

    @contextlib.contextmanager
    def _keep_alive(self) -> Iterator[None]:
        """Refresh the heartbeat from a thread while the block runs."""
        done = threading.Event()
        key = ALIVE_KEY.format(self.run_id)
        value = f"{self.worker}@{self.host}:{os.getpid()}"
        ttl = int(self.heartbeat_ttl * 1000)

        def beat() -> None:
            while True:
                with contextlib.suppress(redis.RedisError):
                    self.conn.set(key, value, px=ttl)
                if done.wait(min(2.0, self.heartbeat_ttl / 4)):
                    return

        thread = threading.Thread(target=beat, name=f"heartbeat-{self.run_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

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


def _signal_script(pid: int, sig: signal.Signals) -> None:
    """Signal the script's processes: every descendant of the wrapper ``pid`` (bwrap or the
    reaper, which would end the whole run at once on SIGTERM); SIGKILL: ``_kill_script``."""
    if sig == signal.SIGKILL:
        _kill_script(pid)
        return
    for child in descendants(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(child, sig)


def _kill_script(pid: int) -> None:
    """SIGKILL the wrapper ``pid``, its descendants first (so none is handed to init), and its
    process group. The sandbox and the reaper also do it themselves when the script ends."""
    _kill_descendants(pid, reap_children=False)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
    _signal_group(pid, signal.SIGKILL)


def _check_executable(path: str) -> None:
    """Raise the error ``execve`` would for a command that cannot start (the wrapper execs it,
    so the run would only see the wrapper fail): missing, not executable, no ``#!`` line."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode) or not os.access(path, os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith(b"#!") and head != b"\x7fELF":
        raise OSError(errno.ENOEXEC, os.strerror(errno.ENOEXEC), path)


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

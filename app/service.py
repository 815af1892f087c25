"""``python -m app run``: the whole service on one host, in the foreground, supervised.

In order: the demo archive (generated when no archive is configured and it is absent), the index
(incremental build), Redis (embedded unless REGIO_REDIS_URL is set), REGIO_WORKERS ``rq worker``
processes, gunicorn, and ``python -m app ingest`` and ``python -m app cron`` (standing requests
and schedules, ``app.ingest`` and ``app.automation_cron``). The supervisor then watches them
(``Service.wait``):

- a child that dies (Redis, a worker, gunicorn) is logged and started again: at once, then, while
  it keeps dying within ``STABLE_AFTER`` seconds of its start, after 1, 2, 4, 8 s
  (``BACKOFF_FIRST``, doubling up to ``BACKOFF_MAX``). ``CRASH_LOOP`` such deaths in a row stop
  the whole service (exit code 1): something is wrong that restarting will not fix;
- Redis comes back on the same socket and folder with its data (an append-only file, see
  ``app.redis_server``); workers and web processes reconnect by themselves (redis-py connects
  again on the next command, rq retries its dequeue), and a worker that gave up is restarted.
  A restarted worker takes a new name (``-r<n>``): rq refuses a name whose dead owner is still
  registered. The run a killed worker was executing ends ERROR "worker lost" (its runner sees
  its parent die; ``app.reconciler`` is the backstop); queued runs go on;
- gunicorn restarts its own worker processes; the supervisor restarts gunicorn itself;
- each child's state (pid, running or restarting, restarts, last exit) is written to
  ``REGIO_INSTANCE/service.json`` on every change and every ``STATUS_EVERY`` seconds, and
  ``/api/health`` reports it.

Ctrl-C (SIGINT) or SIGTERM stops them in reverse order; children also get SIGTERM if this
supervisor dies (Linux parent-death signal), so nothing is left running. Children are started
only from the main thread: the parent-death signal follows the thread that forked the child.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from app import settings as settings_mod
from app.plumbing import die_with_parent, now, write_json
from app.redaction import redact
from app.redis_server import EmbeddedRedis


def log(message: str) -> None:
    print(f"[regio] {message}", file=sys.stderr, flush=True)


def prepare_archive(values: Mapping[str, Any]) -> list[Path]:
    """The archive folders; generates the demo archive when none is configured and it is absent."""
    dirs = settings_mod.archive_dirs(values)
    if values["ARCHIVE"]:
        missing = [str(d) for d in dirs if not d.is_dir()]
        if missing:
            raise SystemExit(f"error: REGIO_ARCHIVE names missing folder(s): {', '.join(missing)}")
        return dirs
    demo = dirs[0]
    if not (demo / "truth.json").exists():
        from demo.archive import generate_archive

        n, seed = values["DEMO_OBSERVATIONS"], values["DEMO_SEED"]
        log(f"generating the demo archive ({n} observations, seed {seed}) in {demo} ...")
        started = time.monotonic()
        generate_archive(demo, observations=n, seed=seed, progress=lambda m: log("  " + m))
        log(f"demo archive ready in {time.monotonic() - started:.1f} s")
    return dirs


def build_index(values: Mapping[str, Any], archive: list[Path]) -> None:
    from indexer.build import build_index as build

    log(f"indexing {', '.join(map(str, archive))} into {values['INDEX']} ...")
    report = build(archive, Path(values["INDEX"]), progress=lambda m: log("  " + m))
    log(f"index ready: {report.summary()}")


def build_hips(values: Mapping[str, Any]) -> None:
    """Build or update the viewer's sky background (``indexer.hips``); a failure is logged and
    the service starts without it (the viewer then has no background image)."""
    folder = Path(values["INDEX"]) / "hips"
    log(f"building the sky background (HiPS) in {folder} ...")
    try:
        from indexer.hips import build_hips as build
        from indexer.hips import summary

        report = build(Path(values["INDEX"]), progress=lambda m: log("  " + m))
    except Exception as exc:  # the background is optional: never stop the service for it
        log(
            f"WARNING: the sky background (HiPS) could not be built: {type(exc).__name__}: "
            f"{exc}; the viewer starts without it"
        )
        return
    for path, reason in report["problems"]:
        log(f"  HiPS skipped {path}: {reason}")
    log(summary(report))


#: Seconds between two looks at the children.
POLL = 0.2
#: A child that ran this long before dying starts a new series of deaths (restarted at once).
STABLE_AFTER = 30.0
#: Delay before the second restart of a series, doubled at each one up to BACKOFF_MAX.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
#: Deaths in a row of one child, each within STABLE_AFTER of its start, that stop the service.
CRASH_LOOP = 6
#: Seconds between two rewrites of the status file when nothing changes.
STATUS_EVERY = 5.0
STATUS_FILE = "service.json"


def exit_reason(code: int) -> str:
    """A Popen return code in words: "exited with code 1", "was killed by SIGKILL"."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


def raise_open_files_limit(wanted: int = 65536) -> int:
    """Raise this process's soft limit of open files towards ``wanted`` (children inherit it):
    every open live log stream is a socket. Returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def read_status(instance: Path | str) -> dict[str, Any] | None:
    """The supervisor's status file (``Service.write_status``) if its supervisor is alive on this
    host, else None (no supervisor: gunicorn started by other means, or another host)."""
    try:
        status = json.loads((Path(instance) / STATUS_FILE).read_text())
        os.kill(int(status["supervisor"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return status


class CrashLoop(RuntimeError):
    """A child keeps dying right after its start."""


class Child:
    """One supervised process: how to start it, its process, its history of deaths."""

    def __init__(self, name: str, start: Callable[[int], subprocess.Popen]) -> None:
        self.name = name
        self._start = start  # start(restarts) -> the running process
        self.proc: subprocess.Popen | None = None
        self.started = 0.0  # time.monotonic() of the last start
        self.since: str | None = None  # the same, as ISO 8601 for the status file
        self.restarts = 0
        self.deaths_in_a_row = 0  # each within STABLE_AFTER of the start before it
        self.restart_at: float | None = None
        self.last_exit: str | None = None

    def start(self) -> None:
        self.proc = self._start(self.restarts)
        self.started = time.monotonic()
        self.since = now(timespec="seconds")
        self.restart_at = None

    def died(self, reason: str) -> float:
        """Record a death; returns the delay before the restart (CrashLoop if it is one)."""
        self.proc = None
        self.last_exit = reason
        if time.monotonic() - self.started < STABLE_AFTER:
            self.deaths_in_a_row += 1
        else:
            self.deaths_in_a_row = 1
        if self.deaths_in_a_row >= CRASH_LOOP:
            raise CrashLoop(
                f"{self.name} {reason}: {self.deaths_in_a_row} deaths in a row, each within "
                f"{STABLE_AFTER:g} s of its start; stopping the service"
            )
        delay = 0.0
        if self.deaths_in_a_row > 1:
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self.deaths_in_a_row - 2))
        self.restart_at = time.monotonic() + delay
        return delay

    def status(self) -> dict[str, Any]:
        running = self.proc is not None and self.proc.poll() is None
        return {
            "name": self.name,
            "pid": self.proc.pid if running and self.proc else None,
            "state": "running" if running else "restarting",
            "since": self.since,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
        }


class Service:
    """The child processes of one host: Redis (when embedded), RQ workers, gunicorn, ingest and
    cron; supervised (see the module docstring)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = dict(values)
        self.redis: EmbeddedRedis | None = None
        self.children: list[Child] = []
        self.stopping = threading.Event()
        self._env: dict[str, str] = {}
        self._status_written = 0.0
        self._last_status: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.values['HOST']}:{self.values['PORT']}/"

    @property
    def status_path(self) -> Path:
        return Path(self.values["INSTANCE"]) / STATUS_FILE

    def start(self) -> None:
        instance = Path(self.values["INSTANCE"])
        (instance / "logs").mkdir(parents=True, exist_ok=True)
        Path(self.values["SESSIONS"]).mkdir(parents=True, exist_ok=True)
        limit = raise_open_files_limit(self.values["WEB_CONNECTIONS"] + 1024)
        if self.values["WEB_WORKER_CLASS"] == "gevent" and limit < self.values["WEB_CONNECTIONS"]:
            log(
                f"WARNING: at most {limit} open files per process (ulimit -n): fewer than "
                f"REGIO_WEB_CONNECTIONS={self.values['WEB_CONNECTIONS']} live log streams fit"
            )
        if self.values["REDIS_URL"]:
            log(f"using Redis at {redact(self.values['REDIS_URL'])}")
        else:
            self.redis = EmbeddedRedis(instance / "redis")
            self.values["REDIS_URL"] = self.redis.url
            child = Child("redis", self._start_redis)
            child.start()  # a first start that fails stops the service with Redis's log
            log(f"embedded Redis started (pid {self.redis.pid}) at {self.redis.url}")
            self.children.append(child)
        self._env = self._child_env()
        for i in range(self.values["WORKERS"]):
            self._add(f"worker-{i + 1}", functools.partial(self._start_worker, i + 1))
        self._add("web", self._start_web)
        # keeps the index current and serves standing requests; fires the schedules
        self._add("ingest", functools.partial(self._start_command, "ingest"))
        self._add("cron", functools.partial(self._start_command, "cron"))
        self.write_status(force=True)

    def _add(self, name: str, start: Callable[[int], subprocess.Popen]) -> None:
        child = Child(name, start)
        child.start()
        self.children.append(child)
        log(f"started {name} (pid {child.proc.pid if child.proc else '?'})")

    def _start_redis(self, _restarts: int) -> subprocess.Popen:
        assert self.redis is not None
        self.redis.start()
        assert self.redis.process is not None
        return self.redis.process

    def _start_worker(self, number: int, restarts: int) -> subprocess.Popen:
        return self._spawn(self.worker_command(number, restarts))

    def _start_command(self, command: str, _restarts: int) -> subprocess.Popen:
        return self._spawn([sys.executable, "-m", "app", command])

    def _start_web(self, _restarts: int) -> subprocess.Popen:
        return self._spawn(self.gunicorn_command())

    def worker_command(self, number: int, restarts: int = 0) -> list[str]:
        from app import jobs

        name = f"regio-{os.uname().nodename}-{os.getpid()}-{number}"
        if restarts:
            name += f"-r{restarts}"  # rq refuses the name while the dead worker is registered
        return jobs.worker_command(self.values["REDIS_URL"], name=name)

    def gunicorn_command(self) -> list[str]:
        """gunicorn, one worker process. With gevent (the default) a live log stream is a
        greenlet parked on a socket, not a thread: a thousand of them leave the API responsive
        (``bench/streams.py``); the stream generator sleeps through ``time.sleep``, which gevent
        makes cooperative, and reads the log in short chunks. The price: a request that computes
        for a long time without doing I/O holds the others up while it runs. gthread (the
        fallback, ``REGIO_WEB_WORKER_CLASS=gthread``) serves REGIO_WEB_THREADS requests at once,
        streams included."""
        if self.values["WEB_WORKER_CLASS"] == "gevent":
            concurrency = [
                "--worker-class", "gevent",
                "--worker-connections", str(self.values["WEB_CONNECTIONS"]),
            ]  # fmt: skip
        else:
            concurrency = [
                "--worker-class", "gthread", "--threads", str(self.values["WEB_THREADS"]),
            ]  # fmt: skip
        return [
            sys.executable, "-m", "gunicorn",
            "--bind", f"{self.values['HOST']}:{self.values['PORT']}",
            *concurrency,
            "--workers", str(self.values["WEB_PROCESSES"]),
            "--timeout", "120",
            "--graceful-timeout", "5",
            "--no-control-socket",  # one shared ~/.gunicorn socket would mix up several instances
            "--config", f"file:{settings_mod.ROOT / 'app' / 'gunicorn_conf.py'}",  # see there
            "--access-logfile", str(Path(self.values["INSTANCE"]) / "logs" / "access.log"),
            "--logger-class", "app.redaction.GunicornLogger",  # no secret in the access log
            "wsgi:app",
        ]  # fmt: skip

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        for setting in settings_mod.SETTINGS:
            value = self.values[setting.name]
            if isinstance(value, list):
                value = os.pathsep.join(map(str, value))
            env[setting.env] = "" if value is None else str(value)
        return env

    def _spawn(self, command: list[str]) -> subprocess.Popen:
        return subprocess.Popen(
            command,
            cwd=settings_mod.ROOT,
            env=self._env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops them in order
            # SIGTERM to the child when the supervisor dies, even by SIGKILL
            preexec_fn=die_with_parent(os.getpid(), signal.SIGTERM),  # noqa: PLW1509 - no threads
        )

    def wait(self) -> int:
        """Supervise the children until a stop signal (0) or a crash loop (1)."""
        while not self.stopping.is_set():
            try:
                self.check()
            except CrashLoop as exc:
                log(str(exc))
                return 1
            self.write_status()
            self.stopping.wait(POLL)
        return 0

    def check(self) -> None:
        """One look at every child: note the deaths, start the ones whose back-off is over."""
        for child in self.children:
            if self.stopping.is_set():
                return
            if child.proc is not None:
                code = child.proc.poll()
                if code is None:
                    continue
                pid, reason = child.proc.pid, exit_reason(code)
                delay = child.died(reason)
                when = f"in {delay:g} s" if delay else "now"
                log(f"{child.name} (pid {pid}) {reason}; restarting it {when}")
            if child.restart_at is not None and time.monotonic() >= child.restart_at:
                child.restarts += 1
                try:
                    child.start()
                except Exception as exc:  # e.g. Redis refusing to start: a death like the others
                    reason = f"could not start ({type(exc).__name__}: {exc})"
                    delay = child.died(reason)
                    log(f"{child.name} {reason}; trying again in {delay:g} s")
                else:
                    pid = child.proc.pid if child.proc else "?"
                    log(f"restarted {child.name} (pid {pid}, restart {child.restarts})")
                self.write_status(force=True)

    def status(self) -> dict[str, Any]:
        return {
            "supervisor": os.getpid(),
            "updated": now(timespec="seconds"),
            "children": [child.status() for child in self.children],
        }

    def write_status(self, force: bool = False) -> None:
        """Write the children's state for /api/health: on a change, else every STATUS_EVERY s."""
        children = [child.status() for child in self.children]
        due = time.monotonic() - self._status_written >= STATUS_EVERY
        if not (force or due or children != self._last_status):
            return
        self._last_status, self._status_written = children, time.monotonic()
        try:
            write_json(self.status_path, self.status())
        except OSError as exc:  # a full disk must not stop the supervision
            log(f"WARNING: could not write {self.status_path}: {exc}")

    def stop(self) -> None:
        """Stop gunicorn and the workers, then Redis.

        SIGTERM asks gunicorn and rq for a warm shutdown; a second SIGTERM a second later makes rq
        stop at once (killing its running job); whatever is still alive after the grace period is
        killed with its whole process group (each child leads one: see ``_spawn``).
        """
        self.stopping.set()
        alive = [
            (c.name, c.proc)
            for c in reversed(self.children)
            if c.name != "redis" and c.proc is not None and c.proc.poll() is None
        ]
        for _name, proc in alive:
            proc.terminate()
        time.sleep(1)
        for _name, proc in alive:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for name, proc in alive:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"{name} did not stop in time; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.children.clear()
        if self.redis:
            self.redis.stop()
            log("embedded Redis stopped")
            self.redis = None
        self.status_path.unlink(missing_ok=True)


def port_problem(host: str, port: int) -> str | None:
    """Why the web server could not listen on ``host:port``, or None if it can."""
    try:
        with socket.create_server((host, port)):
            return None
    except OSError as exc:
        return (
            f"cannot listen on {host}:{port} ({exc.strerror}): is Regio already running? "
            "Choose another port with REGIO_PORT"
        )


def run(overrides: Mapping[str, Any] | None = None) -> int:
    """Run the service until Ctrl-C or SIGTERM. Returns the process exit code."""
    try:
        values = settings_mod.load(overrides)
    except settings_mod.SettingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    problem = port_problem(values["HOST"], values["PORT"])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    archive = prepare_archive(values)
    build_index(values, archive)
    build_hips(values)
    service = Service(values)

    def on_signal(signum, _frame):
        log(f"received {signal.Signals(signum).name}, stopping ...")
        service.stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        service.start()
        log(f"Regio is running at {service.url}  (Ctrl-C to stop)")
        code = service.wait()
    finally:
        service.stop()
    log("stopped")
    return code

"""``python -m app run``: the whole service on one host, in the foreground.

In order: the demo archive (generated when no archive is configured and it is absent), the index
(incremental build), Redis (embedded unless REGIO_REDIS_URL is set), REGIO_WORKERS ``rq worker``
processes and gunicorn with threaded workers. Ctrl-C (SIGINT) or SIGTERM stops them in reverse
order; children also get SIGTERM if this supervisor dies (Linux parent-death signal), so nothing is
left running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app import settings as settings_mod
from app.plumbing import die_with_parent
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


class Service:
    """The child processes of one host: Redis (when embedded), RQ workers, gunicorn."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = dict(values)
        self.redis: EmbeddedRedis | None = None
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.values['HOST']}:{self.values['PORT']}/"

    def start(self) -> None:
        instance = Path(self.values["INSTANCE"])
        (instance / "logs").mkdir(parents=True, exist_ok=True)
        Path(self.values["SESSIONS"]).mkdir(parents=True, exist_ok=True)
        if self.values["REDIS_URL"]:
            log(f"using Redis at {self.values['REDIS_URL']}")
        else:
            self.redis = EmbeddedRedis(instance / "redis").start()
            self.values["REDIS_URL"] = self.redis.url
            log(f"embedded Redis started (pid {self.redis.pid}) at {self.redis.url}")
        env = self._child_env()
        for i in range(self.values["WORKERS"]):
            self._spawn(f"worker-{i + 1}", self.worker_command(i + 1), env)
        self._spawn("web", self.gunicorn_command(), env)

    def worker_command(self, number: int) -> list[str]:
        from app import jobs

        name = f"regio-{os.uname().nodename}-{os.getpid()}-{number}"
        return jobs.worker_command(self.values["REDIS_URL"], name=name)

    def gunicorn_command(self) -> list[str]:
        return [
            sys.executable, "-m", "gunicorn",
            "--bind", f"{self.values['HOST']}:{self.values['PORT']}",
            "--worker-class", "gthread",
            "--workers", "1",
            "--threads", str(self.values["WEB_THREADS"]),
            "--timeout", "120",
            "--graceful-timeout", "5",
            "--no-control-socket",  # one shared ~/.gunicorn socket would mix up several instances
            "--access-logfile", str(Path(self.values["INSTANCE"]) / "logs" / "access.log"),
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

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        proc = subprocess.Popen(
            command,
            cwd=settings_mod.ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops them in order
            # SIGTERM to the child when the supervisor dies, even by SIGKILL
            preexec_fn=die_with_parent(os.getpid(), signal.SIGTERM),  # noqa: PLW1509 - no threads yet
        )
        self.children.append((name, proc))
        log(f"started {name} (pid {proc.pid})")

    def wait(self) -> int:
        """Block until a stop signal or a child exits; return the exit code for the supervisor."""
        while not self.stopping.is_set():
            for name, proc in self.children:
                code = proc.poll()
                if code is not None:
                    log(f"{name} exited with code {code}; stopping the service")
                    return 1
            self.stopping.wait(0.5)
        return 0

    def stop(self) -> None:
        """Stop gunicorn and the workers, then Redis.

        SIGTERM asks gunicorn and rq for a warm shutdown; a second SIGTERM a second later makes rq
        stop at once (killing its running job); whatever is still alive after the grace period is
        killed with its whole process group (each child leads one: see ``_spawn``).
        """
        alive = [(name, proc) for name, proc in reversed(self.children) if proc.poll() is None]
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

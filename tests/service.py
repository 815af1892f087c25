"""Start the real service (``python -m app run``: Redis, rq workers, gunicorn) for a test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from app.redis_server import free_port
from tests.conftest import ROOT


class RunningService:
    def __init__(self, proc: subprocess.Popen, url: str, log: Path, instance: Path) -> None:
        self.proc, self.url, self.log, self.instance = proc, url, log, instance

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str, timeout: float = 30) -> tuple[int, bytes, dict]:
        try:
            with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=timeout) as resp:
                return resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), dict(exc.headers)

    def post(self, path: str, body: object, timeout: float = 30) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.url + path.lstrip("/"),
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def health(self) -> dict:
        return json.loads(self.get("/api/health")[1])

    def children(self) -> dict[str, dict]:
        """The supervisor's children as /api/health reports them, by name."""
        return {child["name"]: child for child in self.health()["children"]}

    def wait_healthy(self, timeout: float = 60, **expected_pids_not: int) -> dict:
        """Wait until /api/health says ok with every child running (and, for each name=pid
        given, that child running under another pid); returns the health document."""
        deadline = time.monotonic() + timeout
        health: dict = {}
        while time.monotonic() < deadline:
            try:
                health = self.health()
            except (urllib.error.URLError, ConnectionError, json.JSONDecodeError, TimeoutError):
                time.sleep(0.2)
                continue
            children = {c["name"]: c for c in health.get("children") or []}
            if (
                health.get("ok")
                and children
                and all(c["state"] == "running" for c in children.values())
                and all(children[n]["pid"] != pid for n, pid in expected_pids_not.items())
            ):
                return health
            time.sleep(0.2)
        raise AssertionError(f"not healthy after {timeout} s: {health}\n{self.output()[-3000:]}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the service did not stop on {sig}:\n{self.output()}") from None


def service_env(tmp: Path, **settings: object) -> dict[str, str]:
    """Environment for a private service instance in ``tmp`` on a free port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGIO_")}
    env.update(
        REGIO_INSTANCE=str(tmp / "instance"),
        REGIO_INDEX=str(tmp / "index"),
        REGIO_SESSIONS=str(tmp / "sessions"),
        REGIO_PORT=str(free_port()),
        REGIO_WORKERS="1",
    )
    env.update({f"REGIO_{k}": str(v) for k, v in settings.items()})
    return env


def start_service(tmp: Path, env: dict[str, str], timeout: float = 180) -> RunningService:
    """Start ``python -m app run`` and wait until the web answers with a worker alive."""
    log = tmp / "service.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "run"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{env['REGIO_PORT']}/"
    service = RunningService(proc, url, log, Path(env["REGIO_INSTANCE"]))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the service exited with {proc.returncode}:\n{service.output()}")
        try:
            if service.health()["workers"]:
                return service
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.3)
    service.stop(signal.SIGTERM)
    raise AssertionError(f"the service did not become ready in {timeout} s:\n{service.output()}")


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live processes whose command line contains ``text`` (zombies excluded)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z" and int(proc.name) != os.getpid():
            found.append((int(proc.name), cmdline))
    return found

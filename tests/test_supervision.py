"""`make run` survives its parts: kill -9 of Redis, of a worker or of gunicorn, and the service
answers again, restarts the child, keeps its queue, and every run reaches a final phase.

One service (embedded Redis, two real rq workers, gunicorn with gevent) serves the tests of this
module in order; each test leaves it healthy. Waits are on state with generous bounds: how fast
the service recovers is measured by hand and in bench/, never asserted here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.conftest import ROOT
from tests.service import RunningService, processes_mentioning, service_env, start_service
from tests.test_api import annulus, circle, source_of

pytestmark = pytest.mark.slow

FINAL = ("COMPLETED", "ERROR", "ABORTED")


@pytest.fixture(scope="module")
def service(tmp_path_factory, sample_archive):
    tmp = tmp_path_factory.mktemp("supervised")
    env = service_env(
        tmp,
        ARCHIVE=sample_archive,
        SCRIPTS=ROOT / "tests" / "scripts",
        WORKERS=2,
        WEB_PROCESSES=1,  # the test kills "the" gunicorn worker
        STREAMS_PER_USER=200,
    )
    running = start_service(tmp, env)
    running.wait_healthy()
    yield running
    code = running.stop(signal.SIGINT)
    assert code == 0, running.output()[-5000:]
    assert processes_mentioning(str(tmp)) == [], "processes left after Ctrl-C"


@pytest.fixture(scope="module")
def session_url(service, sample_archive):
    truth = json.loads((sample_archive / "truth.json").read_text())
    src, _ = source_of(truth)
    status, session = service.post(
        "/api/sessions", {"source": circle(src), "background": annulus(src)}
    )
    assert status == 201, session
    return f"/api/sessions/{session['id']}"


def launch(service: RunningService, session_url: str, steps: int, sleep: float) -> str:
    status, run = service.post(
        f"{session_url}/runs", {"script": "stages", "params": {"steps": steps, "sleep": sleep}}
    )
    assert status == 202, run
    return run["id"]


def run_of(service: RunningService, run_id: str) -> dict:
    return json.loads(service.get(f"/api/runs/{run_id}")[1])


def wait_runs(service, run_ids, phases=FINAL, timeout=180) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    found: dict[str, dict] = {}
    while time.monotonic() < deadline:
        found = {}
        for run_id in run_ids:
            try:
                found[run_id] = run_of(service, run_id)
            except (OSError, json.JSONDecodeError):
                break
        if len(found) == len(run_ids) and all(r["phase"] in phases for r in found.values()):
            return found
        time.sleep(0.5)
    stuck = {k: v["phase"] for k, v in found.items() if v["phase"] not in phases}
    raise AssertionError(
        f"runs not {phases} after {timeout} s: {stuck}\n{service.output()[-4000:]}"
    )


def redis_conn(service: RunningService) -> redis.Redis:
    return redis.Redis(unix_socket_path=str(service.instance / "redis" / "redis.sock"))


def gunicorn_workers(master: int) -> list[int]:
    path = Path(f"/proc/{master}/task/{master}/children")
    return [int(pid) for pid in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --------------------------------------------------------------------------------- the tests


def test_health_reports_each_child(service):
    children = service.children()
    assert list(children) == ["redis", "worker-1", "worker-2", "web", "ingest", "cron"]
    for child in children.values():
        assert child["state"] == "running" and child["restarts"] == 0, child
        assert alive(child["pid"]), child
    with redis_conn(service) as conn:
        assert conn.config_get("appendonly") == {"appendonly": "yes"}
        assert conn.info("server")["process_id"] == children["redis"]["pid"]


def test_redis_killed_mid_queue_keeps_its_queue_and_every_run_ends(service, session_url):
    run_ids = [launch(service, session_url, steps=2, sleep=0.5) for _ in range(20)]  # ~3 s each
    with redis_conn(service) as conn:
        deadline = time.monotonic() + 60
        while not any(run_of(service, r)["phase"] != "QUEUED" for r in run_ids):
            assert time.monotonic() < deadline, "no run started"
            time.sleep(0.1)
        queued = [job.decode() for job in conn.lrange("rq:queue:regio", 0, -1)]
        assert queued, "runs still wait in the queue when Redis is killed"
        before = service.children()["redis"]["pid"]
        os.kill(before, signal.SIGKILL)

    health = service.wait_healthy(redis=before)
    assert health["redis"]
    restarted = service.children()["redis"]
    assert restarted["restarts"] == 1 and restarted["last_exit"] == "was killed by SIGKILL"
    with redis_conn(service) as conn:
        missing = [job for job in queued if not conn.exists(f"rq:job:{job}")]
        assert missing == [], "jobs queued before the kill are lost"

    done = wait_runs(service, run_ids)
    phases = [r["phase"] for r in done.values()]
    # the queued ones all ran; a run executing at the kill may have lost its worker, no more
    assert phases.count("COMPLETED") >= len(run_ids) - 2, done
    for run in done.values():
        if run["phase"] != "COMPLETED":
            assert "worker lost" in (run["error"] or ""), run
    assert "redis (pid" in service.output() and "restarted redis" in service.output()


def test_a_killed_worker_is_restarted_under_a_new_name(service, session_url):
    long_run = launch(service, session_url, steps=40, sleep=0.25)
    deadline = time.monotonic() + 60
    while (run := run_of(service, long_run))["phase"] != "EXECUTING":
        assert time.monotonic() < deadline, run
        time.sleep(0.1)
    children = service.children()
    victim = _worker_running(children, run)
    pid = children[victim]["pid"]
    os.kill(pid, signal.SIGKILL)
    health = service.wait_healthy(**{victim: pid})
    restarted = service.children()[victim]
    assert restarted["restarts"] >= 1 and restarted["last_exit"] == "was killed by SIGKILL"
    deadline = time.monotonic() + 60
    while not any(name.endswith(f"-r{restarted['restarts']}") for name in health["workers"]):
        assert time.monotonic() < deadline, health
        time.sleep(0.3)
        health = service.health()

    lost = wait_runs(service, [long_run])[long_run]
    assert lost["phase"] == "ERROR" and "worker lost" in lost["error"], lost
    after = [launch(service, session_url, steps=1, sleep=0) for _ in range(4)]
    assert {r["phase"] for r in wait_runs(service, after).values()} == {"COMPLETED"}


def _worker_running(children: dict[str, dict], run: dict) -> str:
    """The supervisor's name of the worker executing ``run`` (rq name ...-<n>[-r<k>])."""
    parts = (run["worker"] or "").split("-")
    if parts[-1][:1] == "r" and parts[-1][1:].isdigit():
        parts.pop()  # a restarted worker: regio-<host>-<pid>-<n>-r<k>
    name = f"worker-{parts[-1]}"
    assert name in children, f"no supervised worker runs {run}"
    return name


def test_killed_gunicorn_worker_and_master_come_back(service):
    master = service.children()["web"]["pid"]
    (worker,) = gunicorn_workers(master)
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:  # gunicorn's master starts a new worker by itself
        try:
            if service.get("/", timeout=5)[0] == 200 and service.health()["ok"]:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, service.output()[-3000:]
        time.sleep(0.2)
    assert service.children()["web"]["pid"] == master, "gunicorn itself was not restarted"
    assert gunicorn_workers(master) and worker not in gunicorn_workers(master)

    (replacement,) = gunicorn_workers(master)
    os.kill(master, signal.SIGKILL)  # the supervisor restarts gunicorn
    deadline = time.monotonic() + 30
    for pid in (master, replacement):
        while alive(pid):  # the old worker dies with its master (parent-death signal)
            assert time.monotonic() < deadline, "a worker outlived its gunicorn master"
            time.sleep(0.1)
    service.wait_healthy(web=master)
    web = service.children()["web"]
    assert web["restarts"] == 1 and web["last_exit"] == "was killed by SIGKILL"
    assert service.get("/archive")[0] == 200


def open_stream(url: str, path: str) -> socket.socket:
    """An SSE connection that is read no further than its headers."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return sock


def test_open_live_log_streams_do_not_starve_the_api(service, session_url):
    """More streams than gthread had threads (16): with gevent the API still answers."""
    run_id = launch(service, session_url, steps=1, sleep=0)
    wait_runs(service, [run_id])
    slow = launch(service, session_url, steps=200, sleep=0.25)
    streams = [open_stream(service.url, f"/api/runs/{slow}/events") for _ in range(60)]
    try:
        for _ in range(5):
            assert service.health()["ok"]
            assert service.get(f"/api/runs/{run_id}")[0] == 200
    finally:
        for sock in streams:
            sock.close()
        status, _ = service.post(f"/api/runs/{slow}/cancel", {})
        assert status in (200, 202)
    assert wait_runs(service, [slow])[slow]["phase"] == "ABORTED"


def test_a_crash_loop_stops_the_service(tmp_path, sample_archive):
    """Workers that die at once, again and again (their Redis is gone), stop the service after
    CRASH_LOOP deaths in a row, with back-off between the restarts."""
    from app import service as service_mod

    with socket.create_server(("127.0.0.1", 0)) as closed:
        dead_redis = f"redis://127.0.0.1:{closed.getsockname()[1]}/0"
    env = service_env(tmp_path, ARCHIVE=sample_archive, REDIS_URL=dead_redis)
    log = tmp_path / "service.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "run"], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        code = proc.wait(300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text(errors="replace")
    assert code == 1, output[-4000:]
    looping = re.search(rf"\[regio\] (\S+) .*: {service_mod.CRASH_LOOP} deaths in a row", output)
    assert looping, output[-4000:]
    delays = [line.rsplit("restarting it ", 1)[1] for line in output.splitlines()
              if line.startswith(f"[regio] {looping[1]} ") and "restarting it" in line]  # fmt: skip
    assert delays == ["now", "in 1 s", "in 2 s", "in 4 s", "in 8 s"], delays
    assert processes_mentioning(str(tmp_path)) == []
    assert processes_mentioning(f"-{proc.pid}-") == []

"""`make run`'s service end to end: demo archive, index, Redis, worker, web; clean stop."""

import json
import os
import signal
import time

import pytest
import redis
from rq import Worker

from tests.service import processes_mentioning, service_env, start_service


@pytest.mark.slow
def test_embedded_redis_demo_archive_and_clean_stop(tmp_path):
    env = service_env(tmp_path, DEMO_OBSERVATIONS=2, DEMO_SEED=7)
    service = start_service(tmp_path, env)
    try:
        demo = tmp_path / "instance" / "demo-archive"
        truth = json.loads((demo / "truth.json").read_text())
        xmm = [o["obsid"] for o in truth["observations"]]
        assert len(xmm) == 2
        obsids = xmm + [o["obsid"] for o in truth.get("chandra", {}).get("observations", [])]

        health = service.health()
        assert health["ok"] and health["redis"] and len(health["workers"]) == 1
        assert health["index"]["observations"] == len(obsids)  # XMM and the demo's Chandra ones

        status, body, headers = service.get("/archive")
        assert status == 200
        assert headers["X-Regio-Version"]
        page = body.decode()
        for obsid in obsids:
            assert obsid in page
        redis_pids = processes_mentioning(str(tmp_path / "instance" / "redis"))
        assert redis_pids, "an embedded redis-server runs under the instance folder"
    finally:
        code = service.stop(signal.SIGINT)
    assert code == 0, service.output()
    leftovers = processes_mentioning(str(tmp_path))
    assert leftovers == [], f"processes left after Ctrl-C: {leftovers}"
    assert "embedded Redis stopped" in service.output()


@pytest.mark.slow
def test_external_redis_url_is_honoured(tmp_path, sample_archive, redis_url):
    env = service_env(tmp_path, ARCHIVE=sample_archive, REDIS_URL=redis_url, WORKERS=2)
    service = start_service(tmp_path, env)
    try:
        conn = redis.Redis.from_url(redis_url)
        workers = Worker.all(connection=conn)
        conn.close()
        assert len(workers) == 2, "both workers registered in the configured Redis"
        assert not (tmp_path / "instance" / "redis").exists(), "no embedded Redis was started"
        assert processes_mentioning(str(tmp_path / "instance" / "redis")) == []
    finally:
        code = service.stop(signal.SIGTERM)
    assert code == 0, service.output()
    assert processes_mentioning(str(tmp_path)) == []
    assert processes_mentioning(f"-{service.proc.pid}-") == [], "rq workers left running"


def test_bad_settings_stop_the_service_with_a_message(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = service_env(tmp_path, PORT="http")
    done = subprocess.run(
        [sys.executable, "-m", "app", "run"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "REGIO_PORT must be a whole number" in done.stderr
    assert "Traceback" not in done.stderr

    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        env = service_env(tmp_path, PORT=busy.getsockname()[1])
        done = subprocess.run(
            [sys.executable, "-m", "app", "run"], cwd=ROOT, env=env, capture_output=True, text=True
        )
    assert done.returncode == 2
    assert "is Regio already running? Choose another port with REGIO_PORT" in done.stderr
    assert not (tmp_path / "instance" / "demo-archive").exists(), "nothing done before the check"

    env = service_env(tmp_path, ARCHIVE=tmp_path / "nowhere")
    done = subprocess.run(
        [sys.executable, "-m", "app", "run"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "REGIO_ARCHIVE names missing folder(s)" in done.stderr


@pytest.mark.slow
def test_nothing_outlives_a_killed_supervisor(tmp_path, sample_archive):
    """SIGKILL leaves the supervisor no time to stop its children: the parent-death signal does."""
    env = service_env(tmp_path, ARCHIVE=sample_archive)
    service = start_service(tmp_path, env)
    assert processes_mentioning(str(tmp_path / "instance" / "redis")), "an embedded Redis runs"
    assert processes_mentioning(f"-{service.proc.pid}-"), "an rq worker runs"
    service.proc.kill()
    service.proc.wait()
    deadline = time.monotonic() + 30
    while processes_mentioning(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.2)
    leftovers = processes_mentioning(str(tmp_path)) + processes_mentioning(f"-{service.proc.pid}-")
    for pid, _cmdline in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert leftovers == [], f"processes left after the supervisor was killed: {leftovers}"

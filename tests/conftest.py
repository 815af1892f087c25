"""Shared fixtures: generated sample archives, a copy of the real data set, a real Redis."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Machines are shared and noisy: no per-example deadlines or "too slow" checks, and the same
# examples on every run (a failure found once is found again); no example database in the tree.
settings.register_profile(
    "regio",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
    database=None,
)
settings.load_profile("regio")

ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = ROOT.parent / "shared" / "data" / "xmm-rxcj0958"
LONGSLIT_DATA = ROOT.parent / "shared" / "data" / "longslit"

# The small archive the tests share: generated once per test run from a fixed seed.
SAMPLE_OBSERVATIONS = 6
SAMPLE_SEED = 1234


def wait_for(condition, what: str, timeout: float = 120.0, interval: float = 0.1):
    """Poll ``condition()`` until it returns a true value and return it; fail naming ``what``
    after ``timeout`` seconds (a deadline against hangs, not a timing assertion)."""
    import time

    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"still waiting after {timeout} s for {what}")
        time.sleep(interval)


def app_settings(tmp_path: Path, index: Path, redis_url: str, scripts: Path) -> dict:
    """The settings of a test app (``create_app``) or worker: an index, a Redis, a scripts
    folder, and a fresh instance and sessions folder under ``tmp_path``."""
    return {
        "INDEX": index,
        "REDIS_URL": redis_url,
        "INSTANCE": tmp_path / "instance",
        "SESSIONS": tmp_path / "sessions",
        "SCRIPTS": scripts,
    }


#: The test scripts (``tests/scripts``): small scripts of every behaviour a run can have.
TEST_SCRIPTS = ROOT / "tests" / "scripts"


@pytest.fixture
def env(tmp_path, sample_index, redis_url) -> dict:
    """The settings of a test app on the sample index with the test scripts; a module that needs
    other settings defines its own ``env`` (pytest takes the nearest)."""
    return app_settings(tmp_path, sample_index, redis_url, TEST_SCRIPTS)


@pytest.fixture
def client(env):
    """A Flask test client of an app made with ``env``."""
    from app import create_app

    return create_app(env).test_client()


@pytest.fixture(scope="session")
def truth(sample_archive) -> dict:
    """What the sample archive holds (``truth.json``: injected sources, observations)."""
    import json

    return json.loads((sample_archive / "truth.json").read_text())


@pytest.fixture(scope="session")
def sample_archive(tmp_path_factory) -> Path:
    """A small synthetic archive (``demo.archive``), generated once; treat it as read-only."""
    from demo.archive import generate_archive

    out = tmp_path_factory.mktemp("sample-archive")
    generate_archive(out, observations=SAMPLE_OBSERVATIONS, seed=SAMPLE_SEED)
    return out


@pytest.fixture(scope="session")
def sample_index(sample_archive, tmp_path_factory) -> Path:
    """The index of ``sample_archive``, built once; treat it as read-only."""
    from indexer.build import build_index

    index = tmp_path_factory.mktemp("sample-index")
    build_index([sample_archive], index)
    return index


@pytest.fixture(scope="session")
def real_data(tmp_path_factory) -> Path:
    """A private copy of the real XMM data set (the shared one stays read-only)."""
    import os

    if not REAL_DATA.is_dir():
        if os.environ.get("CI"):  # CI must really run the real-data tests
            raise RuntimeError(f"the real data set is missing: {REAL_DATA}")
        pytest.skip(f"real data set not found at {REAL_DATA} (../shared/data)")
    out = tmp_path_factory.mktemp("real") / "xmm-rxcj0958"
    shutil.copytree(REAL_DATA, out)
    for path in out.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return out


@pytest.fixture(scope="session")
def longslit_data(tmp_path_factory) -> Path:
    """A private copy of the real long-slit frames (Kast blue, SPRAT; the shared one stays
    read-only): ``<copy>/kast_blue_2015-05-20``, ``<copy>/lt_sprat_2018-08-10``."""
    import os

    if not LONGSLIT_DATA.is_dir():
        if os.environ.get("CI"):  # CI must really run the real-data tests
            raise RuntimeError(f"the long-slit data set is missing: {LONGSLIT_DATA}")
        pytest.skip(f"long-slit data set not found at {LONGSLIT_DATA} (../shared/data)")
    out = tmp_path_factory.mktemp("longslit") / "longslit"
    shutil.copytree(LONGSLIT_DATA, out)
    for path in out.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return out


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real Redis for the test run: TEST_REDIS_URL if given, else a private redis-server."""
    import os

    from app.redis_server import EmbeddedRedis, free_port

    if os.environ.get("TEST_REDIS_URL"):
        yield os.environ["TEST_REDIS_URL"]
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), port=free_port()).start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    """The test Redis, flushed before and after the test."""
    import redis

    conn = redis.Redis.from_url(redis_server)
    conn.flushdb()
    yield redis_server
    conn.flushdb()
    conn.close()


@pytest.fixture
def worker(env, tmp_path):
    """A real ``rq worker`` subprocess with the settings ``env`` (a fixture of the test module:
    setting names -> values, as given to ``create_app``)."""
    import os
    import subprocess

    from app import jobs

    child_env = {k: v for k, v in os.environ.items() if not k.startswith("REGIO_")}
    child_env.update({f"REGIO_{k}": str(v) for k, v in env.items()})
    with open(tmp_path / "worker.log", "wb") as log:
        proc = subprocess.Popen(
            jobs.worker_command(env["REDIS_URL"], name=f"test-{tmp_path.name}"),
            cwd=ROOT,
            env=child_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    yield proc
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

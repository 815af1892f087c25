"""The embedded Redis: a private redis-server that starts, serves and stops without leftovers."""

import os
import shutil
import signal

import pytest
import redis

from app.redis_server import EmbeddedRedis, RedisStartError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive: read its state
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def test_unix_socket_server_starts_serves_and_stops(tmp_path):
    server = EmbeddedRedis(tmp_path / "r").start()
    pid = server.pid
    assert server.url.startswith("unix://")
    conn = redis.Redis.from_url(server.url)
    conn.set("k", "v")
    assert conn.get("k") == b"v"
    conn.close()
    server.stop()
    assert not _alive(pid)
    assert (tmp_path / "r" / "dump.rdb").exists(), "the snapshot is saved on shutdown"


def test_data_survives_a_restart(tmp_path):
    with EmbeddedRedis(tmp_path) as server:
        server.client().set("queued", "run-1")
    with EmbeddedRedis(tmp_path) as server:
        assert server.client().get("queued") == b"run-1"


def test_a_stale_socket_file_does_not_prevent_start(tmp_path):
    (tmp_path / "redis.sock").write_text("left by a killed server")
    with EmbeddedRedis(tmp_path) as server:
        assert server.client().ping()


def test_port_in_use_gives_a_clear_error(tmp_path, redis_server):
    port = int(redis_server.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(RedisStartError, match="redis-server exited at start"):
        EmbeddedRedis(tmp_path, port=port).start()


def test_persistence_is_on(tmp_path):
    """An append-only file and RDB snapshots: `--save "60 1"` as one argument had turned
    snapshots off without a word."""
    with EmbeddedRedis(tmp_path) as server, server.client() as conn:
        assert conn.config_get("appendonly") == {"appendonly": "yes"}
        assert conn.config_get("appendfsync") == {"appendfsync": "no"}
        assert conn.config_get("save") == {"save": "60 1"}
        assert (tmp_path / "appendonly.aof").exists() or (tmp_path / "appendonlydir").is_dir()


def test_a_killed_server_keeps_its_queue(tmp_path):
    """kill -9 leaves no time for a snapshot: what was written comes back from the AOF."""
    server = EmbeddedRedis(tmp_path).start()
    with server.client() as conn:
        conn.rpush("rq:queue:regio", "job-1", "job-2")
        conn.set("regio:alive:r1", "w", ex=600)
    os.kill(server.pid, signal.SIGKILL)
    server.process.wait()
    server.start()  # the same object, started again (as the supervisor does)
    try:
        with server.client() as conn:
            assert conn.lrange("rq:queue:regio", 0, -1) == [b"job-1", b"job-2"]
            assert 0 < conn.ttl("regio:alive:r1") <= 600
    finally:
        server.stop()


def test_a_snapshot_without_an_aof_is_loaded_then_the_aof_is_switched_on(tmp_path):
    """An instance from before the AOF was on holds only dump.rdb: its data is kept."""
    server = EmbeddedRedis(tmp_path).start()
    with server.client() as conn:
        conn.set("queued", "run-1")
        conn.save()
    os.kill(server.pid, signal.SIGKILL)
    server.process.wait()
    (tmp_path / "appendonly.aof").unlink(missing_ok=True)
    shutil.rmtree(tmp_path / "appendonlydir", ignore_errors=True)
    assert (tmp_path / "dump.rdb").exists()
    again = EmbeddedRedis(tmp_path).start()
    with again.client() as conn:
        assert conn.get("queued") == b"run-1"
        assert conn.config_get("appendonly") == {"appendonly": "yes"}
        assert again.aof_present
        conn.set("after", "switch")
    os.kill(again.pid, signal.SIGKILL)
    again.process.wait()
    with EmbeddedRedis(tmp_path) as third, third.client() as conn:
        assert conn.get("queued") == b"run-1" and conn.get("after") == b"switch"

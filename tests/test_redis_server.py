"""The embedded Redis: a private redis-server that starts, serves and stops without leftovers."""

import os

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

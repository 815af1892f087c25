"""The Redis rate limiter, against a real Redis: the limit holds, the window resets, it is atomic."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from app import ratelimit


@pytest.fixture
def conn(redis_url) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def test_the_limit_holds_within_a_window(conn):
    results = [ratelimit.hit(conn, "login:ip:10.0.0.1", 3, 60) for _ in range(5)]
    assert [allowed for allowed, _ in results] == [True, True, True, False, False]
    assert [retry for allowed, retry in results if allowed] == [0, 0, 0]
    assert all(0 < retry <= 60 for allowed, retry in results if not allowed)
    # other keys count on their own
    assert ratelimit.hit(conn, "login:ip:10.0.0.2", 3, 60) == (True, 0)
    # the counter expires with its window: nothing is left behind in Redis
    ttl = conn.pttl(ratelimit.KEY_PREFIX + "login:ip:10.0.0.1")
    assert 0 < ttl <= 60_000


def test_the_window_resets(conn):
    key = "reset:email:a@b.example"
    assert ratelimit.hit(conn, key, 2, 0.3) == (True, 0)
    assert ratelimit.hit(conn, key, 2, 0.3) == (True, 0)
    assert ratelimit.hit(conn, key, 2, 0.3) == (False, 1)  # less than a second left: 1
    deadline = time.monotonic() + 10
    while conn.exists(ratelimit.KEY_PREFIX + key):
        assert time.monotonic() < deadline, "the window never ended"
        time.sleep(0.05)
    assert ratelimit.hit(conn, key, 2, 0.3) == (True, 0)


def test_reset_forgets_the_attempts(conn):
    for _ in range(2):
        ratelimit.hit(conn, "k", 2, 60)
    assert not ratelimit.hit(conn, "k", 2, 60)[0]
    ratelimit.reset(conn, "k")
    assert ratelimit.hit(conn, "k", 2, 60) == (True, 0)


def test_a_counter_that_lost_its_expiry_gets_one_again(conn):
    conn.set(ratelimit.KEY_PREFIX + "k", 5)  # e.g. written by an older version, without TTL
    assert ratelimit.hit(conn, "k", 10, 30) == (True, 0)
    assert 0 < conn.pttl(ratelimit.KEY_PREFIX + "k") <= 30_000


def test_concurrent_hits_are_counted_exactly(redis_url):
    allowed: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        with redis.Redis.from_url(redis_url) as connection:
            for _ in range(25):
                ok, _retry = ratelimit.hit(connection, "burst", 40, 60)
                with lock:
                    allowed.append(ok)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(allowed) == 100
    assert allowed.count(True) == 40


@pytest.mark.parametrize(("limit", "window"), [(0, 10), (5, 0), (5, -1)])
def test_nonsense_limits_are_refused(conn, limit, window):
    with pytest.raises(ValueError, match="limit must be at least 1"):
        ratelimit.hit(conn, "k", limit, window)

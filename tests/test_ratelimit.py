"""The Redis rate limiter, against a real Redis: the limit holds, the window resets, it is atomic;
the exponential back-off doubles up to its cap, ends, resets and counts exactly."""

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


# ---------------------------------------------------------------------- exponential back-off

RULE = ratelimit.BackOff(free=3, base_s=1, cap_s=8, memory_s=60)


def test_back_off_doubles_after_the_free_failures_up_to_the_cap(conn):
    key = "login:pair:10.0.0.1:abc"
    assert RULE.wait(conn, key) == 0
    blocks = [RULE.failure(conn, key) for _ in range(8)]
    assert blocks == [0, 0, 0, 1, 2, 4, 8, 8]
    assert RULE.failures(conn, key) == 8
    assert 7 <= RULE.wait(conn, key) <= 8
    # the failures are remembered for memory_s after the last one, the block for its length
    assert 0 < conn.pttl(ratelimit.KEY_PREFIX + f"backoff:{key}:failures") <= 60_000
    assert 0 < conn.pttl(ratelimit.KEY_PREFIX + f"backoff:{key}:blocked") <= 8_000
    # other keys are not blocked
    assert RULE.wait(conn, "login:pair:10.0.0.2:abc") == 0


def test_back_off_block_ends_and_reset_forgets(conn):
    rule = ratelimit.BackOff(free=0, base_s=0.2, cap_s=0.2, memory_s=60)
    assert rule.failure(conn, "k") == 1  # 0.2 s, told as a whole second
    deadline = time.monotonic() + 10
    while rule.wait(conn, "k"):
        assert time.monotonic() < deadline, "the block never ended"
        time.sleep(0.05)
    assert rule.failures(conn, "k") == 1  # still remembered: the next failure blocks again
    assert rule.failure(conn, "k") == 1
    rule.reset(conn, "k")
    assert rule.failures(conn, "k") == 0 and rule.wait(conn, "k") == 0


def test_back_off_counts_concurrent_failures_exactly(redis_url):
    rule = ratelimit.BackOff(free=1000, base_s=1, cap_s=1, memory_s=60)

    def worker() -> None:
        with redis.Redis.from_url(redis_url) as connection:
            for _ in range(25):
                rule.failure(connection, "burst")

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with redis.Redis.from_url(redis_url) as connection:
        assert rule.failures(connection, "burst") == 100


@pytest.mark.parametrize(
    ("free", "base", "cap", "memory"), [(-1, 1, 2, 3), (1, 0, 2, 3), (1, 3, 2, 3), (1, 1, 5, 3)]
)
def test_nonsense_back_off_rules_are_refused(free, base, cap, memory):
    with pytest.raises(ValueError, match="need free >= 0"):
        ratelimit.BackOff(free=free, base_s=base, cap_s=cap, memory_s=memory)

"""Rate limits in Redis, shared by every web process and host: a fixed window and an
exponential back-off.

- ``hit(conn, key, limit, window_s)`` counts one attempt for ``key`` (e.g. ``"login:ip:1.2.3.4"``)
  in the current window of ``window_s`` seconds, which starts at the key's first attempt. A fixed
  window lets through at most ``2 * limit`` attempts around a window's end: enough to stop
  flooding (mail, password hashing), which is what it is for.
- ``BackOff``: failures of ``key`` (e.g. wrong passwords from one client for one account) are
  free up to ``free``; each further failure blocks the key for ``base_s * 2**k`` seconds
  (k = 0, 1, ...; at most ``cap_s``). ``wait`` tells how long a key is still blocked, ``failure``
  counts one failure, ``reset`` forgets them (e.g. after a success). The failures are forgotten
  ``memory_s`` seconds after the last one. The caller chooses the key so that one party's failures
  block only that party: keyed by the client, a guesser elsewhere never locks a user out.

Counts and expiries are set together in one Lua script, so concurrent callers never lose a count
nor leave a counter without an expiry. Redis errors propagate: the caller decides whether to fail
open or closed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

KEY_PREFIX = "regio:ratelimit:"

# INCR, and set the expiry on the first hit of a window (or if it is missing, e.g. after a
# PERSIST); returns the count and the window's remaining milliseconds.
_HIT = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if count == 1 or ttl < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
    ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


def hit(redis_conn: Any, key: str, limit: int, window_s: float) -> tuple[bool, int]:
    """Count an attempt; returns ``(allowed, retry_after_s)``.

    ``allowed`` is True for the first ``limit`` attempts of a window; ``retry_after_s`` is 0 then,
    else the whole seconds until the window ends (at least 1: a ``Retry-After`` value).
    """
    if limit < 1 or window_s <= 0:
        raise ValueError("limit must be at least 1 and window_s positive")
    window_ms = max(1, math.ceil(window_s * 1000))
    count, ttl_ms = redis_conn.eval(_HIT, 1, KEY_PREFIX + key, window_ms)
    if int(count) <= limit:
        return True, 0
    return False, max(1, math.ceil(int(ttl_ms) / 1000))


def reset(redis_conn: Any, key: str) -> None:
    """Forget the attempts counted for ``key`` (e.g. after a successful sign-in)."""
    redis_conn.delete(KEY_PREFIX + key)


# Count one failure (kept for ARGV[1] ms after the last one); past ARGV[2] free failures, block
# the key for min(ARGV[4], ARGV[3] * 2^(failures - free - 1)) ms. Returns the count and the block.
_FAIL = """
local failures = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local free = tonumber(ARGV[2])
if failures <= free then
    return {failures, 0}
end
local block = math.min(tonumber(ARGV[4]), tonumber(ARGV[3]) * 2 ^ (failures - free - 1))
block = math.max(1, math.floor(block))
redis.call('SET', KEYS[2], '1', 'PX', block)
return {failures, block}
"""


@dataclass(frozen=True)
class BackOff:
    """An exponential back-off rule: ``free`` failures, then blocks of ``base_s``, ``2 * base_s``,
    ``4 * base_s``... seconds (at most ``cap_s``); failures are forgotten ``memory_s`` seconds
    after the last one."""

    free: int
    base_s: float
    cap_s: float
    memory_s: float

    def __post_init__(self) -> None:
        if self.free < 0 or not 0 < self.base_s <= self.cap_s or self.memory_s < self.cap_s:
            raise ValueError("need free >= 0, 0 < base_s <= cap_s <= memory_s")

    def wait(self, redis_conn: Any, key: str) -> int:
        """Whole seconds ``key`` is still blocked for (0: it may try now)."""
        ttl_ms = int(redis_conn.pttl(_block_key(key)))
        return max(1, math.ceil(ttl_ms / 1000)) if ttl_ms > 0 else 0

    def failure(self, redis_conn: Any, key: str) -> int:
        """Count one failure of ``key``; the whole seconds it is now blocked for (0: not)."""
        _failures, block_ms = redis_conn.eval(
            _FAIL,
            2,
            _failures_key(key),
            _block_key(key),
            max(1, math.ceil(self.memory_s * 1000)),
            self.free,
            self.base_s * 1000,
            self.cap_s * 1000,
        )
        return math.ceil(int(block_ms) / 1000)

    def failures(self, redis_conn: Any, key: str) -> int:
        """How many failures of ``key`` are remembered."""
        return int(redis_conn.get(_failures_key(key)) or 0)

    @staticmethod
    def reset(redis_conn: Any, key: str) -> None:
        """Forget the failures and any block of ``key``."""
        redis_conn.delete(_failures_key(key), _block_key(key))


def _failures_key(key: str) -> str:
    return f"{KEY_PREFIX}backoff:{key}:failures"


def _block_key(key: str) -> str:
    return f"{KEY_PREFIX}backoff:{key}:blocked"

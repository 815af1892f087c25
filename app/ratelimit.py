"""A fixed-window rate limiter in Redis, shared by every web process and host.

``hit(conn, key, limit, window_s)`` counts one attempt for ``key`` (e.g. ``"login:ip:1.2.3.4"``
or ``"reset:email:a@b.c"``) in the current window of ``window_s`` seconds, which starts at the
key's first attempt. The count and the window's expiry are set in one Lua script, so concurrent
callers never lose a count nor leave a counter without an expiry.

A fixed window lets through at most ``2 * limit`` attempts around a window's end: enough to stop
password guessing and mail flooding, which is what it is for. Redis errors propagate: the caller
decides whether to fail open or closed.
"""

from __future__ import annotations

import math
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

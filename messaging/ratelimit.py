"""Rate limits backed by Redis, through the `limits` library (moving-window strategy).

One shared helper for every limit in the service (API ingress per key, AI requests per
rate_limit_key and per workspace, delivery rates per channel in the workers), so all of them use the
same Redis connection pool and the same semantics.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from . import queues

_lock = threading.Lock()
_limiter: MovingWindowRateLimiter | None = None
_limiter_pool: object | None = None


def _get_limiter() -> MovingWindowRateLimiter:
    global _limiter, _limiter_pool
    connection = queues.get_connection()
    pool = connection.connection_pool
    if _limiter is None or _limiter_pool is not pool:
        with _lock:
            # Reuse the queues' connection pool: no second set of sockets to Redis.
            storage = RedisStorage("redis://", connection_pool=pool, key_prefix="qs-limits")
            _limiter, _limiter_pool = MovingWindowRateLimiter(storage), pool
    return _limiter


@dataclass(frozen=True)
class LimitResult:
    """Outcome of one hit: `allowed`, and when refused, `retry_after` seconds until a slot frees."""

    allowed: bool
    retry_after: float = 0.0


def parse_limit(spec: str) -> RateLimitItem:
    """Parse a limit such as "5/minute", "50/second" or "100 per minute" (limits' notation).

    Raises ValueError for a malformed spec.
    """
    return parse(spec)


def hit(spec: str | RateLimitItem, *identifiers: str, cost: int = 1) -> LimitResult:
    """Consume `cost` from the limit `spec` for `identifiers`; report whether it was allowed.

    When refused, `retry_after` is the seconds (>= 0.001) until the oldest hit in the window expires.
    Raises redis.exceptions.RedisError when Redis is unreachable.
    """
    item = parse_limit(spec) if isinstance(spec, str) else spec
    limiter = _get_limiter()
    if limiter.hit(item, *identifiers, cost=cost):
        return LimitResult(True)
    stats = limiter.get_window_stats(item, *identifiers)
    return LimitResult(False, max(0.001, stats.reset_time - time.time()))

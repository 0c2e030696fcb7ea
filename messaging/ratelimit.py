"""Rate limits backed by Redis, through the `limits` library (moving-window strategy).

One shared helper (`hit`) for every limit in the service, so all of them use the same Redis
connection pool and the same semantics. The request-path policies are named here, once each:
`api_key_ingress` (every API request, per key) and `ai_request` (per rate_limit_key and per
workspace); each raises RateLimited when over. The workers' delivery rates use `hit` directly.

While Redis is unreachable the request-path policies are not checked (a warning is logged) and the
request goes on: the API keeps storing messages during a Redis outage and the sweep enqueues them
later, so refusing them would turn a queue outage into lost requests.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

import redis
from django.conf import settings
from limits import RateLimitItem, parse
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from . import queues
from .models import ApiKey, Workspace

logger = logging.getLogger(__name__)

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


class RateLimited(Exception):
    """A request over one of its limits. `message` names the limit and when to retry;
    `retry_after_seconds` is the wait in whole seconds (rounded up, at least 1) for `Retry-After`."""

    def __init__(self, message: str, retry_after_seconds: int):
        super().__init__(message)
        self.message, self.retry_after_seconds = message, retry_after_seconds


def _enforce(spec: str, identifiers: tuple[str, ...], what: str, name: str) -> bool:
    """Count one request against limit `spec` for `identifiers`.

    Raises RateLimited ("Too many `what` (limit ...). Retry after N s.") when over. Returns
    False when Redis could not be asked (logged as "`name` not checked"; failing fast while Redis was
    unreachable moments ago, see queues.unless_recently_unreachable), True when the request counted.
    """
    try:
        with queues.unless_recently_unreachable():
            result = hit(spec, *identifiers)
    except redis.exceptions.RedisError as exc:
        logger.warning("%s not checked, Redis unavailable: %s", name, exc)
        return False
    if not result.allowed:
        seconds = max(1, math.ceil(result.retry_after))
        raise RateLimited(f"Too many {what} (limit {spec}). Retry after {seconds} s.", seconds)
    return True


def api_key_ingress(api_key: ApiKey) -> None:
    """Count one API request against API_RATE_LIMIT_PER_KEY for `api_key`.

    Raises RateLimited when the key is over it. Not checked while Redis is unreachable (logged).
    """
    _enforce(
        settings.API_RATE_LIMIT_PER_KEY,
        ("api-key", str(api_key.pk)),
        "requests for this API key",
        "rate limit",
    )


def ai_request(workspace: Workspace | None, external_id: str, rate_limit_key: str) -> None:
    """Count one AI-reply request against its `rate_limit_key` and its workspace.

    Limits: AI_RATE_LIMIT_PER_KEY per rate_limit_key, and AI_RATE_LIMIT_PER_WORKSPACE (or the
    workspace's own `ai_per_minute`) per workspace. `workspace` is None for a workspace not created
    yet; it is then counted under `external_id`, the ID the client sent. An empty limit is off.
    Raises RateLimited naming the first limit that is over. Not checked while Redis is unreachable
    (logged).
    """
    workspace_key = workspace.external_id if workspace else external_id
    per_workspace = settings.AI_RATE_LIMIT_PER_WORKSPACE
    if workspace and workspace.ai_per_minute:
        per_workspace = f"{workspace.ai_per_minute}/minute"
    checks = [
        (settings.AI_RATE_LIMIT_PER_KEY, ("ai-key", rate_limit_key), f"rate_limit_key {rate_limit_key!r}"),
        (per_workspace, ("ai-workspace", workspace_key), f"workspace {workspace_key!r}"),
    ]
    for spec, identifiers, what in checks:
        if spec and not _enforce(spec, identifiers, f"AI requests for {what}", f"AI rate limit {what}"):
            return

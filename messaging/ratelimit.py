"""Rate limits backed by Redis, through the `limits` library (moving-window strategy).

One shared helper (`hit`) for every limit in the service, so all of them use the same Redis
connection pool and the same semantics. The request-path policies are named here, once each:
`api_key_ingress` (every API request, per key, spent from per-process leases of hits, see
IngressLeases) and `ai_request` (per rate_limit_key, per workspace and per API key); each raises RateLimited when over. The workers' delivery rates reserve call slots
instead (`reserve_slots`, below; the policy itself is messaging.delivery.gate.rate_limits).

While Redis is unreachable the request-path policies are not checked (a warning is logged) and the
request goes on: the API keeps storing messages during a Redis outage and the sweep enqueues them
later, so refusing them would turn a queue outage into lost requests.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from django.conf import settings
from limits import RateLimitItem, parse
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from . import queues
from .lib.textkey import fold_key
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


def _hit_once(spec: str, identifiers: tuple[str, ...]) -> LimitResult:
    with queues.unless_recently_unreachable():
        return hit(spec, *identifiers)


def _enforce(
    spec: str,
    identifiers: tuple[str, ...],
    what: str,
    name: str,
    *,
    check: Callable[[str, tuple[str, ...]], LimitResult] = _hit_once,
) -> bool:
    """Count one request against limit `spec` for `identifiers` with `check` (default: one Redis
    call per request).

    Raises RateLimited ("Too many `what` (limit ...). Retry after N s.") when over. Returns
    False when Redis could not be asked (logged as "`name` not checked"; failing fast while Redis was
    unreachable moments ago, see queues.unless_recently_unreachable), True when the request counted.
    """
    try:
        result = check(spec, identifiers)
    except redis.exceptions.RedisError as exc:
        logger.warning("%s not checked, Redis unavailable: %s", name, exc)
        return False
    if not result.allowed:
        seconds = max(1, math.ceil(result.retry_after))
        raise RateLimited(f"Too many {what} (limit {spec}). Retry after {seconds} s.", seconds)
    return True


# --- Ingress: hits leased from Redis, spent locally ------------------------------------------------
#
# Asking Redis on every API request cost one round trip per request. Instead each process leases a
# few hits at once from the key's sliding window in Redis and spends them locally. One Lua call grants
# min(wanted, what the window has left) and, in the same call, gives back the unspent hits of this
# process's previous lease once it has expired: the window then only ever holds, beyond the hits
# spent, the unspent part of at most one lease per process. (limits' `hit(..., cost=k)` is all or
# nothing and cannot give hits back: with sparse traffic each lease would strand k - 1 hits and a key
# well under its limit could be refused.)
#
# The window is kept as counters of hits per slot of a tenth of the window (Redis keys
# "qs-limits:lease:<key>:<slot number>", each expiring after the window), read on Redis's clock so web
# hosts' clocks need not agree. A call sums the slots that overlap the last window (11 of them: the
# window and up to one slot more), so it costs the same for a limit of 100/second as for 1,000,000:
# a list of hit times (limits' moving-window layout) costs Redis time in proportion to the limit.

# A lease is this share of the limit's rate per second, at least 1 hit and at most the limit.
INGRESS_LEASE_SHARE = 0.02
# Seconds a lease may be spent, from just before it was asked for; its unspent hits are then given back.
INGRESS_LEASE_SECONDS = 0.05
# Slots per window: the window's count is read with this granularity (a tenth of it).
INGRESS_WINDOW_SLOTS = 10

_LEASE_LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local limit, window, wanted = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local back_slot, back, slots = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local slot_ms = math.max(1, math.ceil(window / slots))
local span = math.ceil(window / slot_ms)
local current = math.floor(now / slot_ms)
local prefix = KEYS[1] .. ':'
if back > 0 and back_slot >= current - span then
  local left = tonumber(redis.call('GET', prefix .. back_slot) or '0')
  if left > 0 then redis.call('DECRBY', prefix .. back_slot, math.min(back, left)) end
end
-- Slots current - span .. current cover at least the last window.
local names = {}
for i = 0, span do names[i + 1] = prefix .. (current - i) end
local counts = redis.call('MGET', unpack(names))
local used = 0
for i = 1, #counts do used = used + (tonumber(counts[i]) or 0) end
local granted = math.min(wanted, limit - used)
if granted <= 0 then
  -- Full: a slot frees when the oldest slot holding hits leaves the counted range.
  for i = span, 0, -1 do
    if (tonumber(counts[i + 1]) or 0) > 0 then return {0, (current - i + span + 1) * slot_ms - now} end
  end
  return {0, slot_ms}
end
redis.call('INCRBY', prefix .. current, granted)
redis.call('PEXPIRE', prefix .. current, window + 2 * slot_ms)
return {granted, current}
"""


@dataclass
class _Lease:
    """One process's lease on one key's window. `left` hits may be spent until `expires` (monotonic
    seconds); they were counted in Redis in slot number `stamp` (Redis clock). `refused_until` (monotonic
    seconds): Redis said the window is full until then."""

    item: RateLimitItem
    size: int
    lock: threading.Lock
    left: int = 0
    stamp: int = 0
    expires: float = 0.0
    refused_until: float = 0.0


class IngressLeases:
    """Per-process leases on sliding-window limits in Redis (see the comment above).

    Tolerance, for a limit of N hits per window of W seconds, a lease of k hits (lease_size) and P
    processes each holding at most one lease per key at a time:
    - in any interval of W seconds a key is admitted at most N + P*k requests (at most N from leases
      taken within the interval, plus what remains of the one lease each process held at its start);
    - a request is refused only when the key was admitted at least N - (P-1)*k requests in the
      W + W/10 seconds before it (the window is read in slots of a tenth of it), so a key that used
      fewer than N - P*k in that time is never refused;
    - Retry-After is the time until the oldest slot holding hits leaves the counted range (at most
      W/10 after its oldest hit leaves the window; Redis's clock); meanwhile the process refuses the
      key without asking Redis again.
    Times are Redis's clock for the window and this process's monotonic clock for leases; hits are
    spent at most INGRESS_LEASE_SECONDS (plus one round trip) after Redis recorded them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: dict[tuple[str, tuple[str, ...]], _Lease] = {}
        self._connection: redis.Redis | None = None
        self._script = None

    @staticmethod
    def lease_size(item: RateLimitItem) -> int:
        """Hits per lease for `item`: INGRESS_LEASE_SHARE of its rate per second, in [1, limit]."""
        per_second = item.amount / item.get_expiry()
        return max(1, min(item.amount, int(per_second * INGRESS_LEASE_SHARE)))

    def _lease(self, spec: str, identifiers: tuple[str, ...]) -> tuple[_Lease, redis.Redis]:
        connection = queues.get_connection()
        lease = self._leases.get((spec, identifiers))
        if lease is None or self._connection is not connection:
            with self._lock:
                if self._connection is not connection:
                    # A new Redis client (tests point REDIS_URL elsewhere): leases came from the old one.
                    self._leases, self._connection = {}, connection
                    self._script = connection.register_script(_LEASE_LUA)
                lease = self._leases.get((spec, identifiers))
                if lease is None:
                    item = parse_limit(spec)
                    lease = _Lease(item, self.lease_size(item), threading.Lock())
                    self._leases[(spec, identifiers)] = lease
        return lease, connection

    def take(self, spec: str, identifiers: tuple[str, ...]) -> LimitResult:
        """Spend one hit of limit `spec` for `identifiers`, from this process's lease when it has one.

        Asks Redis (one call, through queues.unless_recently_unreachable) only when the lease is used
        up or expired. When refused, `retry_after` is the seconds until the window frees a slot.
        Thread-safe. Raises redis.exceptions.RedisError when Redis is unreachable (nothing is spent).
        """
        lease, connection = self._lease(spec, identifiers)
        with lease.lock:
            now = time.monotonic()
            if now < lease.refused_until:
                return LimitResult(False, lease.refused_until - now)
            if lease.left > 0 and now < lease.expires:
                lease.left -= 1
                return LimitResult(True)
            item = lease.item
            with queues.unless_recently_unreachable():
                granted, value = self._script(
                    keys=[f"qs-limits:lease:{item.key_for(*identifiers)}"],
                    args=[
                        item.amount,
                        item.get_expiry() * 1000,
                        lease.size,
                        lease.stamp,
                        lease.left,
                        INGRESS_WINDOW_SLOTS,
                    ],
                    client=connection,
                )
            # The expired lease's unspent hits were given back by that call; not before it succeeded.
            lease.left = 0
            if not granted:
                retry_after = max(0.001, value / 1000)
                lease.refused_until = now + retry_after
                return LimitResult(False, retry_after)
            lease.left, lease.stamp, lease.expires = int(granted) - 1, int(value), now + INGRESS_LEASE_SECONDS
            return LimitResult(True)


ingress_leases = IngressLeases()


def api_key_ingress(api_key: ApiKey) -> None:
    """Count one API request against API_RATE_LIMIT_PER_KEY for `api_key`, from this process's lease
    of hits (IngressLeases: most requests cost no Redis call).

    Tolerance, with P web processes and leases of k hits (2% of the limit per second, at least 1, e.g.
    2 for 100/second): in any window of the limit's length a key gets at most limit + P*k requests,
    and it is never refused while it has used fewer than limit - P*k in the window (plus a tenth of
    it) before.
    Raises RateLimited when the key is over it, with the seconds until a slot frees. Not checked
    while Redis is unreachable (logged).
    """
    _enforce(
        settings.API_RATE_LIMIT_PER_KEY,
        ("api-key", str(api_key.pk)),
        "requests for this API key",
        "rate limit",
        check=ingress_leases.take,
    )


def ai_request(
    workspace: Workspace | None, external_id: str, rate_limit_key: str, *, api_key: ApiKey
) -> None:
    """Count one AI-reply request against its `rate_limit_key`, its workspace and its API key.

    Limits, checked in this order: AI_RATE_LIMIT_PER_KEY per rate_limit_key, folded to one spelling
    (lib.textkey.fold_key: case, white space, zero-width and compatibility characters), so that
    "Tenant:C-1", "tenant:c-1 " and "ten\u200bant:c-1" share one budget; AI_RATE_LIMIT_PER_WORKSPACE
    (or the workspace's own `ai_per_minute`) per workspace; AI_RATE_LIMIT_PER_API_KEY per API key,
    so that a key cannot mint budget with new rate_limit_keys and workspaces (which are created on
    first use). `workspace` is None for a workspace not created yet; it is then counted under
    `external_id`, the ID the client sent. An empty limit is off. A request refused by one limit has
    counted against the ones checked before it, not the ones after, so the API-key limit counts
    accepted requests. Raises RateLimited naming the first limit that is over. Not checked while
    Redis is unreachable (logged).
    """
    workspace_key = workspace.external_id if workspace else external_id
    per_workspace = settings.AI_RATE_LIMIT_PER_WORKSPACE
    if workspace and workspace.ai_per_minute:
        per_workspace = f"{workspace.ai_per_minute}/minute"
    folded = fold_key(rate_limit_key)
    checks = [
        (settings.AI_RATE_LIMIT_PER_KEY, ("ai-key", folded), f"rate_limit_key {folded!r}"),
        (per_workspace, ("ai-workspace", workspace_key), f"workspace {workspace_key!r}"),
        (settings.AI_RATE_LIMIT_PER_API_KEY, ("ai-api-key", str(api_key.pk)), "this API key"),
    ]
    for spec, identifiers, what in checks:
        if spec and not _enforce(spec, identifiers, f"AI requests for {what}", f"AI rate limit {what}"):
            return


# --- Delivery rates: reserved send slots ------------------------------------------------------------
#
# A delivery rate such as DELIVERY_RATE_SMS=20/second must hold at the provider: no window of one
# second may see more than 20 calls, across every worker process. The `limits` strategies answer
# "may I, now?": the call then reaches the provider some milliseconds later, after the claim and a
# thread hand-off, so calls checked in one window could land in the next (up to 23 in a second at a
# 20/s limit). Here a worker reserves the *time* of its call instead: the earliest instant at which
# one more call keeps every window of (window + DELIVERY_RATE_GUARD_MS) at or under the limit. The
# worker waits until that instant and calls at once; a call that would start later than half the
# guard past its slot reserves again. So calls reach the provider at most a guard's fraction after
# their slot, and the guard absorbs it. Slots are also spaced evenly (at 20/second, one every 55 ms),
# so a burst goes out at the rate rather than a window's worth at one instant. Each limit is a sorted set of reserved times (Redis server
# clock, milliseconds) keyed by "<message id>:<attempt>": a message deferred to its slot finds its
# reservation when it comes back and keeps it; one that missed its slot replaces it with a new one
# instead of holding two.

_RESERVE_LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local member, horizon, late = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local limits, spans = {}, {}
-- A slot this member already holds in every limit, and has not missed by more than `late`, is kept.
local held = nil
for i = 1, #KEYS do
  limits[i] = tonumber(ARGV[2 + 2 * i])
  spans[i] = tonumber(ARGV[3 + 2 * i])
  local score = redis.call('ZSCORE', KEYS[i], member)
  if score and tonumber(score) >= now - late and (held == nil or held == tonumber(score)) then
    held = tonumber(score)
  else
    held = false
  end
end
if held then
  for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], horizon + spans[i] + 1000) end
  return {1, math.max(0, held - now)}
end
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. (now - spans[i]))
  redis.call('ZREM', KEYS[i], member)
end
-- Earliest time after t that a call could take without making limit + 1 calls fall within one span
-- of each other; nil when a call at t is fine.
local function blocked_until(key, limit, span, t)
  -- Calls are also spread out: none closer than span / limit to another, so a burst goes out at an
  -- even pace instead of a window's worth at once (which no pool of threads could start on time).
  local gap = math.floor(span / limit)
  if gap > 0 then
    -- Walk the reserved times from t on to the first hole at least `gap` wide on both sides.
    local cand, full = t, true
    while full do
      local rows = redis.call('ZRANGEBYSCORE', key, '(' .. (cand - gap), '+inf', 'WITHSCORES', 'LIMIT', 0, 256)
      full = #rows == 512
      for k = 2, #rows, 2 do
        local e = tonumber(rows[k])
        if e - cand >= gap then full = false; break end
        cand = e + gap
      end
    end
    if cand > t then return cand end
  end
  if redis.call('ZCOUNT', key, t - span, t + span) < limit then return nil end
  local before = redis.call('ZREVRANGEBYSCORE', key, t, t - span, 'WITHSCORES', 'LIMIT', 0, limit)
  local after = redis.call('ZRANGEBYSCORE', key, '(' .. t, t + span, 'WITHSCORES', 'LIMIT', 0, limit)
  local nb, na = #before / 2, #after / 2
  local later = nil
  for j = 0, limit do
    local k = limit - j
    if j <= nb and k <= na then
      local first = t
      if j > 0 then first = tonumber(before[2 * j]) end
      local last = t
      if k > 0 then last = tonumber(after[2 * k]) end
      if last - first <= span then
        local start = first
        if j == 0 then start = tonumber(after[2]) end
        if later == nil or start + span + 1 > later then later = start + span + 1 end
      end
    end
  end
  return later
end
local t = now
for round = 1, 100000 do
  local moved = false
  for i = 1, #KEYS do
    local later = blocked_until(KEYS[i], limits[i], spans[i], t)
    if later then t = later; moved = true end
  end
  if not moved or t - now > horizon then break end
end
if t - now > horizon then return {0, t - now} end
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], t, member)
  redis.call('PEXPIRE', KEYS[i], horizon + spans[i] + 1000)
end
return {1, t - now}
"""

_reserve_script = None


@dataclass(frozen=True)
class Slot:
    """A delivery-rate slot: `delay` seconds from now (Redis's clock) until the call may start.

    `reserved` False means no slot was free within the horizon; `delay` is then a lower bound of when
    one may be, and nothing was reserved.
    """

    reserved: bool
    delay: float


def reserve_slots(
    requests: list[tuple[list[tuple[str, RateLimitItem]], str]], *, horizon: float, guard: float
) -> list[Slot]:
    """Reserve one call slot for each request, in order, in one Redis round trip.

    `requests`: (limits, member) pairs, where limits is a list of (Redis key, limit) that the call
    must all respect (e.g. the channel's rate and the workspace's) and member names the call
    ("<message id>:<attempt>"; reserving again under the same member keeps the slot it holds unless
    that slot passed more than half the guard ago, then replaces it).
    `horizon`: seconds ahead a slot may be reserved; `guard`: seconds added to every window (see
    above). Returns a Slot per request. Raises redis.exceptions.RedisError when Redis is unreachable.
    """
    global _reserve_script
    connection = queues.get_connection()
    if _reserve_script is None or _reserve_script.registered_client is not connection:
        _reserve_script = connection.register_script(_RESERVE_LUA)
    guard_ms = int(guard * 1000)
    with connection.pipeline(transaction=False) as pipe:
        for limits, member in requests:
            args: list[object] = [member, int(horizon * 1000), guard_ms // 2]
            for _key, item in limits:
                args += [item.amount, item.get_expiry() * 1000 + guard_ms]
            _reserve_script(keys=[key for key, _ in limits], args=args, client=pipe)
        answers = pipe.execute()
    return [Slot(bool(reserved), max(0, delay) / 1000) for reserved, delay in answers]

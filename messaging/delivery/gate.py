"""The gate: before a delivery attempt, decide whether the message goes now, waits a moment, is put
back on the scheduler (deferred), or is skipped; and reserve its delivery-rate slot.

Nothing the gate decides uses an attempt. Decisions, in order:
1. skip: the message is no longer waiting (sent, cancelled, claimed) or now points at another job
   (a sweep, reschedule or retry superseded this one).
2. not due: `next_attempt_at` in the future. Within EARLY_WAIT_MAX_SECONDS the delivery waits in the
   worker (rq-scheduler releases jobs in whole seconds, up to one early); later, the job is deferred
   to that time. Nothing is ever handed to a provider before it is due.
3. delivery rate: the channel's DELIVERY_RATE_* limit and the workspace's own calls per second
   (`ratelimit.reserve_slots`): the delivery gets the time of its call. A slot soon enough is waited
   for in the worker; a later one is kept and the job deferred to it; none within the horizon defers
   the job without one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from limits import RateLimitItem, parse

from messaging import ratelimit
from messaging.models import Message

from .channels import get as get_channel
from .outbox import CLAIMABLE

# A delivery due (or given a rate slot) this many seconds ahead or less waits in the worker; one
# later is put back on the scheduler. rq-scheduler releases a job 1 to 2 s before it is due
# (queues.scheduler_time), so every job it releases waits here.
EARLY_WAIT_MAX_SECONDS = 2.5
# Batch jobs (bulk sends) wait for delivery-rate slots in the worker up to this many seconds, so a
# burst goes out at the rate, in order, without a job per message; the rest moves to one later batch
# job.
BATCH_WAIT_MAX_SECONDS = 20.0
# A single message's rate slot may be reserved this far ahead (its job is deferred to the slot).
RESERVE_HORIZON_SECONDS = 60.0
# A job deferred to a reserved slot is due this many seconds before the slot (and waits out the rest).
SLOT_LEAD_SECONDS = 1.0

SKIP, DEFER, WAIT, GO = "skip", "defer", "wait", "go"


@dataclass(frozen=True)
class Verdict:
    """What to do with a delivery: `action` (skip, defer, wait, go), `at` (defer: when the job
    should come back; wait: when the message is due), and the `reason` reported as the job's result."""

    action: str
    at: datetime | None = None
    reason: str = ""


def check(message: Message, job_id: str | None, now: datetime) -> Verdict:
    """Status, job and due time of `message` (read moments ago) for the job `job_id` (None: any).

    Pure: no database or Redis access.
    """
    if message.status not in CLAIMABLE:
        return Verdict(SKIP, reason=f"skipped: message is {message.status}")
    if job_id and message.rq_job_id and message.rq_job_id != job_id:
        return Verdict(SKIP, reason="skipped: superseded by another job")
    due = message.next_attempt_at
    if due and due > now:
        wait = (due - now).total_seconds()
        if wait > EARLY_WAIT_MAX_SECONDS:
            return Verdict(DEFER, due, f"deferred {wait:.1f}s")
        return Verdict(WAIT, due)
    return Verdict(GO)


@functools.lru_cache(maxsize=64)
def _limit(spec: str) -> RateLimitItem:
    return parse(spec)


def rate_limits(message: Message) -> list[tuple[str, RateLimitItem]]:
    """The delivery rates a call for `message` must respect, as (Redis key, limit) pairs: the channel's
    DELIVERY_RATE_LIMITS entry and the workspace's own per-second rate when set; [] when none."""
    channel = message.channel
    limits = []
    spec = settings.DELIVERY_RATE_LIMITS.get(channel)
    if spec:
        limits.append((f"qs:rate:{channel}", _limit(spec)))
    field = get_channel(channel).workspace_rate_field
    per_second = getattr(message.workspace, field, None) if field else None
    if per_second:
        limits.append((f"qs:rate:{channel}:ws:{message.workspace_id}", _limit(f"{per_second}/second")))
    return limits


def reserve(messages: list[Message], *, horizon: float) -> list[ratelimit.Slot | None]:
    """Reserve a delivery-rate slot for the next attempt of each message, in order, in one Redis round
    trip; None for a message whose channel and workspace have no rate. `horizon`: seconds ahead a slot
    may be reserved. Raises redis.exceptions.RedisError when Redis cannot be reached.
    """
    limits = [rate_limits(message) for message in messages]
    wanted = [
        (limit, f"{message.pk}:{message.attempts + 1}")
        for message, limit in zip(messages, limits, strict=True)
        if limit
    ]
    slots = iter(
        ratelimit.reserve_slots(wanted, horizon=horizon, guard=settings.DELIVERY_RATE_GUARD_MS / 1000)
        if wanted
        else []
    )
    return [next(slots) if limit else None for limit in limits]

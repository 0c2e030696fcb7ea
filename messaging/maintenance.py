"""Writes that keep the service whole: the outbox sweep (retention is in retention.py).

Kept apart from services.py (same conventions: `<entity>_<action>`, keyword-only arguments) because
they run from periodic jobs and management commands, not from requests.

The sweep is what makes "nothing accepted is ever lost" true (README, "Outbox sweep"). It only
ever moves a message with a conditional update on the message's current job id, so two sweeps running
at once never both re-enqueue the same message, and the worker's claim (which also checks the job id)
means a duplicate job left behind by any race does nothing.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from . import queues
from .models import DeliveryAttempt, Message, Status
from .services import CLAIMABLE, _enqueue_after_commit, backoff_seconds

logger = logging.getLogger(__name__)

# RQ job statuses after which the job will not run again.
ENDED_JOB_STATUSES = {"finished", "failed", "stopped", "canceled"}
# Rows read per round trip; all candidates are visited, chunk by chunk.
CHUNK = 500
INTERRUPTED = "interrupted"


class RedisUnavailable(Exception):
    """Raised inside the sweep to stop it at the first Redis failure (the next run tries again)."""


def _waiting_status(when: datetime | None, attempts: int) -> str:
    return Status.SCHEDULED if when and attempts == 0 else Status.QUEUED


def _requeue(row: dict, *, now: datetime, from_statuses: tuple[str, ...], when: datetime | None) -> bool:
    """Give a waiting message a new job id and enqueue it (at `when`, or now when None or past).

    The update is conditional on the status and the job id the sweep saw, so of two sweeps only one
    moves the message. Returns True when this call enqueued it. Raises RedisUnavailable (after putting
    the message back to `accepted`) when Redis cannot be reached.
    """
    when = when if when and when > now else None
    job_id = queues.new_job_id()
    status = _waiting_status(when, row["attempts"])
    moved = Message.objects.filter(pk=row["pk"], status__in=from_statuses, rq_job_id=row["rq_job_id"]).update(
        status=status, rq_job_id=job_id, queued_at=now
    )
    if moved != 1:
        return False
    try:
        queues.enqueue_delivery(str(row["pk"]), row["channel"], job_id=job_id, at=when)
    except redis.exceptions.RedisError as exc:
        Message.objects.filter(pk=row["pk"], status=status, rq_job_id=job_id).update(status=Status.ACCEPTED)
        raise RedisUnavailable(str(exc)) from exc
    if row["rq_job_id"]:
        queues.cancel_job(row["rq_job_id"])
    return True


def _chunks(queryset, fields: tuple[str, ...]):
    rows: list[dict] = []
    for row in queryset.values(*fields).iterator(chunk_size=CHUNK):
        rows.append(row)
        if len(rows) == CHUNK:
            yield rows
            rows = []
    if rows:
        yield rows


FIELDS = (
    "pk",
    "channel",
    "status",
    "rq_job_id",
    "next_attempt_at",
    "queued_at",
    "attempts",
    "max_attempts",
    "sending_started_at",
)


def _sweep_accepted(now: datetime, counts: Counter) -> None:
    """Enqueue messages left `accepted` (Redis was unreachable when they were stored or retried)."""
    grace = now - timedelta(seconds=settings.SWEEP_GRACE_SECONDS)
    candidates = Message.objects.filter(status=Status.ACCEPTED, accepted_at__lt=grace).order_by("accepted_at")
    for rows in _chunks(candidates, FIELDS):
        for row in rows:
            if _requeue(row, now=now, from_statuses=(Status.ACCEPTED,), when=row["next_attempt_at"]):
                counts["enqueued_accepted"] += 1


def _sweep_waiting(now: datetime, counts: Counter) -> None:
    """Re-enqueue `queued`/`scheduled` messages whose job is missing, ended, or stuck past its time.

    Looks at messages due now, and at scheduled ones due within the next hour so a job lost in a Redis
    restart is restored before its time; later ones are checked as they come into that window.
    """
    grace = now - timedelta(seconds=settings.SWEEP_GRACE_SECONDS)
    overdue = now - timedelta(seconds=settings.SWEEP_OVERDUE_SECONDS)
    candidates = (
        Message.objects.filter(status__in=CLAIMABLE)
        .filter(Q(queued_at__isnull=True) | Q(queued_at__lt=grace))
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lt=now + timedelta(hours=1)))
        .order_by("next_attempt_at", "queued_at")
    )
    connection = queues.get_connection()
    on_queues: dict[str, set[str]] = {}
    for rows in _chunks(candidates, FIELDS):
        try:
            states = queues.job_states([row["rq_job_id"] for row in rows if row["rq_job_id"]])
            with connection.pipeline(transaction=False) as pipe:
                for row in rows:
                    pipe.zscore(queues.SCHEDULED_JOBS_KEY, row["rq_job_id"] or "-")
                in_scheduler = pipe.execute()
        except redis.exceptions.RedisError as exc:
            raise RedisUnavailable(str(exc)) from exc
        orphans = _orphaned_queued_jobs(rows, states, overdue, on_queues)
        stalled = _stalled_started_jobs(rows, states, now)
        for row, score in zip(rows, in_scheduler, strict=True):
            state = states.get(row["rq_job_id"]) if row["rq_job_id"] else None
            if state is None or state in ENDED_JOB_STATUSES:
                reason = "job_missing"
            elif row["rq_job_id"] in orphans:
                reason = "job_orphaned"  # taken off its queue by a worker that died before starting it
            elif row["rq_job_id"] in stalled:
                reason = "job_stalled"  # started, then its worker and work horse died before the claim
            elif state == "scheduled" and score is None:
                reason = "job_missing"  # the job hash survived but rq-scheduler no longer knows it
            elif state == "scheduled" and row["next_attempt_at"] and row["next_attempt_at"] < overdue:
                reason = "overdue"  # rq-scheduler is not moving it: queue it directly
            else:
                continue
            when = None if reason == "overdue" else row["next_attempt_at"]
            if _requeue(row, now=now, from_statuses=CLAIMABLE, when=when):
                counts[f"requeued_{reason}"] += 1


def _orphaned_queued_jobs(
    rows: list[dict], states: dict[str, str | None], overdue: datetime, on_queues: dict[str, set[str]]
) -> set[str]:
    """Job ids RQ still calls `queued` that are no longer on their queue.

    A worker killed between taking a job off the queue and starting it leaves the job like that
    (RQ parks it in an intermediate list that only a later maintenance pass recovers). Only jobs of
    messages waiting since before `overdue` are checked, and each queue is read once per sweep
    (`on_queues` caches {channel: job ids on its queue}), so a healthy backlog costs one LRANGE.
    """
    suspects = [
        row
        for row in rows
        if row["rq_job_id"]
        and states.get(row["rq_job_id"]) == "queued"
        and (row["queued_at"] is None or row["queued_at"] < overdue)
    ]
    if not suspects:
        return set()
    connection = queues.get_connection()
    try:
        for channel in {row["channel"] for row in suspects} - on_queues.keys():
            on_queues[channel] = {raw.decode() for raw in connection.lrange(f"rq:queue:{channel}", 0, -1)}
    except redis.exceptions.RedisError as exc:
        raise RedisUnavailable(str(exc)) from exc
    return {row["rq_job_id"] for row in suspects if row["rq_job_id"] not in on_queues[row["channel"]]}


def _stalled_started_jobs(rows: list[dict], states: dict[str, str | None], now: datetime) -> set[str]:
    """Job ids RQ calls `started` that cannot still be running, though their message is still waiting.

    A delivery job claims its message within moments of starting (or defers it, which gives the
    message a new job id), so a job started longer ago than its timeout plus
    SWEEP_SENDING_GRACE_SECONDS whose message still points at it died with its worker. RQ itself
    would only notice at its next maintenance pass (every 10 minutes).
    """
    started = [
        row["rq_job_id"] for row in rows if row["rq_job_id"] and states.get(row["rq_job_id"]) == "started"
    ]
    if not started:
        return set()
    try:
        started_at = queues.jobs_started_at(started)
    except redis.exceptions.RedisError as exc:
        raise RedisUnavailable(str(exc)) from exc
    grace = timedelta(seconds=settings.SWEEP_SENDING_GRACE_SECONDS)
    single = now - timedelta(seconds=settings.RQ_JOB_TIMEOUT) - grace
    batch = now - timedelta(seconds=queues.batch_job_timeout(settings.BULK_BATCH_SIZE)) - grace
    stalled = set()
    for job_id, when in started_at.items():
        limit = batch if job_id.startswith(queues.BATCH_JOB_PREFIX) else single
        if when is None or when < limit:
            stalled.add(job_id)
    return stalled


def _sweep_sending(now: datetime, counts: Counter) -> None:
    """Resolve messages stuck in `sending`: their job ended without a result, or ran past the timeout."""
    timeout = now - timedelta(seconds=settings.RQ_JOB_TIMEOUT + settings.SWEEP_SENDING_GRACE_SECONDS)
    candidates = Message.objects.filter(status=Status.SENDING).order_by("sending_started_at")
    for rows in _chunks(candidates, FIELDS):
        try:
            states = queues.job_states([row["rq_job_id"] for row in rows if row["rq_job_id"]])
        except redis.exceptions.RedisError:
            # Without Redis only the timeout tells; a job cannot outlive RQ_JOB_TIMEOUT.
            states = {}
        for row in rows:
            state = states.get(row["rq_job_id"], "unknown") if row["rq_job_id"] else None
            started = row["sending_started_at"]
            if state in ENDED_JOB_STATUSES:
                pass  # the worker or its work horse died mid-attempt and RQ recorded the job as ended
            elif started is None or started < timeout:
                pass  # worker and work horse both gone (or Redis lost the job): the job cannot still run
            else:
                continue
            if message_interrupted_resolve(
                message_id=row["pk"], attempts=row["attempts"], job_id=row["rq_job_id"]
            ):
                counts["resolved_sending"] += 1


@transaction.atomic
def message_interrupted_resolve(*, message_id, attempts: int, job_id: str) -> str | None:
    """Settle a message whose delivery attempt `attempts` ended without a recorded outcome.

    The provider may or may not have received that attempt; a retry sends the same Idempotency-Key
    (the message id) so the provider can drop a duplicate. Records a DeliveryAttempt with outcome
    `transient` and error kind `interrupted`, then queues a retry after the usual backoff when
    attempts remain, else marks the message failed with the reason. Conditional on the message still
    being `sending` with this attempt count and job id; returns the new status, or None when something
    else moved the message first.
    """
    now = timezone.now()
    message = (
        Message.objects.select_for_update()
        .filter(pk=message_id, status=Status.SENDING, attempts=attempts, rq_job_id=job_id)
        .first()
    )
    if message is None:
        return None
    started = message.sending_started_at or now
    reason = (
        f"Delivery attempt {attempts} was interrupted (worker stopped or Redis lost the job) and no "
        "answer was recorded; the provider may have received it."
    )
    DeliveryAttempt.objects.create(
        message=message,
        number=attempts,
        started_at=started,
        duration_ms=max(0, int((now - started).total_seconds() * 1000)),
        outcome=DeliveryAttempt.Outcome.TRANSIENT,
        error_kind=INTERRUPTED,
        error=reason,
    )
    fields = {"last_error": reason, "error_kind": INTERRUPTED}
    if attempts < message.max_attempts:
        message.next_attempt_at = now + timedelta(seconds=backoff_seconds(attempts))
        message.rq_job_id = queues.new_job_id()
        message.status = Status.QUEUED
        Message.objects.filter(pk=message.pk).update(
            status=Status.QUEUED,
            next_attempt_at=message.next_attempt_at,
            rq_job_id=message.rq_job_id,
            **fields,
        )
        _enqueue_after_commit(message)
        return Status.QUEUED
    Message.objects.filter(pk=message.pk).update(
        status=Status.FAILED, failed_at=now, next_attempt_at=None, **fields
    )
    return Status.FAILED


def messages_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Run the outbox sweep once; return counts of what it did.

    1. `accepted` messages older than SWEEP_GRACE_SECONDS are enqueued (now, or at their time).
    2. `queued`/`scheduled` messages due now or within the hour whose RQ job is missing or ended,
       (for messages waiting over SWEEP_OVERDUE_SECONDS) `queued` but no longer on its queue, or
       `started` longer ago than its timeout plus SWEEP_SENDING_GRACE_SECONDS, are enqueued again; a job still in rq-scheduler SWEEP_OVERDUE_SECONDS after its time is queued
       directly (no scheduler running).
    3. `sending` messages whose job ended, or that started more than RQ_JOB_TIMEOUT +
       SWEEP_SENDING_GRACE_SECONDS ago, are retried (attempts left) or failed with the reason.

    Stops early, with `redis_unavailable: 1` in the counts, when Redis cannot be reached; what it
    could not enqueue stays `accepted` for the next run. Safe to run concurrently with itself.
    """
    now = now or timezone.now()
    counts: Counter = Counter()
    try:
        _sweep_sending(now, counts)
        _sweep_accepted(now, counts)
        _sweep_waiting(now, counts)
    except RedisUnavailable as exc:
        logger.warning("sweep stopped, Redis unavailable: %s", exc)
        counts["redis_unavailable"] = 1
    if any(counts.values()):
        logger.info("sweep: %s", dict(counts))
    return dict(counts)

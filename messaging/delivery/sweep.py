"""The outbox sweep: what makes "nothing accepted is ever lost" true.

A periodic job (every SWEEP_INTERVAL_SECONDS; also `manage.py sweep_messages`) that:
1. settles messages left `sending` by a worker that stopped mid-attempt (recorded as an
   `interrupted` attempt, then retried or failed like any other, by messaging.delivery.outcomes);
2. enqueues messages left `accepted` (Redis was unreachable when they were stored or retried);
3. re-enqueues waiting messages whose job is missing (a Redis restart), ended, stranded by a killed
   worker, or overdue in rq-scheduler.

It reads candidates a chunk at a time, with no cursor left open while it writes (SQLite refuses a
write from a connection whose read snapshot is older than another writer's commit), moves each
chunk with one conditional UPDATE statement run for every row (on the message's current status and
job id, so two sweeps at once never both move a message, and the worker's claim ignores any stale
job left behind), and enqueues the chunk in one pipeline, messages due at the same second together
as batch jobs. A backlog of 10,000 messages is back on the queues in seconds.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from datetime import datetime, timedelta

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from messaging import queues
from messaging.models import Message, Status

from . import outbox, outcomes
from . import rows as rows_module

logger = logging.getLogger(__name__)

# RQ job statuses after which the job will not run again.
ENDED_JOB_STATUSES = {"finished", "failed", "stopped", "canceled"}
# Rows read (and moved) at a time.
CHUNK = 500
FIELDS = (
    "pk",
    "channel",
    "status",
    "rq_job_id",
    "next_attempt_at",
    "queued_at",
    "accepted_at",
    "attempts",
    "sending_started_at",
)


class RedisUnavailable(Exception):
    """Raised inside the sweep to stop it at the first Redis failure (the next run tries again)."""


def _chunks(queryset, order: tuple[str, str]):
    """Yield lists of at most CHUNK rows (dicts of FIELDS) in `order` (a column and pk), each read in
    full before it is handed out: keyset pagination, so rows moved meanwhile are not read twice."""
    column = order[0]
    last = None
    while True:
        page = queryset.order_by(column, "pk")
        if last is not None:
            value, pk = last
            page = page.filter(Q(**{f"{column}__gt": value}) | Q(**{column: value, "pk__gt": pk}))
        rows = list(page.values(*FIELDS)[:CHUNK])
        if not rows:
            return
        yield rows
        last = (rows[-1][column], rows[-1]["pk"])
        if len(rows) < CHUNK:
            return


def requeue(
    rows: list[dict], *, now: datetime, from_statuses: tuple[str, ...], immediately: bool = False
) -> int:
    """Give waiting messages new jobs and enqueue them; return how many this call moved.

    `rows`: dicts of FIELDS as read. Each message is due at its `next_attempt_at` (now when that has
    passed, or with `immediately`); messages of one channel due in the same second share batch jobs of
    up to BULK_BATCH_SIZE. Each move is conditional on the status and job id read, so of two sweeps
    only one moves a message. Raises RedisUnavailable (the messages are then left `accepted`) when
    Redis cannot be reached.
    """
    groups: dict[tuple[str, datetime | None], list[dict]] = defaultdict(list)
    for row in rows:
        when = row["next_attempt_at"]
        when = None if immediately or not when or when <= now else when
        row["when"] = when
        groups[(row["channel"], queues.scheduler_time(when) if when else None)].append(row)
    for group in groups.values():
        for start in range(0, len(group), settings.BULK_BATCH_SIZE):
            chunk = group[start : start + settings.BULK_BATCH_SIZE]
            job_id = queues.new_batch_job_id() if len(chunk) > 1 else None
            for row in chunk:
                row["new_job_id"] = job_id or queues.new_job_id()
    messages, statuses, moves = [], {}, []
    for row in rows:
        message = Message(
            pk=row["pk"], channel=row["channel"], rq_job_id=row["rq_job_id"], attempts=row["attempts"]
        )
        statuses[str(message.pk)] = (
            Status.SCHEDULED if row["when"] and row["attempts"] == 0 else Status.QUEUED
        )
        # next_attempt_at is kept: an overdue message queued at once is still not sent before its time.
        moves.append((message, row["new_job_id"], row["next_attempt_at"]))
        messages.append(message)
    with transaction.atomic():
        moved_ids = rows_module.move(moves, from_statuses=from_statuses, status=statuses, queued_at=now)
    moved = [
        (message, row) for message, row in zip(messages, rows, strict=True) if str(message.pk) in moved_ids
    ]
    for message, row in moved:
        message.next_attempt_at = row["when"]  # when the job is due: now for one queued at once
    messages = [message for message, _ in moved]
    if not outbox.enqueue(messages):
        raise RedisUnavailable("could not enqueue")
    queues.cancel_jobs(row["rq_job_id"] for _message, row in moved)
    return len(moved)


def _sweep_accepted(now: datetime, counts: Counter) -> None:
    """Enqueue messages left `accepted` (Redis was unreachable when they were stored or retried)."""
    grace = now - timedelta(seconds=settings.SWEEP_GRACE_SECONDS)
    candidates = Message.objects.filter(status=Status.ACCEPTED, accepted_at__lt=grace)
    for rows in _chunks(candidates, ("accepted_at", "pk")):
        counts["enqueued_accepted"] += requeue(rows, now=now, from_statuses=(Status.ACCEPTED,))


def _sweep_waiting(now: datetime, counts: Counter) -> None:
    """Re-enqueue `queued`/`scheduled` messages whose job is missing, ended, or stuck past its time.

    Looks at messages due now, and at scheduled ones due within the next hour so a job lost in a Redis
    restart is restored before its time; later ones are checked as they come into that window.
    """
    grace = now - timedelta(seconds=settings.SWEEP_GRACE_SECONDS)
    overdue = now - timedelta(seconds=settings.SWEEP_OVERDUE_SECONDS)
    redis_connection = queues.get_connection()
    on_queues: dict[str, set[str]] = {}
    # One status at a time, an equality: with `status IN (...)` SQLite's planner (which knows only
    # the average number of rows per status) walks the whole accepted_at index instead of the
    # (status, accepted_at) range, seconds at a million messages.
    for status in outbox.CLAIMABLE:
        candidates = (
            Message.objects.filter(status=status)
            .filter(Q(queued_at__isnull=True) | Q(queued_at__lt=grace))
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lt=now + timedelta(hours=1)))
        )
        for rows in _chunks(candidates, ("accepted_at", "pk")):
            try:
                states = queues.job_states(sorted({row["rq_job_id"] for row in rows if row["rq_job_id"]}))
                with redis_connection.pipeline(transaction=False) as pipe:
                    for row in rows:
                        pipe.zscore(queues.SCHEDULED_JOBS_KEY, row["rq_job_id"] or "-")
                    in_scheduler = pipe.execute()
                orphans = _orphaned_queued_jobs(rows, states, overdue, on_queues)
                stalled = _stalled_started_jobs(rows, states, now)
            except redis.exceptions.RedisError as exc:
                raise RedisUnavailable(str(exc)) from exc
            by_reason: dict[str, list[dict]] = defaultdict(list)
            for row, score in zip(rows, in_scheduler, strict=True):
                state = states.get(row["rq_job_id"]) if row["rq_job_id"] else None
                if state is None or state in ENDED_JOB_STATUSES:
                    reason = "job_missing"
                elif row["rq_job_id"] in orphans:
                    reason = "job_orphaned"  # taken off its queue by a worker that died before starting it
                elif row["rq_job_id"] in stalled:
                    reason = "job_stalled"  # started, then its worker died before the claim
                elif state == "scheduled" and score is None:
                    reason = "job_missing"  # the job hash survived but rq-scheduler no longer knows it
                elif state == "scheduled" and row["next_attempt_at"] and row["next_attempt_at"] < overdue:
                    reason = "overdue"  # rq-scheduler is not moving it: queue it directly
                else:
                    continue
                by_reason[reason].append(row)
            for reason, found in by_reason.items():
                counts[f"requeued_{reason}"] += requeue(
                    found, now=now, from_statuses=outbox.CLAIMABLE, immediately=reason == "overdue"
                )


def _orphaned_queued_jobs(
    rows: list[dict], states: dict[str, str | None], overdue: datetime, on_queues: dict[str, set[str]]
) -> set[str]:
    """Job ids RQ still calls `queued` that are no longer on their queue.

    A worker killed between taking a job off the queue and starting it leaves the job like that.
    Only jobs of messages waiting since before `overdue` are checked, and each queue is read once per
    sweep (`on_queues` caches {channel: job ids on its queue}), so a healthy backlog costs one LRANGE.
    Raises redis.exceptions.RedisError.
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
    redis_connection = queues.get_connection()
    for channel in {row["channel"] for row in suspects} - on_queues.keys():
        on_queues[channel] = {raw.decode() for raw in redis_connection.lrange(f"rq:queue:{channel}", 0, -1)}
    return {row["rq_job_id"] for row in suspects if row["rq_job_id"] not in on_queues[row["channel"]]}


def _stalled_started_jobs(rows: list[dict], states: dict[str, str | None], now: datetime) -> set[str]:
    """Job ids RQ calls `started` that cannot still be running, though their message is still waiting.

    A delivery job claims its message within moments of starting (or defers it, which gives the
    message a new job id), so a job started longer ago than its timeout plus
    SWEEP_SENDING_GRACE_SECONDS whose message still points at it died with its worker. RQ itself
    would only notice at its next maintenance pass (every 10 minutes). Raises redis.exceptions.RedisError.
    """
    started = sorted(
        {row["rq_job_id"] for row in rows if row["rq_job_id"] and states.get(row["rq_job_id"]) == "started"}
    )
    if not started:
        return set()
    started_at = queues.jobs_started_at(started)
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
    """Settle messages stuck in `sending`: their job ended without an outcome, or ran past its timeout
    (the worker was killed). Each gets an `interrupted` attempt, then a retry or `failed`."""
    timeout = now - timedelta(seconds=settings.RQ_JOB_TIMEOUT + settings.SWEEP_SENDING_GRACE_SECONDS)
    candidates = Message.objects.filter(status=Status.SENDING)
    for rows in _chunks(candidates, ("accepted_at", "pk")):
        try:
            states = queues.job_states(sorted({row["rq_job_id"] for row in rows if row["rq_job_id"]}))
        except redis.exceptions.RedisError:
            # Without Redis only the timeout tells; a job cannot outlive RQ_JOB_TIMEOUT.
            states = {}
        interrupted = []
        for row in rows:
            state = states.get(row["rq_job_id"], "unknown") if row["rq_job_id"] else None
            started = row["sending_started_at"]
            if state in ENDED_JOB_STATUSES or started is None or started < timeout:
                # The worker died mid-attempt and RQ recorded its job as ended, or worker and job are
                # gone (or Redis lost the job): the attempt cannot still be running.
                interrupted.append(row["pk"])
        if not interrupted:
            continue
        messages = list(Message.objects.filter(pk__in=interrupted, status=Status.SENDING))
        results = outcomes.record([(m, outcomes.interrupted_attempt(m, now)) for m in messages])
        counts["resolved_sending"] += sum(1 for result in results if result)


def messages_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Run the outbox sweep once; return counts of what it did.

    1. `sending` messages whose job ended, or that started more than RQ_JOB_TIMEOUT +
       SWEEP_SENDING_GRACE_SECONDS ago, are retried (attempts left) or failed with the reason.
    2. `accepted` messages older than SWEEP_GRACE_SECONDS are enqueued (now, or at their time).
    3. `queued`/`scheduled` messages due now or within the hour whose RQ job is missing or ended,
       (waiting over SWEEP_OVERDUE_SECONDS) `queued` but no longer on its queue, or `started` longer
       ago than its timeout plus SWEEP_SENDING_GRACE_SECONDS, are enqueued again; a job still in
       rq-scheduler SWEEP_OVERDUE_SECONDS after its time is queued directly (no scheduler running).

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
    counts = Counter({name: count for name, count in counts.items() if count})
    if counts:
        logger.info("sweep: %s", dict(counts))
    return dict(counts)

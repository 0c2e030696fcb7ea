"""The outbox: a message's job goes to Redis only after the transaction that stored the message
commits, and when Redis cannot take it the message is left `accepted` for the sweep.

Every write that makes messages wait for delivery (intake, bulk sends, retries, reschedules,
deferrals, the sweep itself) goes through `enqueue_after_commit` or `enqueue`, for one message or
many: a message's job is `deliver(id)`, or `deliver_batch(ids)` when its `rq_job_id` names a batch
job (bulk sends), due now or at its `next_attempt_at`. So a worker never sees a job for a row it
cannot read, and nothing accepted is lost while Redis is down.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Iterable

import redis
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from messaging import queues
from messaging.models import Message, Status

logger = logging.getLogger(__name__)

CLAIMABLE = (Status.QUEUED, Status.SCHEDULED)


def delivery_jobs(messages: Iterable[Message]) -> list[queues.DeliveryJob]:
    """The jobs that deliver `messages`: one per message, or one per batch job id they share.

    A job is due at the message's `next_attempt_at` when that is in the future, else now.
    """
    now = timezone.now()
    jobs: list[queues.DeliveryJob] = []
    batches: dict[str, list[Message]] = {}
    for message in messages:
        if message.rq_job_id.startswith(queues.BATCH_JOB_PREFIX):
            batches.setdefault(message.rq_job_id, []).append(message)
            continue
        at = message.next_attempt_at if message.next_attempt_at and message.next_attempt_at > now else None
        jobs.append(queues.DeliveryJob(message.channel, message.rq_job_id, (str(message.pk),), at))
    for job_id, members in batches.items():
        due = [m.next_attempt_at for m in members if m.next_attempt_at and m.next_attempt_at > now]
        at = min(due) if len(due) == len(members) else None
        jobs.append(queues.DeliveryJob(members[0].channel, job_id, tuple(str(m.pk) for m in members), at))
    return jobs


def mark_for_sweep(message_ids: list) -> int:
    """Leave waiting messages `accepted` (their job could not be enqueued); the sweep enqueues them.

    Only messages still queued or scheduled move; returns how many did.
    """
    if not message_ids:
        return 0
    return Message.objects.filter(pk__in=message_ids, status__in=CLAIMABLE).update(status=Status.ACCEPTED)


def enqueue(messages: list[Message]) -> bool:
    """Enqueue the delivery jobs of `messages` now (committed rows, status queued or scheduled).

    Returns True when Redis took them. When it cannot be reached, the messages are marked `accepted`
    (also in memory) for the sweep, a warning is logged and False is returned.
    """
    if not messages:
        return True
    try:
        queues.enqueue_jobs(delivery_jobs(messages))
    except redis.exceptions.RedisError as exc:
        logger.warning("Redis unavailable, %d messages left for the sweep: %s", len(messages), exc)
        mark_for_sweep([m.pk for m in messages])
        for message in messages:
            if message.status in CLAIMABLE:
                message.status = Status.ACCEPTED
        return False
    return True


def enqueue_after_commit(messages: Iterable[Message], *, buffered: bool = False) -> None:
    """Enqueue the delivery jobs of `messages` once the current transaction commits.

    With `buffered` (the API's path) and ENQUEUE_BATCH_MS > 0, jobs due now go through the process's
    enqueue buffer (enqueued together with other requests' moments later, off the request's path).
    """
    messages = list(messages)
    if not messages:
        return

    def on_commit() -> None:
        # While Redis is known to be down, enqueueing fails at once: do it now, so the answer says
        # `accepted` (left for the sweep) rather than `queued`.
        if buffered and settings.ENQUEUE_BATCH_MS > 0 and not queues.recently_unreachable():
            later = [m for m in messages if m.next_attempt_at is not None]
            buffer.add([m for m in messages if m.next_attempt_at is None])
            enqueue(later)
        else:
            enqueue(messages)

    transaction.on_commit(on_commit)


class EnqueueBuffer:
    """Gathers messages due now from request threads and enqueues their jobs together.

    A request adds its committed messages and returns; a thread of the process wakes ENQUEUE_BATCH_MS
    later and enqueues everything gathered in one Redis pipeline (RQ's `enqueue_many`): under load
    one round trip per batch instead of one per request. When Redis cannot be reached the messages are
    marked `accepted` for the sweep. Messages still in the buffer when the process exits are flushed
    by an atexit hook and gunicorn's worker_exit hook; a process killed first leaves them `queued`
    without a job, and the sweep enqueues them after SWEEP_GRACE_SECONDS.
    """

    def __init__(self) -> None:
        self._items: list[Message] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pid: int | None = None

    def add(self, messages: list[Message]) -> None:
        """Enqueue the jobs of `messages` (due now) within ENQUEUE_BATCH_MS."""
        if not messages:
            return
        with self._lock:
            if self._pid != os.getpid():  # first use in this process (or a fork of it)
                self._pid, self._items = os.getpid(), []
                threading.Thread(target=self._run, name="enqueue-buffer", daemon=True).start()
                atexit.register(self.flush)
            self._items.extend(messages)
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(settings.ENQUEUE_BATCH_MS / 1000)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the thread must survive; the sweep catches up
                logger.exception("enqueue buffer flush failed")
            finally:
                # This thread's database connection (opened only when Redis failed) is not kept.
                connection.close()

    def flush(self) -> int:
        """Enqueue everything gathered so far, now; return how many messages were handed to Redis."""
        with self._lock:
            items, self._items = self._items, []
        return len(items) if items and enqueue(items) else 0


buffer = EnqueueBuffer()

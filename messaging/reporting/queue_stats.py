"""Numbers per delivery queue (sms, email, ai), read from Redis (RQ's queue and registries) and the
database (messages waiting for a future time). One function feeds the dashboard's queue strip and
GET /api/queues, so both always show the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from django.db.models import Count
from django.utils import timezone
from django_rq.settings import get_queues_map
from rq import Worker
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

from .. import queues
from ..models import WAITING_STATUSES, Channel, Message, Status


def delayed_counts() -> dict[str, int]:
    """Return {channel: number of messages waiting for a future time (scheduled or retry backoff)}."""
    now = timezone.now()
    counts: dict[str, int] = {}
    # One grouped count per status, each an equality: SQLite uses the partial index of waiting
    # messages (msg_waiting) only when the query's condition matches one of the index's, and it does
    # not read `status IN (...)` as one; the count is then read from that index alone.
    for status in WAITING_STATUSES:
        rows = (
            Message.objects.filter(status=status, next_attempt_at__gt=now)
            .values("channel")
            .annotate(n=Count("*"))
            .order_by()
        )
        for row in rows:
            counts[row["channel"]] = counts.get(row["channel"], 0) + row["n"]
    return {channel: counts[channel] for channel in Channel.values if counts.get(channel)}


def failed_message_counts() -> dict[str, int]:
    """Return {channel: messages whose status is failed now} (what an operator retries; /failures/)."""
    # Per channel, an equality on (status, channel): a range of the partial index msg_failed_group.
    return {
        channel: Message.objects.filter(status=Status.FAILED, channel=channel).count()
        for channel in Channel.values
    }


@dataclass
class QueueNumbers:
    """One delivery queue's numbers. A Redis-backed value is None when Redis could not be asked.

    - `index`: the queue's position in django-rq's settings (its pages' URLs use it), None if absent;
    - `waiting`: jobs on the queue; `active`: jobs started and not finished; `completed`: finished jobs
      RQ still keeps; `failed`: jobs in RQ's failed registry; `workers`: workers listening on it;
    - `delayed`: messages waiting for a future time (scheduled, or a retry's backoff), and
      `failed_messages`: messages failed now (after their last attempt), both from the database, so
      they are known while Redis is down. RQ's `failed` counts jobs, not messages: a delivery that
      fails is recorded on its message and its job ends normally, so a failed job means a crash.
    """

    name: str
    index: int | None
    delayed: int = 0
    failed_messages: int = 0
    waiting: int | None = None
    active: int | None = None
    completed: int | None = None
    failed: int | None = None
    workers: int | None = None

    @property
    def redis_answered(self) -> bool:
        return self.waiting is not None


def queue_numbers() -> list[QueueNumbers]:
    """Numbers per delivery queue, in QUEUE_NAMES order (sms, email, ai).

    Redis errors leave the Redis-backed values None (see QueueNumbers.redis_answered); never raises
    for Redis. Costs two count queries per channel and five Redis reads per queue.
    """
    index = get_queues_map()
    delayed = delayed_counts()
    failed_messages = failed_message_counts()
    result = []
    for name in queues.QUEUE_NAMES:
        numbers = QueueNumbers(
            name=name,
            index=index.get(name),
            delayed=delayed.get(name, 0),
            failed_messages=failed_messages.get(name, 0),
        )
        try:
            queue = queues.get_queue(name)
            waiting = queue.count
            numbers.active = StartedJobRegistry(queue=queue).count
            numbers.completed = FinishedJobRegistry(queue=queue).count
            numbers.failed = FailedJobRegistry(queue=queue).count
            numbers.workers = Worker.count(queue=queue)
            numbers.waiting = waiting  # last: set only when every Redis read answered
        except redis.exceptions.RedisError:
            numbers.active = numbers.completed = numbers.failed = numbers.workers = None
        result.append(numbers)
    return result

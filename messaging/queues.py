"""Redis queues: one shared connection per process, enqueueing delivery jobs now or at a time.

Jobs carry only the message id (see DESIGN.md, "Flow"): payloads stay in the database.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import django_rq
import redis
from django.conf import settings
from rq import Queue
from rq.job import Job
from rq.utils import utcparse
from rq_scheduler import Scheduler

logger = logging.getLogger(__name__)

DELIVER_JOB = "messaging.jobs.deliver"
DELIVER_BATCH_JOB = "messaging.jobs.deliver_batch"
# Batch job ids start with this, so cancelling one message never removes a job shared with others.
BATCH_JOB_PREFIX = "batch-"
QUEUE_NAMES = ("sms", "email", "ai")
# Seconds RQ keeps results of finished jobs and the records of failed jobs (RQ's default for failed
# jobs is one year, far longer than anyone reads them; the database keeps the history).
RESULT_TTL = 7 * 86_400
FAILURE_TTL = 30 * 86_400

SCHEDULED_JOBS_KEY = "rq:scheduler:scheduled_jobs"

_lock = threading.Lock()
_connection: redis.Redis | None = None
# time.monotonic() before which enqueueing does not try Redis again (after a connection failure).
_unavailable_until = 0.0


class RetainedJob(Job):
    """RQ job class (settings.RQ["JOB_CLASS"]) that keeps results RESULT_TTL and failures FAILURE_TTL.

    RQ keeps failed jobs a year and rq-scheduler's `enqueue_at` cannot set `failure_ttl`, so the
    defaults are applied here, where every queue and scheduler creates its jobs. An explicit value
    (e.g. result_ttl=-1 for periodic jobs) wins.
    """

    @classmethod
    def create(cls, func, *args, result_ttl=None, failure_ttl=None, **kwargs):  # type: ignore[override]
        return super().create(
            func,
            *args,
            result_ttl=RESULT_TTL if result_ttl is None else result_ttl,
            failure_ttl=FAILURE_TTL if failure_ttl is None else failure_ttl,
            **kwargs,
        )


def get_connection() -> redis.Redis:
    """Return this process's Redis client for REDIS_URL, created once and reused (it pools sockets).

    Socket timeouts come from REDIS_SOCKET_TIMEOUT (seconds) so a dead Redis fails a call quickly
    with redis.exceptions.ConnectionError / TimeoutError instead of hanging a request.
    """
    global _connection
    if _connection is None:
        with _lock:
            if _connection is None:
                _connection = redis.Redis.from_url(
                    settings.REDIS_URL,
                    socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
                    socket_connect_timeout=min(settings.REDIS_CONNECT_TIMEOUT, settings.REDIS_SOCKET_TIMEOUT),
                    health_check_interval=30,
                )
    return _connection


def reset_connection() -> None:
    """Forget the cached client (tests that point REDIS_URL elsewhere call this)."""
    global _connection, _unavailable_until
    with _lock:
        _connection = None
        _unavailable_until = 0.0


_queues: dict[str, Queue] = {}


def get_queue(name: str) -> Queue:
    """Return the RQ queue `name` ("sms", "email", "ai" or "default") on the shared connection."""
    queue = _queues.get(name)
    if queue is None or queue.connection is not get_connection():
        queue = _queues[name] = django_rq.get_queue(name, connection=get_connection())
    return queue


def get_scheduler(name: str = "default") -> Scheduler:
    """Return an rq-scheduler Scheduler that places due jobs on queue `name`."""
    return django_rq.get_scheduler(name, queue=get_queue(name), connection=get_connection())


def new_job_id() -> str:
    """Return a fresh RQ job id (a UUID4 string)."""
    return str(uuid.uuid4())


def scheduler_time(when: datetime) -> datetime:
    """Return the whole UTC second at which rq-scheduler should release a job due at `when`.

    rq-scheduler stores scores as whole Unix seconds and releases a job on the first poll (once a
    second) at or after its score. Flooring releases the job in the second it is due, so it reaches a
    worker at most about a second late; the fraction it may arrive early is waited out by the job
    itself (services.message_deliver checks `next_attempt_at`), so nothing is sent early.
    """
    return when.astimezone(UTC).replace(microsecond=0)


def enqueue_delivery(message_id: str, channel: str, *, job_id: str, at: datetime | None = None) -> str:
    """Put a `deliver(message_id)` job on the channel's queue, now or at `at` (aware datetime).

    Returns the job id. Raises redis.exceptions.RedisError when Redis cannot be reached; the message
    then stays in the database and the sweep enqueues it later. After a connection failure, calls in
    the next REDIS_RETRY_AFTER_SECONDS fail at once instead of waiting for the timeout again.
    """
    with unless_recently_unreachable():
        _enqueue(message_id, channel, job_id=job_id, at=at)
    return job_id


@contextlib.contextmanager
def unless_recently_unreachable():
    """Wrap a Redis call on a request's path: fail at once (redis ConnectionError) while Redis failed
    within the last REDIS_RETRY_AFTER_SECONDS, and note a new connection failure or timeout.

    A hung Redis then costs one request a timeout, not every request in an outage.
    """
    global _unavailable_until
    if time.monotonic() < _unavailable_until:
        raise redis.exceptions.ConnectionError("Redis was unreachable moments ago; not retrying yet")
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        _unavailable_until = time.monotonic() + settings.REDIS_RETRY_AFTER_SECONDS
        raise


def _enqueue(message_id: str, channel: str, *, job_id: str, at: datetime | None) -> None:
    if at is None:
        # One pipeline: RQ otherwise spends two round trips to Redis per enqueue.
        with get_connection().pipeline() as pipe:
            get_queue(channel).enqueue(
                DELIVER_JOB,
                message_id,
                job_id=job_id,
                job_timeout=settings.RQ_JOB_TIMEOUT,
                result_ttl=RESULT_TTL,
                failure_ttl=FAILURE_TTL,
                pipeline=pipe,
            )
            pipe.execute()
    else:
        get_scheduler(channel).enqueue_at(
            scheduler_time(at),
            DELIVER_JOB,
            message_id,
            job_id=job_id,
            timeout=settings.RQ_JOB_TIMEOUT,
            job_result_ttl=RESULT_TTL,
        )


class EnqueueBuffer:
    """Gathers immediate `deliver` jobs from request threads and enqueues them together.

    A request adds its committed message and returns; a background thread of the process wakes
    ENQUEUE_BATCH_MS later and puts everything gathered on the queues with RQ's `enqueue_many` in one
    Redis pipeline. Under load this turns one Redis round trip (and one RQ job save) per request into
    one per batch. When Redis cannot be reached, each message's `on_failure` is called (services marks
    it `accepted` for the sweep). Messages still in the buffer when the process exits are flushed by
    an atexit hook and gunicorn's worker_exit hook; if the process is killed first, they are in the
    database as `queued` without a job, and the sweep enqueues them after SWEEP_GRACE_SECONDS.
    """

    def __init__(self) -> None:
        self._items: list[tuple[str, str, str, Callable[[], None]]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pid: int | None = None

    def add(self, message_id: str, channel: str, job_id: str, on_failure: Callable[[], None]) -> None:
        """Queue a `deliver(message_id)` job with id `job_id` on `channel` within ENQUEUE_BATCH_MS."""
        with self._lock:
            if self._pid != os.getpid():  # first use in this process (or a fork of it)
                self._pid, self._items = os.getpid(), []
                threading.Thread(target=self._run, name="enqueue-buffer", daemon=True).start()
                atexit.register(self.flush)
            self._items.append((message_id, channel, job_id, on_failure))
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

    def flush(self) -> int:
        """Enqueue everything gathered so far, now; return how many jobs were enqueued."""
        with self._lock:
            items, self._items = self._items, []
        if not items:
            return 0
        by_channel: dict[str, list[tuple[str, str, str, Callable[[], None]]]] = {}
        for item in items:
            by_channel.setdefault(item[1], []).append(item)
        try:
            with unless_recently_unreachable(), get_connection().pipeline() as pipe:
                for channel, channel_items in by_channel.items():
                    get_queue(channel).enqueue_many(
                        [
                            Queue.prepare_data(
                                DELIVER_JOB,
                                args=(message_id,),
                                job_id=job_id,
                                timeout=settings.RQ_JOB_TIMEOUT,
                                result_ttl=RESULT_TTL,
                                failure_ttl=FAILURE_TTL,
                            )
                            for message_id, _, job_id, _ in channel_items
                        ],
                        pipeline=pipe,
                    )
                pipe.execute()
        except redis.exceptions.RedisError as exc:
            logger.warning("Redis unavailable, %d messages left for the sweep: %s", len(items), exc)
            for *_, on_failure in items:
                try:
                    on_failure()
                except Exception:  # noqa: BLE001 - one failed update must not stop the others
                    logger.exception("could not mark a message for the sweep")
            return 0
        return len(items)


enqueue_buffer = EnqueueBuffer()


def new_batch_job_id() -> str:
    """Return a fresh job id for a batch delivery job."""
    return BATCH_JOB_PREFIX + str(uuid.uuid4())


def batch_job_timeout(size: int) -> int:
    """Seconds a batch job of `size` messages may run: enough for every round of concurrent calls.

    Each round of BULK_DELIVERY_CONCURRENCY calls takes at most connect + read timeout.
    """
    rounds = -(-size // settings.BULK_DELIVERY_CONCURRENCY)
    per_call = settings.PROVIDER_CONNECT_TIMEOUT + settings.PROVIDER_READ_TIMEOUT
    return max(settings.RQ_JOB_TIMEOUT, int(rounds * per_call) + 30)


def enqueue_batches(channel: str, batches: list[tuple[str, list[str], datetime | None]]) -> None:
    """Enqueue `deliver_batch(message_ids)` jobs: each batch is (job id, message ids, time or None).

    Immediate batches go to the channel's queue in one pipeline with `enqueue_many`; timed batches go
    to rq-scheduler at their due second. Raises redis.exceptions.RedisError when Redis is unreachable
    (at once, within REDIS_RETRY_AFTER_SECONDS of a previous failure).
    """
    with unless_recently_unreachable():
        _enqueue_batches(channel, batches)


def _enqueue_batches(channel: str, batches: list[tuple[str, list[str], datetime | None]]) -> None:
    queue = get_queue(channel)
    now_batches = [b for b in batches if b[2] is None]
    if now_batches:
        with get_connection().pipeline() as pipe:
            queue.enqueue_many(
                [
                    Queue.prepare_data(
                        DELIVER_BATCH_JOB,
                        args=(ids,),
                        job_id=job_id,
                        timeout=batch_job_timeout(len(ids)),
                        result_ttl=RESULT_TTL,
                        failure_ttl=FAILURE_TTL,
                    )
                    for job_id, ids, _ in now_batches
                ],
                pipeline=pipe,
            )
            pipe.execute()
    scheduler = get_scheduler(channel) if len(now_batches) < len(batches) else None
    for job_id, ids, at in batches:
        if at is not None:
            scheduler.enqueue_at(
                scheduler_time(at),
                DELIVER_BATCH_JOB,
                ids,
                job_id=job_id,
                timeout=batch_job_timeout(len(ids)),
                job_result_ttl=RESULT_TTL,
            )


def cancel_job(job_id: str) -> None:
    """Best effort: drop a scheduled job from rq-scheduler and delete the job hash.

    The worker's conditional claim is what really prevents a send; this only keeps Redis tidy.
    """
    if not job_id or job_id.startswith(BATCH_JOB_PREFIX):
        return
    try:
        connection = get_connection()
        get_scheduler().cancel(job_id)
        connection.delete(f"rq:job:{job_id}")
    except redis.exceptions.RedisError:
        logger.warning("could not remove job %s from Redis", job_id)


def _job_field(job_ids: list[str], field: str) -> list[bytes | None]:
    """Return `field` of each job's hash in Redis (None where missing), in one pipelined round trip."""
    with get_connection().pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(f"rq:job:{job_id}", field)
        return pipe.execute()


def job_states(job_ids: list[str]) -> dict[str, str | None]:
    """Return {job id: RQ status ("queued", "scheduled", "started", "finished", "failed", ...) or None}.

    None means the job hash is missing in Redis (never enqueued, expired, or lost in a Redis restart).
    One pipelined round trip. Raises redis.exceptions.RedisError when Redis cannot be reached.
    """
    values = _job_field(job_ids, "status") if job_ids else []
    return {job_id: value.decode() if value else None for job_id, value in zip(job_ids, values, strict=True)}


def jobs_started_at(job_ids: list[str]) -> dict[str, datetime | None]:
    """Return {job id: when RQ started it (aware UTC datetime), or None when unknown}.

    One pipelined round trip. Raises redis.exceptions.RedisError when Redis cannot be reached.
    """
    values = _job_field(job_ids, "started_at") if job_ids else []
    result: dict[str, datetime | None] = {}
    for job_id, value in zip(job_ids, values, strict=True):
        try:
            result[job_id] = utcparse(value.decode()) if value else None
        except ValueError:
            result[job_id] = None
    return result

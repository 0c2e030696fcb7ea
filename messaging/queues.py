"""Redis queues: one shared connection per process, and putting delivery jobs on the queues (now or,
through rq-scheduler, at a time) in one pipeline.

Jobs carry only message ids: payloads stay in the database, so Redis holds no personal data and a
cancel or edit is seen by the worker.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import django_rq
import redis
from django.conf import settings
from rq import Queue
from rq.job import Job
from rq.registry import BaseRegistry, FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.utils import utcparse
from rq_scheduler import Scheduler
from rq_scheduler.utils import to_unix

logger = logging.getLogger(__name__)

DELIVER_JOB = "messaging.delivery.jobs.deliver"
DELIVER_BATCH_JOB = "messaging.delivery.jobs.deliver_batch"
# Job functions queued by earlier versions under these paths still run (messaging/jobs.py re-exports).
DELIVERY_JOBS = {DELIVER_JOB, DELIVER_BATCH_JOB, "messaging.jobs.deliver", "messaging.jobs.deliver_batch"}
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

    # RQ builds a new registry object each time one of these is read (several times per job, and
    # each construction checks the serializer against a typing Protocol, which is slow): a worker
    # finishing hundreds of jobs a second spent a tenth of its time there. Registries only name Redis
    # keys, so one per queue and connection is shared.
    @property
    def started_job_registry(self):  # type: ignore[override]
        return _registry(StartedJobRegistry, self)

    @property
    def finished_job_registry(self):  # type: ignore[override]
        return _registry(FinishedJobRegistry, self)

    @property
    def failed_job_registry(self):  # type: ignore[override]
        return _registry(FailedJobRegistry, self)


_registries: dict[tuple, BaseRegistry] = {}


def _registry(kind: type[BaseRegistry], job: Job) -> BaseRegistry:
    key = (kind, job.origin, id(job.connection), type(job))
    registry = _registries.get(key)
    if registry is None or registry.connection is not job.connection:
        registry = _registries[key] = kind(
            job.origin, connection=job.connection, job_class=type(job), serializer=job.serializer
        )
    return registry


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
    """Return the RQ queue `name` ("sms", "email", "ai") on the shared connection."""
    queue = _queues.get(name)
    if queue is None or queue.connection is not get_connection():
        queue = _queues[name] = django_rq.get_queue(name, connection=get_connection())
    return queue


def get_scheduler(name: str = "sms") -> Scheduler:
    """Return an rq-scheduler Scheduler that places due jobs on queue `name`."""
    return django_rq.get_scheduler(name, queue=get_queue(name), connection=get_connection())


def new_job_id() -> str:
    """Return a fresh RQ job id (a UUID4 string)."""
    return str(uuid.uuid4())


def new_batch_job_id() -> str:
    """Return a fresh job id for a batch delivery job."""
    return BATCH_JOB_PREFIX + str(uuid.uuid4())


def scheduler_time(when: datetime) -> datetime:
    """Return the whole UTC second at which rq-scheduler should release a job due at `when`: the
    second before the one it is due in.

    rq-scheduler stores scores as whole Unix seconds and releases a job on its first poll (once a
    second, at whatever phase it started) at or after the score. Released in the second it is due, a
    job reached a worker up to a second late, depending on that phase (messages were sent 0.5 s late
    on average in bench/run.py). Released a second earlier, it reaches a worker 1 to 2 s before it is
    due, and the delivery gate waits out the rest in the worker (it waits up to
    EARLY_WAIT_MAX_SECONDS, 2 s), so it goes out on time and never early.
    """
    return when.astimezone(UTC).replace(microsecond=0) - timedelta(seconds=1)


def recently_unreachable() -> bool:
    """True while Redis failed within the last REDIS_RETRY_AFTER_SECONDS (calls fail at once then)."""
    return time.monotonic() < _unavailable_until


@contextlib.contextmanager
def unless_recently_unreachable() -> Iterator[None]:
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


# Seconds between checks whether Redis is back, once it is gone (workers and the scheduler).
REDIS_RETRY_SECONDS = 0.5


def wait_for_redis(connection: redis.Redis, *, stop: Callable[[], bool] = lambda: False) -> bool:
    """Block until `connection` answers PING, checking every REDIS_RETRY_SECONDS; return True then,
    or False as soon as `stop()` is true (a stop was requested meanwhile)."""
    while not stop():
        time.sleep(REDIS_RETRY_SECONDS)
        try:
            connection.ping()
        except redis.exceptions.RedisError:
            continue
        return True
    return False


def batch_job_timeout(size: int) -> int:
    """Seconds a batch job of `size` messages may run: enough for every round of concurrent calls.

    Each round of WORKER_CONCURRENCY calls takes at most connect + read timeout.
    """
    rounds = -(-size // max(1, settings.WORKER_CONCURRENCY))
    per_call = settings.PROVIDER_CONNECT_TIMEOUT + settings.PROVIDER_READ_TIMEOUT
    return max(settings.RQ_JOB_TIMEOUT, int(rounds * per_call) + 30)


@dataclass(frozen=True)
class DeliveryJob:
    """A delivery job to put on a queue: `deliver(id)` for one message id, `deliver_batch(ids)` for a
    batch job (its id starts with BATCH_JOB_PREFIX); `at` (aware) hands it to rq-scheduler instead."""

    queue: str
    job_id: str
    message_ids: tuple[str, ...]
    at: datetime | None = None

    @property
    def batch(self) -> bool:
        return self.job_id.startswith(BATCH_JOB_PREFIX)


def enqueue_jobs(jobs: Iterable[DeliveryJob]) -> int:
    """Put delivery jobs on their queues (or on rq-scheduler at their time) in one Redis pipeline.

    Returns how many were enqueued. Raises redis.exceptions.RedisError when Redis cannot be reached
    (at once within REDIS_RETRY_AFTER_SECONDS of a previous failure); then none may have been.
    """
    jobs = list(jobs)
    if not jobs:
        return 0
    now_by_queue: dict[str, list] = {}
    timed = []
    for job in jobs:
        func, args = (
            (DELIVER_BATCH_JOB, (list(job.message_ids),)) if job.batch else (DELIVER_JOB, job.message_ids)
        )
        timeout = batch_job_timeout(len(job.message_ids)) if job.batch else settings.RQ_JOB_TIMEOUT
        if job.at is None:
            now_by_queue.setdefault(job.queue, []).append(
                Queue.prepare_data(
                    func,
                    args=args,
                    job_id=job.job_id,
                    timeout=timeout,
                    result_ttl=RESULT_TTL,
                    failure_ttl=FAILURE_TTL,
                )
            )
        else:
            timed.append((job, func, args, timeout))
    with unless_recently_unreachable(), get_connection().pipeline() as pipe:
        for name, datas in now_by_queue.items():
            get_queue(name).enqueue_many(datas, pipeline=pipe)
        for job, func, args, timeout in timed:
            scheduler = get_scheduler(job.queue)
            # What rq-scheduler's enqueue_at does, in this pipeline.
            rq_job = scheduler._create_job(
                func, args=args, commit=False, id=job.job_id, timeout=timeout, result_ttl=RESULT_TTL
            )
            rq_job.save(pipeline=pipe)
            pipe.zadd(SCHEDULED_JOBS_KEY, {rq_job.id: to_unix(scheduler_time(job.at))})
        pipe.execute()
    return len(jobs)


def enqueue_delivery(message_id: str, channel: str, *, job_id: str, at: datetime | None = None) -> str:
    """Put one `deliver(message_id)` job on the channel's queue, now or at `at` (aware datetime).

    Returns the job id. Raises redis.exceptions.RedisError when Redis cannot be reached.
    """
    enqueue_jobs([DeliveryJob(channel, job_id, (str(message_id),), at)])
    return job_id


def cancel_jobs(job_ids: Iterable[str]) -> None:
    """Best effort: drop jobs from rq-scheduler and delete their hashes, in one pipeline (batch jobs,
    shared by other messages, are left alone).

    The worker's conditional claim is what really prevents a send; this only keeps Redis tidy.
    """
    job_ids = [job_id for job_id in job_ids if job_id and not job_id.startswith(BATCH_JOB_PREFIX)]
    if not job_ids:
        return
    try:
        with get_connection().pipeline() as pipe:
            pipe.zrem(SCHEDULED_JOBS_KEY, *job_ids)
            pipe.delete(*(f"rq:job:{job_id}" for job_id in job_ids))
            pipe.execute()
    except redis.exceptions.RedisError:
        logger.warning("could not remove %d jobs from Redis", len(job_ids))


def cancel_job(job_id: str) -> None:
    """cancel_jobs for one job."""
    cancel_jobs([job_id])


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

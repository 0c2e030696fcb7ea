"""Periodic jobs (the outbox sweep and retention) and the scheduler class that keeps them registered.

All periodic jobs are rq-scheduler interval jobs with fixed ids, registered by
`periodic_jobs_register()` (the `register_periodic_jobs` command, run when the scheduler process
starts). Registering again replaces nothing that is already right, so it can run on every start.
They run on the `sms` queue, at its front, so the usual `rqworker sms email ai` runs them and a
delivery backlog does not delay the sweep.

`QuietPeriodicJobsMixin` (in both worker classes) keeps an idle system's log empty: RQ's lines for a
periodic job that succeeded, and for its registry maintenance, are written at DEBUG.

`MaintainingScheduler` (settings.RQ["SCHEDULER_CLASS"], used by `manage.py rqscheduler`) adds two
things rq-scheduler lacks: it re-registers the periodic jobs when they vanish (a Redis restart without
persistence empties Redis), and it waits for Redis to come back instead of exiting on a connection
error. SIGINT or SIGTERM stops it at once even when Redis is gone: rq-scheduler's own handler writes
its death to Redis first, and a connection error there would have sent the loop back to waiting for
Redis (as when `make run` stops Redis and the scheduler together).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from django.conf import settings
from django_rq.queues import DjangoScheduler
from rq.exceptions import NoSuchJobError
from rq_scheduler import Scheduler

from messaging import queues

logger = logging.getLogger(__name__)

PERIODIC_QUEUE = "sms"
ID_PREFIX = "periodic-"
# Seconds between the scheduler's checks that every periodic job is still registered.
ENSURE_EVERY_SECONDS = 15


@dataclass(frozen=True)
class PeriodicJob:
    """One periodic job: fixed RQ job id, dotted function path, interval and timeout in seconds."""

    id: str
    func: str
    interval: int
    timeout: int = 300


def periodic_jobs() -> list[PeriodicJob]:
    """Return the periodic jobs the service needs, from settings."""
    return [
        PeriodicJob(ID_PREFIX + "sweep", "messaging.delivery.jobs.sweep", settings.SWEEP_INTERVAL_SECONDS),
        PeriodicJob(ID_PREFIX + "retention", "messaging.delivery.jobs.retention", 3600),
    ]


def _is_current(scheduler: Scheduler, spec: PeriodicJob) -> bool:
    if spec.id not in scheduler:
        return False
    try:
        job = scheduler.job_class.fetch(spec.id, connection=scheduler.connection)
    except NoSuchJobError:
        return False
    return (
        job.func_name == spec.func
        and job.meta.get("interval") == spec.interval
        and job.origin == PERIODIC_QUEUE
        and job.timeout == spec.timeout
    )


def periodic_jobs_register(scheduler: Scheduler | None = None) -> dict[str, str]:
    """Make rq-scheduler hold exactly the jobs of `periodic_jobs()`; return {job id: what was done}.

    A job already registered with the same function, interval, queue and timeout is kept ("kept");
    a missing or different one is (re)created ("registered") to run first right away; a job with our
    id prefix that is no longer wanted is removed ("removed"). Idempotent. Raises
    redis.exceptions.RedisError when Redis cannot be reached.
    """
    scheduler = scheduler or queues.get_scheduler(PERIODIC_QUEUE)
    wanted = {spec.id: spec for spec in periodic_jobs()}
    done: dict[str, str] = {}
    for spec in wanted.values():
        if _is_current(scheduler, spec):
            done[spec.id] = "kept"
            continue
        scheduler.cancel(spec.id)
        scheduler.connection.delete(f"rq:job:{spec.id}")
        scheduler.schedule(
            scheduled_time=datetime.now(UTC),
            func=spec.func,
            interval=spec.interval,
            repeat=None,
            timeout=spec.timeout,
            id=spec.id,
            queue_name=PERIODIC_QUEUE,
            description=f"periodic {spec.func} every {spec.interval}s",
            at_front=True,
        )
        done[spec.id] = "registered"
    for raw in scheduler.connection.zrange(queues.SCHEDULED_JOBS_KEY, 0, -1):
        job_id = raw.decode()
        if job_id.startswith(ID_PREFIX) and job_id not in wanted:
            scheduler.cancel(job_id)
            scheduler.connection.delete(f"rq:job:{job_id}")
            done[job_id] = "removed"
    return done


class _InfoAsDebug(logging.LoggerAdapter):
    """A logger that writes INFO records at DEBUG (other levels unchanged)."""

    def info(self, msg: object, *args: object, **kwargs: object) -> None:
        self.debug(msg, *args, **kwargs)


class QuietPeriodicJobsMixin:
    """For RQ worker classes: an idle system logs nothing.

    RQ writes three INFO lines for every job that succeeds ("Successfully completed ...", "Job OK",
    "result will never expire ..."), which for the sweep is every SWEEP_INTERVAL_SECONDS, and four for
    its registry maintenance (every 10 minutes). For a periodic job (id starting with ID_PREFIX) and
    for the maintenance these are written at DEBUG. The periodic jobs log what they did themselves
    (the sweep its counts when it moved a message); a failure is logged as RQ logs it. (The result of
    a periodic job is kept without expiry because rq-scheduler runs the same job again; RQ keeps the
    last 10 results of a job, so nothing grows.)
    """

    @contextlib.contextmanager
    def _info_as_debug(self) -> Iterator[None]:
        log = self.log
        self.log = _InfoAsDebug(log, {})
        try:
            yield
        finally:
            self.log = log

    def _finalize_success(self, job, queue, execution, return_value) -> None:
        if not job.id.startswith(ID_PREFIX):
            return super()._finalize_success(job, queue, execution, return_value)
        with self._info_as_debug():
            return super()._finalize_success(job, queue, execution, return_value)

    def run_maintenance_tasks(self) -> None:
        with self._info_as_debug():
            super().run_maintenance_tasks()


class MaintainingScheduler(DjangoScheduler):
    """rq-scheduler that keeps the periodic jobs registered and outlives Redis outages."""

    _last_ensure = 0.0
    _stopping = False

    def _install_signal_handlers(self) -> None:
        """SIGINT and SIGTERM: record the stop, write the death and drop the lock where Redis
        answers (best effort), then exit (SystemExit)."""

        def stop(signum, frame):
            self._stopping = True
            self.log.info("Shutting down RQ scheduler (%s)", signal.Signals(signum).name)
            with contextlib.suppress(redis.exceptions.RedisError):
                self.register_death()
                self.remove_lock()
            raise SystemExit(0)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)

    def heartbeat(self) -> None:
        super().heartbeat()
        if time.monotonic() - self._last_ensure >= ENSURE_EVERY_SECONDS:
            self._last_ensure = time.monotonic()
            changed = {k: v for k, v in periodic_jobs_register(self).items() if v != "kept"}
            if changed:
                self.log.info("periodic jobs: %s", changed)

    def run(self, burst: bool = False) -> None:
        """Run rq-scheduler's loop; when Redis goes away, wait for it (checking every
        REDIS_RETRY_SECONDS, so jobs move again within a second of its return) and run it again."""
        self._install_signal_handlers()  # also while waiting for Redis before the first run
        while True:
            try:
                return super().run(burst=burst)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                if self._stopping:  # the loop's last writes failed after a stop; nothing to wait for
                    raise SystemExit(0) from None
                self.log.error("Redis unavailable (%s); scheduler waiting for it", exc)
            if not queues.wait_for_redis(self.connection, stop=lambda: self._stopping):
                raise SystemExit(0)
            self.log.info("Redis answers; scheduler running again")
            self._lock_acquired = False
            self._last_ensure = 0.0  # re-register the periodic jobs at once (Redis may be empty)
            # Our registration may have survived a short outage; without this, register_birth
            # would refuse to start "a second scheduler" with our own name.
            with contextlib.suppress(redis.exceptions.RedisError):
                self.connection.delete(self.key)

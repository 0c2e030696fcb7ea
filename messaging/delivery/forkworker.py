"""`ForkWorker`: rq's forking worker (a work horse per job), for those who want each job isolated from
the next: `rqworker --worker-class messaging.delivery.forkworker.ForkWorker` (or the earlier path
`messaging.worker.ForkWorker`). One job at a time per process; jobs run through the same delivery
pipeline as under the concurrent worker."""

from __future__ import annotations

import contextlib
from typing import Any

import redis
from rq import Worker as RqWorker

from messaging import queues

from .worker import _StartupLogMixin


class ForkWorker(_StartupLogMixin, RqWorker):
    """rq's forking Worker (a work horse per job) with the same start-up log, which outlives Redis
    outages: RQ's loop exits on a Redis error outside its dequeue, so this one waits for Redis (every
    queues.REDIS_RETRY_SECONDS) and works again. A requested stop and burst mode end it as before."""

    _stop_signalled = False

    def request_stop(self, signum: int, frame: Any) -> None:
        self._stop_signalled = True
        super().request_stop(signum, frame)

    def work(self, burst: bool = False, **kwargs: Any) -> bool:  # type: ignore[override]
        worked = False
        while True:
            try:
                worked = super().work(burst=burst, **kwargs) or worked
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                self.log.error("Worker %s: Redis unavailable (%s)", self.name, exc)
            if burst or self._stop_signalled or kwargs.get("max_jobs") or kwargs.get("max_idle_time"):
                return worked
            if not queues.wait_for_redis(self.connection, stop=lambda: self._stop_signalled):
                return worked
            # A registration left by the loop that failed would make register_birth refuse to
            # start "a second worker" with our name.
            with contextlib.suppress(redis.exceptions.RedisError):
                if not self.connection.hexists(self.key, "death"):
                    self.connection.delete(self.key)

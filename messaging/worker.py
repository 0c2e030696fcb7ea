"""The RQ worker classes used by `manage.py rqworker` (settings.RQ["WORKER_CLASS"]).

`Worker` (the default) runs jobs in the worker process itself, like rq's SimpleWorker: no fork per
job, so the database connection (CONN_MAX_AGE), the Redis connection and the HTTP keep-alive
connections to providers are reused from one job to the next. Forking a work horse per job costs more
than a delivery itself (measured in bench/run.py: a fork per job cut one worker's throughput to a
quarter). Job timeouts still hold (SIGALRM in the worker), and a crashed or killed worker leaves its
message `sending` for the sweep, as a killed work horse would. Database connections are checked
before and after each job, as Django does around a request.

`ForkWorker` forks a work horse per job, as rq's Worker does, for those who want each job isolated
from the next (`rqworker --worker-class messaging.worker.ForkWorker`).

Both, when they start, log what they will do: their queues, the retry
policy, the rate limits and the provider base URLs. Secrets (API keys, the signing secret, passwords
in URLs) are never logged.

It also outlives Redis outages. RQ's worker retries while it waits for a job, but a Redis error
anywhere else in its loop (the suspension check, maintenance, monitoring the work horse, registering
its death) makes it quit, and `rqworker` then exits 1. On a PaaS that restarts crashed processes with
growing delays, one Redis restart could leave the service without workers for minutes. This worker
waits for Redis to come back (exponential backoff up to 30 s) and starts working again. A requested
stop (SIGTERM/SIGINT: RQ's warm shutdown, which lets the current job finish) and burst mode end it as
before.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from django.conf import settings
from django.db import close_old_connections
from rq import SimpleWorker
from rq import Worker as RqWorker
from rq.exceptions import StopRequested

# Longest wait, in seconds, between two checks whether Redis is back.
MAX_REDIS_WAIT_SECONDS = 30.0


def public_url(url: str) -> str:
    """Return `url` without user name, password, query or fragment (they may carry credentials)."""
    if not url:
        return ""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def startup_summary(queue_names: list[str]) -> list[str]:
    """Return the lines a worker logs at start (queues, retry policy, rate limits, providers).

    Times are in seconds. Only base URLs are shown, stripped of credentials; secrets appear as
    "set" / "not set".
    """
    limits = settings.DELIVERY_RATE_LIMITS
    ai_url = public_url(settings.AI_API_URL)
    return [
        f"Queues: {', '.join(queue_names)}",
        (
            f"Retry policy: {settings.DELIVERY_MAX_ATTEMPTS} attempts per message; backoff "
            f"{settings.RETRY_BACKOFF_BASE:g}s x {settings.RETRY_BACKOFF_FACTOR:g}^(n-1), at most "
            f"{settings.RETRY_BACKOFF_MAX:g}s (or the provider's Retry-After); job timeout "
            f"{settings.RQ_JOB_TIMEOUT}s; provider timeouts {settings.PROVIDER_CONNECT_TIMEOUT:g}s connect / "
            f"{settings.PROVIDER_READ_TIMEOUT:g}s read, AI read {settings.AI_READ_TIMEOUT:g}s, callback "
            f"{settings.CALLBACK_CONNECT_TIMEOUT:g}s / {settings.CALLBACK_READ_TIMEOUT:g}s"
        ),
        (
            "Rate limits: delivery "
            + ", ".join(f"{channel} {spec or 'off'}" for channel, spec in limits.items())
            + f"; AI requests per rate_limit_key {settings.AI_RATE_LIMIT_PER_KEY or 'off'}, per workspace "
            f"{settings.AI_RATE_LIMIT_PER_WORKSPACE or 'off'}"
        ),
        (
            f"Providers: SMS {public_url(settings.SMS_API_URL) or '(not set)'}/send-sms; email "
            f"{public_url(settings.EMAIL_API_URL) or '(not set)'}{settings.EMAIL_API_PATH}; AI "
            + (
                f"{ai_url}/chat/completions model {settings.AI_MODEL}"
                if ai_url
                else "simulated (AI_API_URL not set)"
            )
            + f"; AI API key {'set' if settings.AI_API_KEY else 'not set'}"
        ),
        (
            f"Callbacks: signing {'on (Standard Webhooks)' if settings.CALLBACK_SIGNING_SECRET else 'off'}; "
            f"allowed private hosts {', '.join(settings.CALLBACK_ALLOWED_HOSTS) or 'none'}; sandbox "
            f"{'on' if settings.SANDBOX_ENABLED else 'off'}"
        ),
    ]


class _ServiceWorkerMixin:
    """Logs the configuration (startup_summary) once the worker has started and outlives Redis
    outages instead of exiting."""

    def bootstrap(self, *args, **kwargs) -> None:
        super().bootstrap(*args, **kwargs)
        for line in startup_summary(self.queue_names()):
            self.log.info("Worker %s: %s", self.name, line)

    _stop_signalled = False

    def request_stop(self, signum: int, frame: Any) -> None:
        self._stop_signalled = True
        super().request_stop(signum, frame)

    def work(self, burst: bool = False, **kwargs: Any) -> bool:  # type: ignore[override]
        """Run RQ's work loop; when it ends because Redis failed, wait for Redis and run it again.

        Returns whether any job was processed, like Worker.work.
        """
        worked = False
        while True:
            try:
                worked = super().work(burst=burst, **kwargs) or worked
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                self.log.error("Worker %s: Redis unavailable (%s)", self.name, exc)
            if burst or self._stop_signalled or kwargs.get("max_jobs") or kwargs.get("max_idle_time"):
                return worked
            try:
                self._wait_for_redis()
            except StopRequested:
                return worked
            if self._stop_signalled:
                return worked

    def _wait_for_redis(self) -> None:
        delay = 1.0
        while not self._stop_signalled:
            time.sleep(delay)  # also keeps a loop that keeps failing for another reason from spinning
            try:
                self.connection.ping()
            except redis.exceptions.RedisError:
                self.log.warning("Worker %s: Redis still unavailable, next try in %.0fs", self.name, delay)
                delay = min(delay * 2, MAX_REDIS_WAIT_SECONDS)
                continue
            # A registration left by the loop that failed (its death could not be recorded) would
            # make register_birth refuse to start "a second worker" with our name.
            with contextlib.suppress(redis.exceptions.RedisError):
                if not self.connection.hexists(self.key, "death"):
                    self.connection.delete(self.key)
            self.log.info("Worker %s: Redis answers, working again", self.name)
            return


class Worker(_ServiceWorkerMixin, SimpleWorker):
    """The service's worker: jobs run in this process (no fork), with Django's connection upkeep
    around each job; see the module docstring."""

    def execute_job(self, job, queue) -> None:  # type: ignore[no-untyped-def]
        # As Django does around each request: drop connections that broke or outlived CONN_MAX_AGE.
        close_old_connections()
        try:
            super().execute_job(job, queue)
        finally:
            close_old_connections()


class ForkWorker(_ServiceWorkerMixin, RqWorker):
    """rq's forking Worker (a work horse per job) with the same start-up log and Redis resilience."""

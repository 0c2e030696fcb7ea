"""RQ job functions. Thin: they take message ids and hand them to the delivery engine.

Under the concurrent worker (messaging.delivery.worker.Worker) delivery jobs do not run these
functions: the worker submits their message ids to its engine directly. Other worker classes
(RQ's SimpleWorker, ForkWorker) run them, through the same pipeline.
"""

from __future__ import annotations

import logging
from collections import Counter

from django.conf import settings
from rq import get_current_job

from messaging import retention as retention_service

from . import senders
from . import sweep as sweep_service
from .engine import Delivery, Engine

logger = logging.getLogger(__name__)


def deliver(message_id: str) -> str:
    """Make one delivery attempt for message `message_id` (a UUID string); return what happened.

    Passes this job's id, so a job the message no longer points at (superseded by the sweep, a
    reschedule or a retry) does nothing.
    """
    job = get_current_job()
    return deliver_now([message_id], job_id=job.id if job else None)[0]


def deliver_batch(message_ids: list[str]) -> str:
    """Deliver many messages in one job (a bulk send), up to WORKER_CONCURRENCY calls in flight.

    Each message is still claimed, attempted, recorded and retried on its own; a retry goes back on
    the queue as a single-message job. Returns a count of outcomes, e.g. "sent=98 retry=2".
    """
    job = get_current_job()
    return summary(deliver_now(message_ids, job_id=job.id if job else None, batch=True))


def sweep() -> dict[str, int]:
    """Periodic: the outbox sweep (messaging.delivery.sweep.messages_sweep); returns its counts."""
    return sweep_service.messages_sweep()


def retention() -> dict[str, int]:
    """Periodic: clear old message contents, prune idempotency keys, trim finished RQ jobs; return the
    counts (logged at INFO when any is not zero: an idle system logs nothing)."""
    counts = {
        "redacted": retention_service.messages_redact(),
        "idempotency_keys_pruned": retention_service.idempotency_records_prune(),
        "finished_jobs_trimmed": retention_service.finished_jobs_trim(),
    }
    if any(counts.values()):
        logger.info("retention: %s", counts)
    return counts


def summary(results: list[str]) -> str:
    """Count results by their first word ("sent=98 retry=2")."""
    counts = Counter(result.split(":")[0].split(" ")[0] for result in results)
    return " ".join(f"{name}={count}" for name, count in sorted(counts.items()))


def deliver_now(message_ids: list[str], *, job_id: str | None = None, batch: bool = False) -> list[str]:
    """Deliver messages in the calling thread, as one job of a non-concurrent worker; return each one's
    result in order.

    One message: its call is made inline. Several (a batch job): up to WORKER_CONCURRENCY calls in
    flight on the process's delivery threads. Either way through the same pipeline as the concurrent
    worker's (load, gate, claim, send, record).
    """
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def done(delivery: Delivery, result: str, error: BaseException | None) -> None:
        results[delivery.extra["index"]] = result
        if error is not None:
            errors.append(error)

    deliveries = [
        Delivery(str(message_id), job_id, done, batch=batch, extra={"index": i})
        for i, message_id in enumerate(message_ids)
    ]
    pool = senders.pool() if len(deliveries) > 1 else None
    Engine(pool=pool, capacity=settings.WORKER_CONCURRENCY if pool else 1).run(deliveries)
    if errors:
        raise errors[0]
    return [results[i] for i in range(len(deliveries))]

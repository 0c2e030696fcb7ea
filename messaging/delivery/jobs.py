"""RQ job functions. Thin: they take message ids and hand them to the delivery engine.

Under the concurrent worker (messaging.delivery.worker.Worker) delivery jobs do not run these
functions: the worker submits their message ids to its engine directly. Other worker classes
(RQ's SimpleWorker, ForkWorker) run them, through the same pipeline.
"""

from __future__ import annotations

from rq import get_current_job

from messaging import retention as retention_service

from . import engine
from . import sweep as sweep_service


def deliver(message_id: str) -> str:
    """Make one delivery attempt for message `message_id` (a UUID string); return what happened.

    Passes this job's id, so a job the message no longer points at (superseded by the sweep, a
    reschedule or a retry) does nothing.
    """
    job = get_current_job()
    return engine.deliver_now([message_id], job_id=job.id if job else None)[0]


def deliver_batch(message_ids: list[str]) -> str:
    """Deliver many messages in one job (a bulk send), up to WORKER_CONCURRENCY calls in flight.

    Each message is still claimed, attempted, recorded and retried on its own; a retry goes back on
    the queue as a single-message job. Returns a count of outcomes, e.g. "sent=98 retry=2".
    """
    job = get_current_job()
    return engine.summary(engine.deliver_now(message_ids, job_id=job.id if job else None, batch=True))


def sweep() -> dict[str, int]:
    """Periodic: the outbox sweep (messaging.delivery.sweep.messages_sweep); returns its counts."""
    return sweep_service.messages_sweep()


def retention() -> dict[str, int]:
    """Periodic: clear old message contents, prune idempotency keys, trim finished RQ jobs."""
    return {
        "redacted": retention_service.messages_redact(),
        "idempotency_keys_pruned": retention_service.idempotency_records_prune(),
        "finished_jobs_trimmed": retention_service.finished_jobs_trim(),
    }

"""RQ job functions. Thin: they take a message id and call the service (HackSoft, django-rq style)."""

from __future__ import annotations

from rq import get_current_job

from . import maintenance, services
from .retention import finished_jobs_trim, idempotency_records_prune, messages_redact


def deliver(message_id: str) -> str:
    """Make one delivery attempt for message `message_id` (a UUID string); see services.message_deliver.

    Passes this job's id, so a job the message no longer points at (superseded by the sweep, a
    reschedule or a retry) does nothing.
    """
    job = get_current_job()
    return services.message_deliver(message_id=message_id, job_id=job.id if job else None)


def deliver_batch(message_ids: list[str]) -> str:
    """Deliver many messages in one job, keeping up to BULK_DELIVERY_CONCURRENCY provider calls in flight.

    Each message is still claimed, attempted, recorded and retried on its own (services.message_deliver);
    a retry goes back on the queue as a single-message job. Returns a summary of outcomes.
    """
    job = get_current_job()
    return services.message_deliver_many(message_ids=message_ids, job_id=job.id if job else None)


def sweep() -> dict[str, int]:
    """Periodic: the outbox sweep (maintenance.messages_sweep); returns its counts."""
    return maintenance.messages_sweep()


def retention() -> dict[str, int]:
    """Periodic: clear old message contents, prune idempotency keys, trim finished RQ jobs."""
    return {
        "redacted": messages_redact(),
        "idempotency_keys_pruned": idempotency_records_prune(),
        "finished_jobs_trimmed": finished_jobs_trim(),
    }

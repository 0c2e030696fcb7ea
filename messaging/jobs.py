"""RQ job functions. Thin: they take a message id and call the service (HackSoft, django-rq style)."""

from __future__ import annotations

from . import services


def deliver(message_id: str) -> str:
    """Make one delivery attempt for message `message_id` (a UUID string); see services.message_deliver."""
    return services.message_deliver(message_id=message_id)


def deliver_batch(message_ids: list[str]) -> str:
    """Deliver many messages in one job, keeping up to BULK_DELIVERY_CONCURRENCY provider calls in flight.

    Each message is still claimed, attempted, recorded and retried on its own (services.message_deliver);
    a retry goes back on the queue as a single-message job. Returns a summary of outcomes.
    """
    return services.message_deliver_many(message_ids=message_ids)

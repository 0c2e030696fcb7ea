"""RQ job functions. Thin: they take a message id and call the service (HackSoft, django-rq style)."""

from __future__ import annotations

from . import services


def deliver(message_id: str) -> str:
    """Make one delivery attempt for message `message_id` (a UUID string); see services.message_deliver."""
    return services.message_deliver(message_id=message_id)

"""Reads: shapes for API answers and the numbers behind pages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Count, Q
from django.utils import timezone

from .models import Message, Status


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def message_as_dict(message: Message, *, with_attempts: bool = True) -> dict[str, Any]:
    """Return the public JSON shape of a message (camelCase keys; times ISO 8601 UTC or null)."""
    data: dict[str, Any] = {
        "id": str(message.id),
        "channel": message.channel,
        "status": message.status,
        "workspaceId": message.workspace.external_id,
        "contactId": message.contact_id,
        "recipient": message.recipient,
        "jobId": message.rq_job_id,
        "attempts": message.attempts,
        "maxAttempts": message.max_attempts,
        "lastError": message.last_error or None,
        "scheduledFor": _iso(message.scheduled_for),
        "nextAttemptAt": _iso(message.next_attempt_at),
        "acceptedAt": _iso(message.accepted_at),
        "queuedAt": _iso(message.queued_at),
        "sentAt": _iso(message.sent_at),
        "failedAt": _iso(message.failed_at),
        "cancelledAt": _iso(message.cancelled_at),
    }
    if message.channel == "sms":
        data.update(segments=message.segments, encoding=message.encoding)
    elif message.channel == "email":
        data.update(subject=message.subject)
    elif message.channel == "ai":
        data.update(
            messageId=message.external_message_id,
            callbackUrl=message.callback_url,
            responseText=message.response_text or None,
            aiModel=message.ai_model or None,
            promptTokens=message.prompt_tokens,
            completionTokens=message.completion_tokens,
            generationMs=message.generation_ms,
            generatedAt=_iso(message.generated_at),
        )
    if with_attempts:
        data["deliveryAttempts"] = [
            {
                "number": a.number,
                "kind": a.kind,
                "startedAt": _iso(a.started_at),
                "durationMs": a.duration_ms,
                "httpStatus": a.http_status,
                "outcome": a.outcome,
                "error": a.error or None,
            }
            for a in message.delivery_attempts.all()
        ]
    return data


def delayed_counts() -> dict[str, int]:
    """Return {channel: number of messages waiting for a future time (scheduled or retry backoff)}."""
    now = timezone.now()
    rows = (
        Message.objects.filter(
            status__in=(Status.SCHEDULED, Status.QUEUED, Status.ACCEPTED), next_attempt_at__gt=now
        )
        .values("channel")
        .annotate(n=Count("id"))
    )
    return {row["channel"]: row["n"] for row in rows}


def waiting_filter() -> Q:
    """Q for messages not yet final and not being sent."""
    return Q(status__in=(Status.ACCEPTED, Status.QUEUED, Status.SCHEDULED))

"""Retention: what the periodic `retention` job clears and prunes, so stored personal data and Redis
memory stay bounded.

Kept apart from services.py (same conventions: `<entity>_<action>`, keyword-only arguments) because
these run from a periodic job, not from requests.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from rq.registry import FinishedJobRegistry

from . import queues
from .models import FINAL_STATUSES, DeliveryAttempt, IdempotencyRecord, Message

# Message fields cleared by messages_redact, and the value each is cleared to.
REDACTED_FIELDS = {
    "recipient": "",
    "subject": "",
    "body": "",
    "media_url": "",
    "metadata": {},
    "response_text": "",
    "provider_response": "",
}


def messages_redact(*, now: datetime | None = None, batch: int = 1000) -> int:
    """Clear recipients and contents of finished messages older than MESSAGE_RETENTION_DAYS.

    Finished means sent, failed or cancelled. The rows stay (channel, workspace, status, times,
    attempts, segments, error kinds), so counts and metrics are unchanged; `redacted_at` is set and
    the delivery attempts' response excerpts are cleared too. Works in batches of `batch` rows so no
    transaction holds locks for long. Returns the number of messages redacted; 0 when retention is 0.
    """
    days = settings.MESSAGE_RETENTION_DAYS
    if days <= 0:
        return 0
    now = now or timezone.now()
    cutoff = now - timedelta(days=days)
    total = 0
    while True:
        ids = list(
            Message.objects.filter(
                status__in=FINAL_STATUSES, accepted_at__lt=cutoff, redacted_at__isnull=True
            ).values_list("pk", flat=True)[:batch]
        )
        if not ids:
            return total
        with transaction.atomic():
            total += Message.objects.filter(pk__in=ids, redacted_at__isnull=True).update(
                redacted_at=now, **REDACTED_FIELDS
            )
            DeliveryAttempt.objects.filter(message_id__in=ids).update(response_excerpt="")


def idempotency_records_prune(*, now: datetime | None = None) -> int:
    """Delete idempotency records older than IDEMPOTENCY_KEY_TTL_HOURS; return how many."""
    cutoff = (now or timezone.now()) - timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted


def finished_jobs_trim(*, keep: int | None = None) -> int:
    """Keep at most `keep` (RQ_FINISHED_JOBS_MAX) finished jobs per queue; delete the oldest beyond it.

    Results also expire after RESULT_TTL (7 days); this bounds Redis memory under high volume.
    Returns the number of jobs deleted.
    """
    keep = settings.RQ_FINISHED_JOBS_MAX if keep is None else keep
    deleted = 0
    for name in queues.QUEUE_NAMES:
        registry = FinishedJobRegistry(queue=queues.get_queue(name))
        excess = registry.count - keep
        if excess <= 0:
            continue
        # Lowest scores expire first, i.e. the oldest results.
        for job_id in registry.get_job_ids(0, excess - 1, cleanup=False):
            registry.remove(job_id, delete_job=True)
            deleted += 1
    return deleted

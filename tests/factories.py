"""Small builders for dashboard tests: workspaces, messages in any state, delivery attempts, users."""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.utils import timezone

from messaging.models import DeliveryAttempt, Message, Status, Workspace

_counter = itertools.count(1)


def workspace(external_id: str | None = None, name: str = "") -> Workspace:
    external_id = external_id or str(60000 + next(_counter))
    return Workspace.objects.get_or_create(external_id=external_id, defaults={"name": name})[0]


def message(
    ws: Workspace | None = None,
    *,
    channel: str = "sms",
    status: str = Status.SENT,
    at: datetime | None = None,
    latency_ms: int | None = 120,
    error_kind: str = "",
    last_error: str = "",
    **fields,
) -> Message:
    """A message that reached `status` at `at` (default now), with one provider attempt when final."""
    ws = ws or workspace()
    at = at or timezone.now()
    values = {
        "channel": channel,
        "workspace": ws,
        "recipient": fields.pop("recipient", "+14155550123" if channel == "sms" else "a@example.com"),
        "body": fields.pop("body", "Hello there"),
        "status": status,
        "rq_job_id": str(uuid.uuid4()),
        "error_kind": error_kind,
        "last_error": last_error,
    }
    if status == Status.SENT:
        values["sent_at"] = at
        values["attempts"] = 1
    elif status == Status.FAILED:
        values["failed_at"] = at
        values["attempts"] = 1
        values["error_kind"] = error_kind or "http_400"
        values["last_error"] = last_error or "HTTP 400: Invalid recipient"
    elif status == Status.SCHEDULED:
        values["scheduled_for"] = fields.pop("scheduled_for", at + timedelta(hours=2))
        values["next_attempt_at"] = values["scheduled_for"]
    values.update(fields)
    msg = Message.objects.create(**values)
    Message.objects.filter(pk=msg.pk).update(accepted_at=at - timedelta(seconds=1))
    msg.refresh_from_db()
    if status in (Status.SENT, Status.FAILED) and latency_ms is not None:
        DeliveryAttempt.objects.create(
            message=msg,
            number=1,
            started_at=at - timedelta(milliseconds=latency_ms),
            duration_ms=latency_ms,
            http_status=200 if status == Status.SENT else 400,
            outcome=DeliveryAttempt.Outcome.SUCCESS
            if status == Status.SENT
            else DeliveryAttempt.Outcome.PERMANENT,
            error_kind="" if status == Status.SENT else values["error_kind"],
            error="" if status == Status.SENT else values["last_error"],
        )
    return msg


def user(username: str = "operator", *, staff: bool = True, password: str | None = None):
    user = get_user_model().objects.create_user(username=username, password=password or uuid.uuid4().hex)
    user.is_staff = staff
    user.save()
    return user

"""Reads behind the API's answers and the dashboard's lists: the public shape of a message, failure
groups, keyset-paginated message lists.

Numbers over time windows are in reporting.numbers; queue numbers in reporting.queue_stats.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.db.models import Count, Max, Min, QuerySet

from ..models import Message, SandboxReceipt, Status, Workspace


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


def error_label(error_kind: str) -> str:
    """Readable error kind: "http_503" -> "HTTP 503"; exception names as they are; "" -> "Unknown"."""
    if error_kind.startswith("http_"):
        return "HTTP " + error_kind[5:]
    return error_kind or "Unknown"


# The messages page's `error_kind` filter value for messages without an error kind (a failure group
# labelled "Unknown"); real error kinds are "http_<status>", snake_case words or exception class names.
NO_ERROR_KIND = "-"


@dataclass
class FailureGroup:
    channel: str
    error_kind: str
    count: int
    first_seen: datetime | None
    last_seen: datetime | None
    sample: Message | None = None
    messages_url: str = ""  # set by the dashboard: the messages page filtered to this group

    @property
    def label(self) -> str:
        return error_label(self.error_kind)

    @property
    def error_kind_filter(self) -> str:
        """The messages page's `error_kind` filter value that finds this group's messages."""
        return self.error_kind or NO_ERROR_KIND


def failed_message_groups(
    *, workspace_id: int | None = None, since: datetime | None = None, with_samples: bool = True
) -> list[FailureGroup]:
    """Failed messages grouped by channel and error kind, largest group first.

    Each group has its count, first and last `failed_at` (aware UTC) and, with_samples, the most
    recent failed message of the group (with its workspace). `since` (aware): only messages that
    failed at or after it (None: any time). The messages of a group are the ones `message_search`
    finds with status failed and the group's channel and error kind (and workspace and `failed_since`).
    """
    qs = Message.objects.filter(status=Status.FAILED)
    if workspace_id is not None:
        qs = qs.filter(workspace_id=workspace_id)
    if since is not None:
        qs = qs.filter(failed_at__gte=since)
    rows = (
        qs.values("channel", "error_kind")
        .annotate(n=Count("*"), first=Min("failed_at"), last=Max("failed_at"))
        .order_by("-n", "channel", "error_kind")
    )
    groups = [FailureGroup(r["channel"], r["error_kind"], r["n"], r["first"], r["last"]) for r in rows]
    if with_samples:
        for group in groups:
            group.sample = (
                qs.filter(channel=group.channel, error_kind=group.error_kind)
                .select_related("workspace")
                .order_by("-failed_at")
                .first()
            )
    return groups


def failed_group_count(*, channel: str, error_kind: str, workspace_id: int | None = None) -> int:
    """How many messages are failed with this channel and error kind right now."""
    qs = Message.objects.filter(status=Status.FAILED, channel=channel, error_kind=error_kind)
    if workspace_id is not None:
        qs = qs.filter(workspace_id=workspace_id)
    return qs.count()


@dataclass
class MessageFilters:
    """Filters of the messages page. Empty strings / None mean "any"."""

    channel: str = ""
    status: str = ""
    workspace: Workspace | None = None
    recipient: str = ""
    error: str = ""
    error_kind: str = ""  # exact; NO_ERROR_KIND for messages without one
    date_from: date | None = None  # UTC day, inclusive
    date_to: date | None = None  # UTC day, inclusive
    failed_since: datetime | None = None  # aware; failed_at at or after it


@dataclass
class Page:
    """One page of a keyset-paginated list: `items`, and the cursor of the next page or None."""

    items: list
    next_cursor: str | None


def encode_cursor(when: datetime, pk: Any) -> str:
    """Cursor for keyset pagination: "<ISO time>~<pk>"."""
    return f"{when.isoformat()}~{pk}"


def decode_cursor(cursor: str) -> tuple[datetime, str] | None:
    """Parse a cursor from encode_cursor; None when it is malformed."""
    when_text, _, pk = (cursor or "").partition("~")
    try:
        when = datetime.fromisoformat(when_text)
    except ValueError:
        return None
    if when.tzinfo is None or not pk:
        return None
    try:
        return when, str(uuid.UUID(pk)) if len(pk) > 20 else pk
    except ValueError:
        return None


def _keyset_page(qs: QuerySet, field: str, cursor: str, *, newest_first: bool, limit: int) -> Page:
    """One page of `qs` ordered by (`field`, pk), newest or oldest first, starting after `cursor`."""
    parsed = decode_cursor(cursor) if cursor else None
    if parsed:
        when, pk = parsed
        # The plain range bound lets the database start its index scan at the cursor.
        if newest_first:
            qs = qs.filter(**{f"{field}__lte": when}).exclude(**{field: when, "pk__gte": pk})
        else:
            qs = qs.filter(**{f"{field}__gte": when}).exclude(**{field: when, "pk__lte": pk})
    order = (f"-{field}", "-pk") if newest_first else (field, "pk")
    items = list(qs.order_by(*order)[: limit + 1])
    last = items[limit - 1] if len(items) > limit else None
    return Page(items[:limit], encode_cursor(getattr(last, field), last.pk) if last else None)


def message_search(filters: MessageFilters, *, cursor: str = "", limit: int = 50) -> Page:
    """Messages matching `filters`, newest first (accepted_at, then id), `limit` per page.

    Keyset pagination: `cursor` is the `next_cursor` of the previous page. No total count is taken,
    so a page costs the same on the first and the millionth row.
    """
    # Workspaces are fetched in a second query: a join here can lead SQLite's planner to loop over
    # workspaces and sort, instead of walking the accepted_at index and stopping after one page.
    qs = Message.objects.prefetch_related("workspace")
    if filters.channel:
        qs = qs.filter(channel=filters.channel)
    if filters.status:
        qs = qs.filter(status=filters.status)
    if filters.workspace is not None:
        qs = qs.filter(workspace=filters.workspace)
    if filters.recipient:
        qs = qs.filter(recipient__icontains=filters.recipient)
    if filters.error:
        qs = qs.filter(last_error__icontains=filters.error)
    if filters.error_kind:
        qs = qs.filter(error_kind="" if filters.error_kind == NO_ERROR_KIND else filters.error_kind)
    if filters.failed_since:
        qs = qs.filter(failed_at__gte=filters.failed_since)
    if filters.date_from:
        qs = qs.filter(accepted_at__gte=datetime.combine(filters.date_from, time.min, tzinfo=UTC))
    if filters.date_to:
        qs = qs.filter(
            accepted_at__lt=datetime.combine(filters.date_to + timedelta(days=1), time.min, tzinfo=UTC)
        )
    return _keyset_page(qs, "accepted_at", cursor, newest_first=True, limit=limit)


def scheduled_messages(*, cursor: str = "", limit: int = 50) -> Page:
    """Messages with status `scheduled`, soonest first (scheduled_for, then id); keyset-paginated."""
    qs = Message.objects.select_related("workspace").filter(status=Status.SCHEDULED)
    return _keyset_page(qs, "scheduled_for", cursor, newest_first=False, limit=limit)


def scheduled_count() -> int:
    """How many messages are scheduled (an indexed count over the scheduled rows only)."""
    return Message.objects.filter(status=Status.SCHEDULED).count()


def workspace_recent_messages(
    workspace: Workspace, *, since: datetime | None = None, limit: int = 20
) -> list[Message]:
    """The workspace's newest messages (by accepted_at), only those accepted at or after `since` (aware) when given."""
    qs = Message.objects.filter(workspace=workspace)
    if since is not None:
        qs = qs.filter(accepted_at__gte=since)
    return list(qs.order_by("-accepted_at")[:limit])


def sandbox_receipts(*, endpoint: str = "", before_id: int | None = None, limit: int = 50) -> Page:
    """Sandbox receipts newest first (received_at, then id), optionally of one endpoint; keyset by id."""
    qs = SandboxReceipt.objects.all()
    if endpoint:
        qs = qs.filter(endpoint=endpoint)
    if before_id:
        qs = qs.filter(pk__lt=before_id)
    items = list(qs.order_by("-pk")[: limit + 1])
    next_cursor = str(items[limit - 1].pk) if len(items) > limit else None
    return Page(items[:limit], next_cursor)

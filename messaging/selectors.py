"""Reads: shapes for API answers and the numbers behind pages."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import redis
from django.db.models import Count, Max, Min, Q
from django.utils import timezone

from . import rollup
from .models import WAITING_STATUSES, Channel, Message, SandboxReceipt, Status, Workspace


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
    # One count per channel: with GROUP BY channel, SQLite's planner walks a whole (channel, ...)
    # index at a million rows (3 s); per channel it reads only that channel's waiting rows.
    waiting = (Status.SCHEDULED, Status.QUEUED, Status.ACCEPTED)
    counts = {
        channel: Message.objects.filter(channel=channel, status__in=waiting, next_attempt_at__gt=now).count()
        for channel in Channel.values
    }
    return {channel: n for channel, n in counts.items() if n}


def waiting_filter() -> Q:
    """Q for messages not yet final and not being sent."""
    return Q(status__in=(Status.ACCEPTED, Status.QUEUED, Status.SCHEDULED))


# --- Dashboard (issue 4) --------------------------------------------------------------------------

# Overview windows: key -> (label, length; None = all time).
WINDOWS: dict[str, tuple[str, timedelta | None]] = {
    "1h": ("Last hour", timedelta(hours=1)),
    "24h": ("Last 24 hours", timedelta(hours=24)),
    "7d": ("Last 7 days", timedelta(days=7)),
    "all": ("All time", None),
}
DEFAULT_WINDOW = "24h"
CHANNELS = tuple(Channel)


@dataclass
class ChannelNumbers:
    """One workspace's (or the total's) numbers for one channel over a window."""

    sent: int = 0
    failed: int = 0
    waiting: int = 0
    success_rate: float | None = None  # 0..1, None when nothing finished
    median_latency_ms: int | None = None


@dataclass
class WorkspaceRow:
    workspace: Workspace
    channels: dict[str, ChannelNumbers]

    @property
    def cells(self) -> list[ChannelNumbers]:
        """The channel numbers in Channel order (for templates)."""
        return [self.channels[ch.value] for ch in CHANNELS]

    @property
    def is_empty(self) -> bool:
        return not any(n.sent or n.failed or n.waiting for n in self.channels.values())


def window_start(window: str, now: datetime | None = None) -> datetime | None:
    """Start (aware UTC) of an overview window key ("1h", "24h", "7d", "all"); None for all time.

    Raises KeyError for an unknown key.
    Windows of a day or more start on a whole UTC hour (up to 59 minutes earlier than the exact
    length), so they are summed from the hourly rollup alone; the last hour is exact.
    """
    length = WINDOWS[window][1]
    if length is None:
        return None
    start = (now or timezone.now()) - length
    return rollup.hour_floor(start) if length >= timedelta(days=1) else start


def _numbers(counts: rollup.Counts | None, waiting: int) -> ChannelNumbers:
    counts = counts or rollup.Counts()
    return ChannelNumbers(
        sent=counts.sent,
        failed=counts.failed,
        waiting=waiting,
        success_rate=counts.success_rate,
        median_latency_ms=counts.median_latency_ms,
    )


def waiting_counts(workspace_id: int | None = None) -> dict[tuple[int, str], int]:
    """Return {(workspace_id, channel): messages accepted, queued or scheduled} right now."""
    result: dict[tuple[int, str], int] = {}
    # One query per status (an equality, not IN): each is a range of the (status, workspace, channel)
    # index, already in grouping order, instead of a scan of a larger index.
    for status in WAITING_STATUSES:
        qs = Message.objects.filter(status=status)
        if workspace_id is not None:
            qs = qs.filter(workspace_id=workspace_id)
        for row in qs.values("workspace_id", "channel").annotate(n=Count("*")).order_by():
            key = (row["workspace_id"], row["channel"])
            result[key] = result.get(key, 0) + row["n"]
    return result


def workspace_metrics(window: str = DEFAULT_WINDOW, *, now: datetime | None = None) -> dict[str, Any]:
    """Per workspace and channel over `window`: sent, failed, waiting, success rate, median latency.

    Returns {"rows": [WorkspaceRow, ...] (by name, then ID; workspaces with nothing to show last),
    "totals": {channel: ChannelNumbers}, "total": ChannelNumbers (all channels)}. Sent and failed are
    exact counts of messages that reached that status in the window; waiting is the current number
    accepted, queued or scheduled; latency is the median duration (ms) of successful provider calls.
    """
    now = now or timezone.now()
    counts = rollup.window_counts(window_start(window, now), now=now)
    waiting = waiting_counts()
    per_channel_totals = {ch.value: rollup.Counts() for ch in CHANNELS}
    waiting_totals = dict.fromkeys(per_channel_totals, 0)
    rows = []
    for workspace in Workspace.objects.order_by("name", "external_id"):
        channels = {}
        for ch in CHANNELS:
            key = (workspace.pk, ch.value)
            channels[ch.value] = _numbers(counts.get(key), waiting.get(key, 0))
            if key in counts:
                per_channel_totals[ch.value].add(counts[key])
            waiting_totals[ch.value] += waiting.get(key, 0)
        rows.append(WorkspaceRow(workspace, channels))
    rows.sort(
        key=lambda row: (
            row.is_empty,
            not row.workspace.name,
            row.workspace.name.lower(),
            row.workspace.external_id,
        )
    )
    grand = rollup.Counts()
    for c in per_channel_totals.values():
        grand.add(c)
    return {
        "rows": rows,
        "totals": {ch: _numbers(c, waiting_totals[ch]) for ch, c in per_channel_totals.items()},
        "total": _numbers(grand, sum(waiting_totals.values())),
    }


def workspace_summary(
    workspace: Workspace, window: str = DEFAULT_WINDOW, *, now: datetime | None = None
) -> dict[str, ChannelNumbers]:
    """The overview numbers of one workspace: {channel: ChannelNumbers} over `window`."""
    now = now or timezone.now()
    counts = rollup.window_counts(window_start(window, now), now=now, workspace_id=workspace.pk)
    waiting = waiting_counts(workspace.pk)
    return {
        ch.value: _numbers(counts.get((workspace.pk, ch.value)), waiting.get((workspace.pk, ch.value), 0))
        for ch in CHANNELS
    }


def workspace_hourly_series(
    workspace: Workspace, *, hours: int = 48, now: datetime | None = None
) -> dict[str, list[dict]]:
    """Sent and failed per hour for the last `hours` hours: {channel: [{hour, sent, failed}, ...]} oldest first."""
    now = now or timezone.now()
    first_hour = rollup.hour_floor(now) - timedelta(hours=hours - 1)
    series = rollup.hourly_series(workspace.pk, first_hour, now=now)
    result: dict[str, list[dict]] = {}
    for ch in CHANNELS:
        points = []
        for i in range(hours):
            hour = first_hour + timedelta(hours=i)
            counts = series.get((hour, ch.value)) or rollup.Counts()
            points.append({"hour": hour, "sent": counts.sent, "failed": counts.failed})
        result[ch.value] = points
    return result


def error_label(error_kind: str) -> str:
    """Readable error kind: "http_503" -> "HTTP 503"; exception names as they are; "" -> "Unknown"."""
    if error_kind.startswith("http_"):
        return "HTTP " + error_kind[5:]
    return error_kind or "Unknown"


@dataclass
class FailureGroup:
    channel: str
    error_kind: str
    count: int
    first_seen: datetime | None
    last_seen: datetime | None
    sample: Message | None = None

    @property
    def label(self) -> str:
        return error_label(self.error_kind)


def failed_message_groups(
    *, workspace_id: int | None = None, with_samples: bool = True
) -> list[FailureGroup]:
    """Failed messages grouped by channel and error kind, largest group first.

    Each group has its count, first and last `failed_at` (aware UTC) and, with_samples, the most
    recent failed message of the group (with its workspace).
    """
    qs = Message.objects.filter(status=Status.FAILED)
    if workspace_id is not None:
        qs = qs.filter(workspace_id=workspace_id)
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
    date_from: date | None = None  # UTC day, inclusive
    date_to: date | None = None  # UTC day, inclusive


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
    if filters.date_from:
        qs = qs.filter(accepted_at__gte=datetime.combine(filters.date_from, time.min, tzinfo=UTC))
    if filters.date_to:
        qs = qs.filter(
            accepted_at__lt=datetime.combine(filters.date_to + timedelta(days=1), time.min, tzinfo=UTC)
        )
    parsed = decode_cursor(cursor) if cursor else None
    if parsed:
        when, pk = parsed
        # The plain range bound lets the database start its index scan at the cursor.
        qs = qs.filter(accepted_at__lte=when).exclude(accepted_at=when, pk__gte=pk)
    items = list(qs.order_by("-accepted_at", "-pk")[: limit + 1])
    next_cursor = (
        encode_cursor(items[limit - 1].accepted_at, items[limit - 1].pk) if len(items) > limit else None
    )
    return Page(items[:limit], next_cursor)


def scheduled_messages(*, cursor: str = "", limit: int = 50) -> Page:
    """Messages with status `scheduled`, soonest first (scheduled_for, then id); keyset-paginated."""
    qs = Message.objects.select_related("workspace").filter(status=Status.SCHEDULED)
    parsed = decode_cursor(cursor) if cursor else None
    if parsed:
        when, pk = parsed
        qs = qs.filter(scheduled_for__gte=when).exclude(scheduled_for=when, pk__lte=pk)
    items = list(qs.order_by("scheduled_for", "pk")[: limit + 1])
    next_cursor = (
        encode_cursor(items[limit - 1].scheduled_for, items[limit - 1].pk) if len(items) > limit else None
    )
    return Page(items[:limit], next_cursor)


def scheduled_count() -> int:
    """How many messages are scheduled (an indexed count over the scheduled rows only)."""
    return Message.objects.filter(status=Status.SCHEDULED).count()


def workspace_recent_messages(workspace: Workspace, *, limit: int = 20) -> list[Message]:
    """The workspace's newest messages (by accepted_at)."""
    return list(Message.objects.filter(workspace=workspace).order_by("-accepted_at")[:limit])


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


@dataclass
class QueueNumbers:
    """One RQ queue: jobs waiting, active (started), scheduled (from the database), failed jobs, workers.

    A value is None when Redis could not be asked.
    """

    name: str
    index: int | None
    waiting: int | None = None
    active: int | None = None
    scheduled: int | None = None
    failed: int | None = None
    workers: int | None = None


def queue_numbers() -> list[QueueNumbers]:
    """Numbers per delivery queue (sms, email, ai). Redis errors give None values, never an exception."""
    from django_rq.settings import get_queues_map
    from rq import Worker
    from rq.registry import FailedJobRegistry, StartedJobRegistry

    from . import queues

    index = get_queues_map()
    delayed = delayed_counts()
    result = []
    for name in queues.QUEUE_NAMES:
        numbers = QueueNumbers(name=name, index=index.get(name), scheduled=delayed.get(name, 0))
        try:
            queue = queues.get_queue(name)
            numbers.waiting = queue.count
            numbers.active = StartedJobRegistry(queue=queue).count
            numbers.failed = FailedJobRegistry(queue=queue).count
            numbers.workers = Worker.count(queue=queue)
        except redis.exceptions.RedisError:
            pass
        result.append(numbers)
    return result

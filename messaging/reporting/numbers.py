"""The dashboard's numbers per workspace and channel over a time window: sent, failed, waiting,
success rate, median latency, and hourly series.

Sent, failed and latency come from the hourly rollup (reporting.rollup) plus a live count of the
hours it has not closed yet; waiting is counted from Message right now.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count
from django.db.models.functions import TruncMinute
from django.utils import timezone

from ..models import WAITING_STATUSES, Channel, Message, Status, Workspace
from . import rollup

# Overview windows: key -> (label, length; None = all time).
WINDOWS: dict[str, tuple[str, timedelta | None]] = {
    "1h": ("Last hour", timedelta(hours=1)),
    "24h": ("Last 24 hours", timedelta(hours=24)),
    "7d": ("Last 7 days", timedelta(days=7)),
    "all": ("All time", None),
}
DEFAULT_WINDOW = "24h"
# Bars of a workspace's all-time chart at most per day; a longer history is drawn per 7 days.
MAX_DAY_BARS = 120
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
    """Start (aware UTC) of an overview window key ("1h", "24h", "7d", "all"): `now` minus the window's
    length, truncated to a whole second so links can name it exactly ("Last 24 hours" is the last 24
    hours, not since a whole hour); None for all time.

    Raises KeyError for an unknown key. reporting.rollup.window_counts reads whole closed hours from
    the hourly rollup and counts the partial hours at both edges live, so any start is exact.
    """
    length = WINDOWS[window][1]
    if length is None:
        return None
    return ((now or timezone.now()) - length).replace(microsecond=0)


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
    # One query per status (an equality, not IN): each is a range of the partial index msg_waiting
    # (status, workspace, channel, ...), already in grouping order and read from the index alone.
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


@dataclass
class Chart:
    """Sent and failed per time bucket for one workspace over a window (workspace_chart).

    `bucket` names the bucket ("minute", "hour", "day" or "7 days"); `series` is
    {channel: [{"start": aware UTC bucket start, "sent": n, "failed": n}, ...]} oldest first. The
    first bucket counts only from the window's start, so each series sums to the window's numbers.
    """

    bucket: str
    series: dict[str, list[dict]]


def _minute_series(workspace: Workspace, start: datetime, now: datetime) -> dict[tuple[datetime, str], list]:
    """{(minute start, channel): [sent, failed]} counted live for events in [start, now]."""
    result: dict[tuple[datetime, str], list] = {}
    for index, (status, stamp) in enumerate(((Status.SENT, "sent_at"), (Status.FAILED, "failed_at"))):
        rows = (
            Message.objects.filter(
                workspace=workspace,
                status=status,
                **{f"{stamp}__gte": start, f"{stamp}__lt": now + timedelta(seconds=1)},
            )
            .annotate(minute=TruncMinute(stamp))
            .values("minute", "channel")
            .annotate(n=Count("*"))
            .order_by()
        )
        for row in rows:
            result.setdefault((row["minute"], row["channel"]), [0, 0])[index] += row["n"]
    return result


def workspace_chart(
    workspace: Workspace, window: str = DEFAULT_WINDOW, *, now: datetime | None = None
) -> Chart:
    """Sent and failed of one workspace per bucket over `window` (a WINDOWS key), the same events
    workspace_summary counts: per minute for the last hour (counted live), per UTC hour for 24 hours
    and 7 days (hourly rollup plus live edges), per UTC day for all time (per 7 days beyond
    MAX_DAY_BARS days). Raises KeyError for an unknown window."""
    now = now or timezone.now()
    start = window_start(window, now)
    if window == "1h" and start is not None:
        bucket, step = "minute", timedelta(minutes=1)
        first = start.replace(second=0, microsecond=0)
        counts = _minute_series(workspace, start, now)
    else:
        if start is None:  # all time: from the day of the workspace's first message
            first_seen = rollup.first_activity(workspace.pk) or now
            start = rollup.day_floor(first_seen)
            days = (now - start) // rollup.DAY + 1
            bucket, step = ("day", rollup.DAY) if days <= MAX_DAY_BARS else ("7 days", 7 * rollup.DAY)
        else:
            bucket, step = "hour", rollup.HOUR
        first = rollup.hour_floor(start)
        counts = {}
        for (hour, channel), c in rollup.hourly_series(workspace.pk, start, now=now).items():
            key = (first + (hour - first) // step * step, channel)
            sums = counts.setdefault(key, [0, 0])
            sums[0] += c.sent
            sums[1] += c.failed
    series: dict[str, list[dict]] = {ch.value: [] for ch in CHANNELS}
    when = first
    while when <= now:
        for ch in CHANNELS:
            sent, failed = counts.get((when, ch.value), (0, 0))
            series[ch.value].append({"start": when, "sent": sent, "failed": failed})
        when += step
    return Chart(bucket=bucket, series=series)

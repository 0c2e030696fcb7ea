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
from django.utils import timezone

from ..models import WAITING_STATUSES, Channel, Message, Workspace
from . import rollup

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

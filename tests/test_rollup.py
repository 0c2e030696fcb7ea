"""The hourly metrics rollup gives the same numbers as counting the Message table directly."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.db.models import Count
from django.utils import timezone

from messaging import services
from messaging.models import Message, MessageStat, MessageStatHour, Status, Workspace
from messaging.reporting import numbers, rollup
from tests import factories


def direct_counts(start, now):
    """What the rollup must equal: messages sent / failed with their timestamp in [start, now]."""
    result = {}
    for status, stamp in ((Status.SENT, "sent_at"), (Status.FAILED, "failed_at")):
        qs = Message.objects.filter(status=status)
        if start is not None:
            qs = qs.filter(**{f"{stamp}__gte": start})
        qs = qs.filter(**{f"{stamp}__lte": now})
        for row in qs.values("workspace_id", "channel").annotate(n=Count("pk")):
            result.setdefault((row["workspace_id"], row["channel"]), {"sent": 0, "failed": 0})[status] = row[
                "n"
            ]
    return result


def as_plain(counts):
    return {key: {"sent": c.sent, "failed": c.failed} for key, c in counts.items() if c.sent or c.failed}


@pytest.fixture
def history(db):
    """Messages spread over the last 3 days, in 3 workspaces and all channels."""
    rng = random.Random(4)
    now = timezone.now()
    spaces = [factories.workspace(name=f"Space {i}") for i in range(3)]
    for _ in range(300):
        at = now - timedelta(seconds=rng.randint(0, 3 * 86400))
        factories.message(
            rng.choice(spaces),
            channel=rng.choice(["sms", "email", "ai"]),
            status=rng.choice([Status.SENT, Status.SENT, Status.FAILED, Status.CANCELLED]),
            at=at,
            latency_ms=rng.randint(10, 3000),
        )
    return now


@pytest.mark.parametrize("window", ["1h", "24h", "7d", "all"])
def test_window_counts_equal_direct_counts(history, window):
    now = timezone.now()
    start = numbers.window_start(window, now)
    assert as_plain(rollup.window_counts(start, now=now)) == direct_counts(start, now)
    if window != "1h":  # a one-hour window is counted live; longer ones read closed hours from the rollup
        assert MessageStat.objects.exists()
    assert not MessageStatHour.objects.filter(dirty=True, hour__lt=rollup.closed_until(now)).exists()


def test_a_retry_of_an_old_failure_is_reflected_at_once(history):
    now = timezone.now()
    rollup.stats_refresh(now=now)
    old_failure = Message.objects.filter(status=Status.FAILED, failed_at__lt=now - timedelta(hours=5)).first()
    before = as_plain(rollup.window_counts(None, now=now))
    failed_hour = rollup.hour_floor(old_failure.failed_at)
    services.message_retry(message=old_failure)
    assert MessageStatHour.objects.get(hour=failed_hour).dirty
    after = as_plain(rollup.window_counts(None, now=timezone.now()))
    key = (old_failure.workspace_id, old_failure.channel)
    assert after[key]["failed"] == before[key]["failed"] - 1
    assert after == direct_counts(None, timezone.now())


def test_a_group_retry_is_reflected_at_once(history):
    rollup.stats_refresh()
    services.failed_group_retry(channel="sms", error_kind="http_400", batch_size=7)
    now = timezone.now()
    assert as_plain(rollup.window_counts(None, now=now)) == direct_counts(None, now)
    assert not Message.objects.filter(status=Status.FAILED, channel="sms").exists()


def test_a_rebuild_gives_the_same_rows(history):
    rollup.stats_refresh()
    rows = sorted(
        MessageStat.objects.values_list("hour", "workspace_id", "channel", "sent", "failed", "latency_3")
    )
    rollup.stats_refresh(rebuild=True)
    again = sorted(
        MessageStat.objects.values_list("hour", "workspace_id", "channel", "sent", "failed", "latency_3")
    )
    assert rows == again and rows


def test_the_median_latency_is_read_from_the_histogram():
    counts = rollup.Counts()
    assert counts.median_latency_ms is None
    # 10 calls of 60-100 ms (bucket 50-100) and 5 of 100-200 ms: the median lies in the first bucket.
    counts.latency[1] = 10
    counts.latency[2] = 5
    assert 50 < counts.median_latency_ms <= 100
    slow = rollup.Counts(latency=[0] * 11 + [3])
    assert slow.median_latency_ms == 10000


def test_the_median_follows_real_durations_within_a_bucket(db):
    ws = factories.workspace(name="Latency")
    now = timezone.now()
    for ms in (80, 90, 95, 400, 420, 430, 440):
        factories.message(ws, at=now - timedelta(hours=3), latency_ms=ms)
    median = rollup.window_counts(None, now=now)[(ws.pk, "sms")].median_latency_ms
    assert 300 <= median <= 500  # the true median is 400 ms; the bucket is 300-500 ms


def test_no_messages_gives_empty_numbers(db):
    assert rollup.window_counts(None) == {}
    assert rollup.stats_refresh() == 0


@pytest.mark.parametrize("hours_back", [0.5, 5.25, 30.6, 71.9])
def test_window_counts_from_any_start_equal_direct_counts(history, hours_back):
    """A start inside an hour: the partial first hour is counted live, whole hours from the rollup."""
    now = timezone.now()
    start = now - timedelta(hours=hours_back)
    assert as_plain(rollup.window_counts(start, now=now)) == direct_counts(start, now)


def test_every_window_is_exact_to_the_second():
    now = timezone.now()
    assert numbers.window_start("24h", now) == (now - timedelta(hours=24)).replace(microsecond=0)
    assert numbers.window_start("7d", now) == (now - timedelta(days=7)).replace(microsecond=0)
    assert numbers.window_start("1h", now) == (now - timedelta(hours=1)).replace(microsecond=0)
    assert numbers.window_start("all", now) is None


@pytest.mark.parametrize("window", ["1h", "24h", "7d", "all"])
def test_a_workspace_chart_sums_to_the_workspace_numbers_of_its_window(history, window):
    """Per minute, hour or day, the bars of each channel add up to the window's sent and failed."""
    now = timezone.now()
    for workspace in Workspace.objects.all():
        summary = numbers.workspace_summary(workspace, window, now=now)
        chart = numbers.workspace_chart(workspace, window, now=now)
        for channel, points in chart.series.items():
            assert sum(p["sent"] for p in points) == summary[channel].sent, (workspace, channel)
            assert sum(p["failed"] for p in points) == summary[channel].failed, (workspace, channel)
            starts = [p["start"] for p in points]
            assert starts == sorted(starts) and starts[-1] <= now

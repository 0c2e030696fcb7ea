"""Hourly rollup of message outcomes (MessageStat), so dashboard pages stay fast at millions of rows.

What is counted, per UTC hour, workspace and channel:
- `sent`: messages with status `sent` whose `sent_at` is in the hour;
- `failed`: messages with status `failed` whose `failed_at` is in the hour;
- a histogram of successful provider-call durations (DeliveryAttempt of kind provider or generation,
  by `started_at`), from which the median latency is read.

Counts stay exact because:
- only *closed* hours are rolled up: hours that ended more than SETTLE_SECONDS ago, so every
  transaction that could still stamp a time inside them (a delivery job runs at most RQ_JOB_TIMEOUT
  seconds) has committed; newer data is counted live from Message / DeliveryAttempt;
- `sent_at`, `failed_at` and `started_at` are set to "now" by the services, so a closed hour only
  changes when a failed message leaves `failed` (retry). `services.message_retry` and
  `services.failed_group_retry` call `hours_mark_dirty` in the same transaction, and a dirty hour is
  recomputed before it is read again. Code that writes past times directly (seed_demo, bench) calls
  `hours_mark_dirty` or `stats_refresh(rebuild=True)` afterwards.
- the recompute locks the hour's MessageStatHour row, and `hours_mark_dirty` upserts that row, so a
  retry that commits during a recompute leaves the hour dirty rather than stale.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, Count, IntegerField, Min, QuerySet, Sum, Value, When
from django.db.models.functions import TruncHour
from django.utils import timezone

from ..models import (
    LATENCY_BUCKETS_MS,
    LATENCY_FIELDS,
    DeliveryAttempt,
    Message,
    MessageStat,
    MessageStatDay,
    MessageStatHour,
    Status,
)

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# Hours recomputed in one transaction (and one grouped query per kind) at most.
REFRESH_CHUNK_HOURS = 24 * 7
LATENCY_KINDS = (DeliveryAttempt.Kind.PROVIDER, DeliveryAttempt.Kind.GENERATION)


def settle_seconds() -> float:
    """Seconds after an hour ends before it is rolled up: twice the longest a delivery job may run."""
    return max(120.0, 2.0 * settings.RQ_JOB_TIMEOUT)


def hour_floor(value: datetime) -> datetime:
    """Start of the UTC hour containing the aware datetime `value`."""
    return value.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hour_ceil(value: datetime) -> datetime:
    """`value` if it starts an hour, else the start of the next hour (UTC)."""
    floor = hour_floor(value)
    return floor if floor == value else floor + HOUR


def day_floor(value: datetime) -> datetime:
    """Start of the UTC day containing the aware datetime `value`."""
    return hour_floor(value).replace(hour=0)


def closed_until(now: datetime | None = None) -> datetime:
    """End (exclusive, UTC) of the last hour that may be rolled up at `now`."""
    now = now or timezone.now()
    return hour_floor(now - timedelta(seconds=settle_seconds()))


def first_activity(workspace_id: int | None = None) -> datetime | None:
    """Earliest `accepted_at` of any message (of one workspace when given); None when there are none.

    Every sent_at, failed_at and attempt start comes after its message's accepted_at, so no counted
    event is older than this.
    """
    qs = Message.objects.all()
    if workspace_id is not None:
        qs = qs.filter(workspace_id=workspace_id)
    return qs.aggregate(first=Min("accepted_at"))["first"]


@dataclass
class Counts:
    """Sent and failed counts and the latency histogram of one (workspace, channel) or a total."""

    sent: int = 0
    failed: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * len(LATENCY_FIELDS))

    def add(self, other: Counts) -> None:
        self.sent += other.sent
        self.failed += other.failed
        self.latency = [a + b for a, b in zip(self.latency, other.latency, strict=True)]

    @property
    def success_rate(self) -> float | None:
        """Sent / (sent + failed) as a fraction, or None when nothing finished."""
        finished = self.sent + self.failed
        return self.sent / finished if finished else None

    @property
    def median_latency_ms(self) -> int | None:
        """Median provider latency in ms, interpolated inside its histogram bucket; None without calls.

        Precision is the bucket width (LATENCY_BUCKETS_MS). A median in the open last bucket is
        reported as its lower bound.
        """
        total = sum(self.latency)
        if not total:
            return None
        half = total / 2
        seen = 0
        lower = 0
        for index, count in enumerate(self.latency):
            if seen + count >= half and count:
                if index >= len(LATENCY_BUCKETS_MS):
                    return LATENCY_BUCKETS_MS[-1]
                upper = LATENCY_BUCKETS_MS[index]
                return round(lower + (upper - lower) * (half - seen) / count)
            seen += count
            lower = LATENCY_BUCKETS_MS[index] if index < len(LATENCY_BUCKETS_MS) else lower
        return LATENCY_BUCKETS_MS[-1]


def _bucket_expression() -> Case:
    whens = [When(duration_ms__lte=bound, then=Value(i)) for i, bound in enumerate(LATENCY_BUCKETS_MS)]
    return Case(*whens, default=Value(len(LATENCY_BUCKETS_MS)), output_field=IntegerField())


def _live_rows(
    ranges: list[tuple[datetime, datetime]], *, workspace_id: int | None = None, by_hour: bool = False
) -> Iterable[tuple[tuple, str, int]]:
    """Yield (key, what, n) counted straight from Message / DeliveryAttempt for the time ranges.

    key is (workspace_id, channel) or, with by_hour, (hour, workspace_id, channel); what is "sent",
    "failed" or a latency field name.
    """
    if not ranges:
        return
    messages: QuerySet = Message.objects.all()
    attempts: QuerySet = DeliveryAttempt.objects.filter(
        outcome=DeliveryAttempt.Outcome.SUCCESS, kind__in=LATENCY_KINDS
    )
    if workspace_id is not None:
        messages = messages.filter(workspace_id=workspace_id)
        attempts = attempts.filter(message__workspace_id=workspace_id)
    # One query per range (not an OR of ranges), so each is a plain range scan of a covering index
    # (the partial msg_sent_at / msg_failed_at);
    # COUNT(*) rather than COUNT(id), which would read every row for its id.
    for start, end in ranges:
        for status, stamp in ((Status.SENT, "sent_at"), (Status.FAILED, "failed_at")):
            qs = messages.filter(status=status, **{f"{stamp}__gte": start, f"{stamp}__lt": end})
            keys = ["workspace_id", "channel"]
            if by_hour:
                qs = qs.annotate(h=TruncHour(stamp))
                keys = ["h", *keys]
            for row in qs.values(*keys).annotate(n=Count("*")).order_by():
                yield tuple(row[k] for k in keys), status, row["n"]
        qs = attempts.filter(started_at__gte=start, started_at__lt=end).annotate(bucket=_bucket_expression())
        keys = ["message__workspace_id", "message__channel"]
        if by_hour:
            qs = qs.annotate(h=TruncHour("started_at"))
            keys = ["h", *keys]
        for row in qs.values(*keys, "bucket").annotate(n=Count("*")).order_by():
            yield tuple(row[k] for k in keys), LATENCY_FIELDS[row["bucket"]], row["n"]


def _accumulate(target: dict, rows: Iterable[tuple[tuple, str, int]]) -> None:
    for key, what, n in rows:
        counts = target.setdefault(key, Counts())
        if what == Status.SENT:
            counts.sent += n
        elif what == Status.FAILED:
            counts.failed += n
        else:
            counts.latency[LATENCY_FIELDS.index(what)] += n


# --- Maintaining the rollup -----------------------------------------------------------------------


def hours_mark_dirty(times: Iterable[datetime | None]) -> None:
    """Mark the hours containing `times` for recomputation (call inside the writing transaction).

    Upserts MessageStatHour rows with dirty=True, so the mark also lands when a recompute of the hour
    is running concurrently (it waits for the recompute's row lock, then sets dirty again).
    """
    hours = sorted({hour_floor(t) for t in times if t is not None})
    if hours:
        MessageStatHour.objects.bulk_create(
            [MessageStatHour(hour=h, dirty=True) for h in hours],
            update_conflicts=True,
            unique_fields=["hour"],
            update_fields=["dirty"],
        )


def _missing_hours(start: datetime, end: datetime) -> list[datetime]:
    """Closed hours in [start, end) that have no clean MessageStatHour row."""
    clean = set(
        MessageStatHour.objects.filter(hour__gte=start, hour__lt=end, dirty=False).values_list(
            "hour", flat=True
        )
    )
    hours = []
    hour = start
    while hour < end:
        if hour not in clean:
            hours.append(hour)
        hour += HOUR
    return hours


def _contiguous(hours: list[datetime]) -> list[tuple[datetime, datetime]]:
    """Group sorted hour starts into [start, end) ranges of consecutive hours, at most REFRESH_CHUNK_HOURS long."""
    ranges: list[tuple[datetime, datetime]] = []
    for hour in hours:
        if ranges and ranges[-1][1] == hour and (hour - ranges[-1][0]) < REFRESH_CHUNK_HOURS * HOUR:
            ranges[-1] = (ranges[-1][0], hour + HOUR)
        else:
            ranges.append((hour, hour + HOUR))
    return ranges


@transaction.atomic
def _recompute(start: datetime, end: datetime) -> None:
    """Recompute the MessageStat rows of the consecutive closed hours [start, end)."""
    hours = []
    hour = start
    while hour < end:
        hours.append(hour)
        hour += HOUR
    MessageStatHour.objects.bulk_create([MessageStatHour(hour=h) for h in hours], ignore_conflicts=True)
    # Lock the hours: a concurrent hours_mark_dirty waits for this transaction and marks them again.
    list(MessageStatHour.objects.select_for_update().filter(hour__gte=start, hour__lt=end).values_list("pk"))
    MessageStatHour.objects.filter(hour__gte=start, hour__lt=end).update(
        dirty=False, computed_at=timezone.now()
    )
    MessageStat.objects.filter(hour__gte=start, hour__lt=end).delete()
    rows: dict[tuple, Counts] = {}
    _accumulate(rows, _live_rows([(start, end)], by_hour=True))
    MessageStat.objects.bulk_create(
        [
            MessageStat(
                hour=key[0],
                workspace_id=key[1],
                channel=key[2],
                sent=c.sent,
                failed=c.failed,
                **dict(zip(LATENCY_FIELDS, c.latency, strict=True)),
            )
            for key, c in rows.items()
        ],
        batch_size=500,
    )
    _recompute_days(day_floor(start), end)


def _recompute_days(first_day: datetime, end: datetime) -> None:
    """Rewrite the MessageStatDay rows of the whole closed days from `first_day` up to `end`.

    Called in the transaction that recomputed hours, so a day row always equals the sum of its 24
    hourly rows. Days that are not over (or not wholly closed) get no day row.
    """
    last_closed_day_end = day_floor(closed_until())
    day = first_day
    sums = {name: Sum(name) for name in ("sent", "failed", *LATENCY_FIELDS)}
    while day < end and day + DAY <= last_closed_day_end:
        MessageStatDay.objects.filter(day=day).delete()
        rows = (
            MessageStat.objects.filter(hour__gte=day, hour__lt=day + DAY)
            .values("workspace_id", "channel")
            .annotate(**sums)
            .order_by()
        )
        MessageStatDay.objects.bulk_create(
            [
                MessageStatDay(
                    day=day,
                    workspace_id=row["workspace_id"],
                    channel=row["channel"],
                    **{name: row[name] or 0 for name in ("sent", "failed", *LATENCY_FIELDS)},
                )
                for row in rows
            ],
            batch_size=500,
        )
        day += DAY


def _sum_rollup(
    model, field: str, start: datetime, end: datetime, workspace_id: int | None, into: dict
) -> None:
    """Add the sums of rollup rows (MessageStat by hour, MessageStatDay by day) in [start, end) to `into`."""
    if start >= end:
        return
    qs = model.objects.filter(**{f"{field}__gte": start, f"{field}__lt": end})
    if workspace_id is not None:
        qs = qs.filter(workspace_id=workspace_id)
    sums = {name: Sum(name) for name in ("sent", "failed", *LATENCY_FIELDS)}
    for row in qs.values("workspace_id", "channel").annotate(**sums).order_by():
        into.setdefault((row["workspace_id"], row["channel"]), Counts()).add(
            Counts(
                sent=row["sent"] or 0,
                failed=row["failed"] or 0,
                latency=[row[name] or 0 for name in LATENCY_FIELDS],
            )
        )


def stats_refresh(
    *, start: datetime | None = None, now: datetime | None = None, rebuild: bool = False
) -> int:
    """Roll up every closed hour from `start` (default: the first message) that is missing or dirty.

    `rebuild=True` recomputes all closed hours. Returns the number of hours recomputed. Cheap when
    nothing is missing: one indexed read of MessageStatHour.
    """
    end = closed_until(now)
    if start is None:
        first = first_activity()
        if first is None:
            return 0
        start = hour_floor(first)
    else:
        start = hour_ceil(start)
    if start >= end:
        return 0
    if rebuild:
        MessageStatHour.objects.filter(hour__gte=start, hour__lt=end).update(dirty=True)
    hours = _missing_hours(start, end)
    for range_start, range_end in _contiguous(hours):
        _recompute(range_start, range_end)
    return len(hours)


# --- Reading --------------------------------------------------------------------------------------


def window_counts(
    start: datetime | None, *, now: datetime | None = None, workspace_id: int | None = None
) -> dict[tuple[int, str], Counts]:
    """Return {(workspace_id, channel): Counts} for events in [start, now]; start None = all time.

    Closed whole days and hours come from the rollup (recomputed first where missing or dirty); the
    partial first hour and everything after the last closed hour are counted live.
    """
    now = now or timezone.now()
    end_closed = closed_until(now)
    if start is None:
        first = first_activity(workspace_id)
        if first is None:
            return {}
        start = hour_floor(first)
    whole_start = hour_ceil(start)
    result: dict[tuple[int, str], Counts] = {}
    live: list[tuple[datetime, datetime]] = []
    if whole_start < end_closed:
        stats_refresh(start=whole_start, now=now)
        if start < whole_start:
            live.append((start, whole_start))
        live.append((end_closed, now + timedelta(seconds=1)))
        # Whole closed days from the day rows, the hours before and after them from the hour rows.
        first_day = day_floor(whole_start)
        if first_day < whole_start:
            first_day += DAY
        days_end = max(first_day, day_floor(end_closed))
        if first_day + DAY <= days_end:
            _sum_rollup(MessageStat, "hour", whole_start, first_day, workspace_id, result)
            _sum_rollup(MessageStatDay, "day", first_day, days_end, workspace_id, result)
            _sum_rollup(MessageStat, "hour", days_end, end_closed, workspace_id, result)
        else:
            _sum_rollup(MessageStat, "hour", whole_start, end_closed, workspace_id, result)
    else:
        live.append((start, now + timedelta(seconds=1)))
    _accumulate(result, _live_rows(live, workspace_id=workspace_id))
    return result


def hourly_series(
    workspace_id: int, start: datetime, *, now: datetime | None = None
) -> dict[tuple[datetime, str], Counts]:
    """Return {(hour start, channel): Counts} of one workspace for events in [start, now], per UTC hour.

    The hour containing `start` counts only from `start` (live, like every hour not yet closed).
    """
    now = now or timezone.now()
    whole_start = hour_ceil(start)
    end_closed = closed_until(now)
    result: dict[tuple[datetime, str], Counts] = {}
    live = [(start, now + timedelta(seconds=1))]
    if whole_start < end_closed:
        stats_refresh(start=whole_start, now=now)
        for stat in MessageStat.objects.filter(
            workspace_id=workspace_id, hour__gte=whole_start, hour__lt=end_closed
        ):
            result[(stat.hour, stat.channel)] = Counts(
                sent=stat.sent, failed=stat.failed, latency=[getattr(stat, name) for name in LATENCY_FIELDS]
            )
        live = [(start, whole_start), (end_closed, now + timedelta(seconds=1))]
    rows: dict[tuple, Counts] = {}
    _accumulate(rows, _live_rows([r for r in live if r[0] < r[1]], workspace_id=workspace_id, by_hour=True))
    for (hour, _ws, channel), counts in rows.items():
        result.setdefault((hour, channel), Counts()).add(counts)
    return result

"""Realistic demo data for the dashboard: workspaces with names, messages over past days, failures.

Used by `manage.py seed_demo` (thousands of messages) and `bench/dashboard.py` (a million). Rows are
written with bulk_create in batches, so memory stays bounded whatever the count. Times are aware UTC.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from ..models import Channel, DeliveryAttempt, Message, Status, Workspace
from ..reporting import rollup

_FIRST = (
    "Northwind",
    "Bayside",
    "Cedar",
    "Summit",
    "Harbor",
    "Maple",
    "Riverside",
    "Lakeshore",
    "Pioneer",
    "Oakridge",
    "Bluebird",
    "Granite",
    "Evergreen",
    "Sunrise",
    "Westfield",
    "Silverline",
    "Redwood",
    "Meadow",
    "Coastal",
    "Highland",
    "Juniper",
    "Brightside",
    "Ironwood",
    "Willow",
    "Copper",
)
_SECOND = (
    "Dental",
    "Auto Repair",
    "Family Clinic",
    "Realty",
    "Fitness",
    "Veterinary",
    "Plumbing",
    "Salon & Spa",
    "Law Group",
    "Insurance",
)
# Per channel: (error_kind, share of that channel's failures, attempts used, HTTP status, error text).
FAILURES = {
    Channel.SMS: [
        ("http_400", 0.45, 1, 400, "HTTP 400: Invalid recipient: number is not a mobile number"),
        ("http_503", 0.2, 3, 503, "HTTP 503: Temporarily unavailable"),
        ("http_500", 0.15, 3, 500, "HTTP 500: Internal provider error"),
        ("ConnectTimeout", 0.1, 3, None, "ConnectTimeout: no answer within 5s connect / 15s read"),
        ("http_429", 0.1, 3, 429, "HTTP 429: Too many requests for this sender"),
    ],
    Channel.EMAIL: [
        ("http_422", 0.5, 1, 422, "HTTP 422: Mailbox does not exist"),
        ("http_502", 0.3, 3, 502, "HTTP 502: Bad gateway"),
        ("ConnectionError", 0.2, 3, None, "ConnectionError: connection refused by email API"),
    ],
    Channel.AI: [
        ("ReadTimeout", 0.5, 3, None, "ReadTimeout: no answer within 5s connect / 15s read"),
        ("http_500", 0.3, 3, 500, "HTTP 500: callback target answered with an error"),
        ("http_404", 0.2, 1, 404, "HTTP 404: callback URL not found"),
    ],
}
CHANNEL_SHARE = ((Channel.SMS, 0.65), (Channel.EMAIL, 0.25), (Channel.AI, 0.10))
# Median provider latency (ms) per channel; durations are log-normal around it.
LATENCY_MEDIAN_MS = {Channel.SMS: 180, Channel.EMAIL: 420, Channel.AI: 1400}
SMS_TEXTS = (
    "Hi {name}, this is a reminder of your appointment tomorrow at 10:30. Reply C to confirm.",
    "Your order #{n} is ready for pickup. Thank you!",
    "{name}, your technician is on the way and will arrive in about 20 minutes.",
    "Thanks for visiting us today! How did we do? Rate us 1-5.",
    "Your verification code is {n}. It expires in 10 minutes.",
)
EMAIL_SUBJECTS = (
    "Your appointment is confirmed",
    "Invoice #{n} from us",
    "We miss you, {name}",
    "Your monthly statement",
    "Welcome aboard!",
)
AI_TEXTS = (
    "Do you have any openings on Saturday morning?",
    "How much is a cleaning without insurance?",
    "Can I move my appointment to next week?",
    "Are you open on public holidays?",
)
NAMES = ("Ana", "Ben", "Chloé", "Dmitri", "Emma", "Farid", "Grace", "Hiro", "Isla", "Jonas", "Kemal", "Lena")


@dataclass
class DemoResult:
    workspaces: int
    messages: int
    attempts: int
    scheduled: list[Message]


@contextlib.contextmanager
def _keep_given_accepted_at() -> Iterator[None]:
    """Let bulk_create store our accepted_at (the field is auto_now_add, which would overwrite it)."""
    field = Message._meta.get_field("accepted_at")
    field.auto_now_add = False
    try:
        yield
    finally:
        field.auto_now_add = True


def workspace_names(count: int, rng: random.Random) -> list[tuple[str, str]]:
    """`count` (external_id, name) pairs: distinct 5-digit numeric IDs and business names."""
    ids = rng.sample(range(10_000, 100_000), count)
    names = [f"{a} {b}" for a in _FIRST for b in _SECOND]
    rng.shuffle(names)
    result = []
    for i, external_id in enumerate(ids):
        name = names[i % len(names)] + ("" if i < len(names) else f" {i // len(names) + 1}")
        result.append((str(external_id), name))
    return result


def ensure_workspaces(count: int, rng: random.Random, *, unnamed: int = 1) -> list[Workspace]:
    """Create `count` demo workspaces (the last `unnamed` without a name, to show the raw-ID fallback)."""
    created = []
    for i, (external_id, name) in enumerate(workspace_names(count, rng)):
        workspace, _ = Workspace.objects.get_or_create(
            external_id=external_id, defaults={"name": "" if i >= count - unnamed else name}
        )
        created.append(workspace)
    return created


def _pick(rng: random.Random, weighted) -> object:
    x = rng.random()
    for item, share in weighted:
        x -= share
        if x <= 0:
            return item
    return weighted[-1][0]


def _duration(rng: random.Random, channel: str) -> int:
    return max(5, int(rng.lognormvariate(math.log(LATENCY_MEDIAN_MS[channel]), 0.6)))


def _accepted_time(rng: random.Random, now: datetime, days: float) -> datetime:
    """A time in the last `days` days, busier in (US) business hours."""
    while True:
        when = now - timedelta(seconds=rng.random() * days * 86_400)
        weight = 1.0 if 13 <= when.hour <= 23 else 0.35
        if rng.random() < weight:
            return when


def _content(rng: random.Random, channel: str, message: Message) -> None:
    name = rng.choice(NAMES)
    n = rng.randint(1000, 99999)
    if channel == Channel.SMS:
        message.recipient = f"+1415555{rng.randint(0, 9999):04d}"
        message.body = rng.choice(SMS_TEXTS).format(name=name, n=n)
        message.segments, message.encoding = 1, "GSM-7"
    elif channel == Channel.EMAIL:
        message.recipient = f"{name.lower()}.{n}@example.com"
        message.subject = rng.choice(EMAIL_SUBJECTS).format(name=name, n=n)
        message.body = f"<p>Hello {name},</p><p>{message.subject}.</p>"
    else:
        message.recipient = "crm.example.com"
        message.body = rng.choice(AI_TEXTS)
        message.external_message_id = f"in-{n}"
        message.callback_url = "https://crm.example.com/hooks/ai-reply"
        message.rate_limit_key = f"contact-{n}"


def _finish(
    rng: random.Random, message: Message, failure_rate: float, attempts: list[DeliveryAttempt]
) -> None:
    """Give a past message its outcome (sent, failed or cancelled) and its delivery attempts."""
    channel = message.channel
    when = message.accepted_at + timedelta(milliseconds=rng.randint(20, 900))
    roll = rng.random()
    if roll < 0.01:
        message.status = Status.CANCELLED
        message.cancelled_at = when
        return
    if roll < 0.01 + failure_rate:
        kind, _share, tries, http, error = _pick(rng, [(f, f[1]) for f in FAILURES[channel]])
        for number in range(1, tries + 1):
            duration = 15_000 if http is None else _duration(rng, channel)
            attempts.append(
                DeliveryAttempt(
                    message=message,
                    number=number,
                    kind=DeliveryAttempt.Kind.PROVIDER,
                    started_at=when,
                    duration_ms=duration,
                    http_status=http,
                    error_kind=kind,
                    error=error,
                    outcome=DeliveryAttempt.Outcome.PERMANENT
                    if tries == 1
                    else DeliveryAttempt.Outcome.TRANSIENT,
                    response_excerpt=json.dumps({"error": error.split(": ", 1)[-1]}) if http else "",
                )
            )
            when += timedelta(milliseconds=duration + 1000 * 2 ** (number - 1))
        message.status, message.failed_at, message.attempts = Status.FAILED, when, tries
        message.error_kind, message.last_error, message.provider_status = kind, error, http
        message.provider_response = attempts[-1].response_excerpt
        return
    number = 1
    if rng.random() < 0.04:  # a transient error first, then success
        attempts.append(
            DeliveryAttempt(
                message=message,
                number=1,
                started_at=when,
                duration_ms=_duration(rng, channel),
                http_status=503,
                outcome=DeliveryAttempt.Outcome.TRANSIENT,
                error_kind="http_503",
                error="HTTP 503: Temporarily unavailable",
            )
        )
        when += timedelta(seconds=1.5)
        number = 2
    kind = DeliveryAttempt.Kind.GENERATION if channel == Channel.AI else DeliveryAttempt.Kind.PROVIDER
    duration = _duration(rng, channel)
    provider_id = f"sbx_{uuid.UUID(int=rng.getrandbits(128)).hex[:16]}"
    attempts.append(
        DeliveryAttempt(
            message=message,
            number=number,
            kind=kind,
            started_at=when,
            duration_ms=duration,
            http_status=200,
            outcome=DeliveryAttempt.Outcome.SUCCESS,
            response_excerpt=f'{{"id": "{provider_id}", "status": "queued"}}',
        )
    )
    when += timedelta(milliseconds=duration)
    if channel == Channel.AI:
        message.response_text = (
            "Thanks for reaching out! We have openings on Saturday at 9:00 and 11:30. Shall I book one?"
        )
        message.ai_model, message.generation_ms = "simulated", duration
        message.prompt_tokens, message.completion_tokens, message.generated_at = 96, 24, when
        callback = _duration(rng, Channel.SMS)
        attempts.append(
            DeliveryAttempt(
                message=message,
                number=number,
                kind=DeliveryAttempt.Kind.CALLBACK,
                started_at=when,
                duration_ms=callback,
                http_status=200,
                outcome=DeliveryAttempt.Outcome.SUCCESS,
            )
        )
        when += timedelta(milliseconds=callback)
    message.status, message.sent_at, message.attempts = Status.SENT, when, number
    message.provider_status, message.provider_message_id = 200, provider_id
    message.provider_response = f'{{"id": "{provider_id}", "status": "queued"}}'


def generate(
    *,
    workspaces: list[Workspace],
    messages: int,
    days: float = 7,
    scheduled: int = 50,
    failure_rate: float = 0.05,
    seed: int = 1,
    now: datetime | None = None,
    batch_size: int = 5000,
    progress: Callable[[int], None] | None = None,
    refresh_rollup: bool = True,
) -> DemoResult:
    """Create `messages` past messages (sent, failed, cancelled) over the last `days` days and
    `scheduled` messages due in the next three days, spread over `workspaces` (some busier than
    others), with their delivery attempts; then (refresh_rollup) roll up the metrics of the hours they
    touch. Without it the caller must call `rollup.stats_refresh(rebuild=True)`.

    Scheduled messages are stored with a job id but not enqueued: the caller decides (see seed_demo).
    """
    rng = random.Random(seed)
    now = now or timezone.now()
    # A few big workspaces and a long tail, as in real traffic.
    weights = [1 / (i + 1) ** 0.8 for i in range(len(workspaces))]
    total_weight = sum(weights)
    cumulative = []
    acc = 0.0
    for w in weights:
        acc += w / total_weight
        cumulative.append(acc)

    def pick_workspace() -> Workspace:
        x = rng.random()
        lo, hi = 0, len(cumulative) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if cumulative[mid] < x:
                lo = mid + 1
            else:
                hi = mid
        return workspaces[lo]

    created_attempts = 0
    done = 0
    with _keep_given_accepted_at():
        while done < messages:
            batch: list[Message] = []
            attempts: list[DeliveryAttempt] = []
            for _ in range(min(batch_size, messages - done)):
                channel = _pick(rng, CHANNEL_SHARE)
                accepted = _accepted_time(rng, now - timedelta(minutes=2), days)
                message = Message(
                    id=uuid.UUID(int=rng.getrandbits(128), version=4),
                    channel=channel,
                    workspace=pick_workspace(),
                    contact_id=f"contact-{rng.randint(1, 50_000)}",
                    accepted_at=accepted,
                    queued_at=accepted,
                    max_attempts=3,
                    metadata={"source": "demo"} if rng.random() < 0.3 else {},
                    rq_job_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                )
                _content(rng, channel, message)
                _finish(rng, message, failure_rate, attempts)
                batch.append(message)
            with transaction.atomic():
                Message.objects.bulk_create(batch)
                DeliveryAttempt.objects.bulk_create(attempts)
            done += len(batch)
            created_attempts += len(attempts)
            if progress:
                progress(done)
        upcoming = []
        for _ in range(scheduled):
            channel = Channel.SMS if rng.random() < 0.75 else Channel.EMAIL
            when = now + timedelta(minutes=rng.randint(10, 3 * 24 * 60))
            when = when.replace(second=0, microsecond=0)
            message = Message(
                channel=channel,
                workspace=pick_workspace(),
                contact_id=f"contact-{rng.randint(1, 50_000)}",
                accepted_at=now - timedelta(minutes=rng.randint(1, 600)),
                queued_at=now,
                status=Status.SCHEDULED,
                scheduled_for=when,
                next_attempt_at=when,
                max_attempts=3,
                rq_job_id=str(uuid.uuid4()),
            )
            _content(rng, channel, message)
            upcoming.append(message)
        Message.objects.bulk_create(upcoming)
    if refresh_rollup:
        rollup.stats_refresh(start=now - timedelta(days=days + 1), now=timezone.now(), rebuild=True)
    return DemoResult(len(workspaces), messages + scheduled, created_attempts, upcoming)

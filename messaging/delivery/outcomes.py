"""Outcomes of delivery attempts: one DeliveryAttempt row per call, then the message is `sent`, queued
again for a retry after a backoff, or `failed` with the reason.

The worker records what its calls did here, and so does the sweep for an attempt a killed worker
left without an answer (recorded as a transient error of kind `interrupted`), so retry-or-fail is
decided in one place. Recording is grouped: one transaction for any number of finished attempts
(one INSERT for the attempt rows, one UPDATE per kind of outcome), and a retry's job is enqueued only
after that transaction commits (the outbox).
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from messaging import queues
from messaging.lib import answers
from messaging.lib.bulkinsert import insert_rows, update_rows
from messaging.models import DeliveryAttempt, Message, Status
from messaging.providers.base import CallResult, excerpt

from . import outbox, rows
from .channels import Attempt

INTERRUPTED = "interrupted"


def backoff_seconds(attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based):
    RETRY_BACKOFF_BASE * RETRY_BACKOFF_FACTOR ** (attempt - 1), at most RETRY_BACKOFF_MAX."""
    delay = settings.RETRY_BACKOFF_BASE * settings.RETRY_BACKOFF_FACTOR ** max(0, attempt - 1)
    return min(delay, settings.RETRY_BACKOFF_MAX)


def attempt_in_round(message: Message) -> int:
    """Return the 1-based number of attempt `message.attempts` within its current round, the step of
    the backoff after it.

    A round of attempts starts when the message is accepted and again when an operator retries it
    (services.message_retry / failed_group_retry grant DELIVERY_MAX_ATTEMPTS more attempts:
    max_attempts = attempts so far + DELIVERY_MAX_ATTEMPTS), so the backoff after a retry starts
    again from its first step. The round began after attempt max_attempts - DELIVERY_MAX_ATTEMPTS,
    clamped to 0 .. attempts - 1 in case DELIVERY_MAX_ATTEMPTS changed since.
    """
    started_after = message.max_attempts - settings.DELIVERY_MAX_ATTEMPTS
    return max(1, message.attempts - min(max(0, started_after), message.attempts - 1))


def attempt_row(message: Message, result: CallResult) -> DeliveryAttempt:
    """Return the (unsaved) DeliveryAttempt for one call of attempt number `message.attempts`.

    Its kind is `result.extra["attempt_kind"]` when the channel set one (AI: generation, callback),
    else provider; error and response are cut to a bounded excerpt.
    """
    if result.ok:
        outcome = DeliveryAttempt.Outcome.SUCCESS
    elif result.transient:
        outcome = DeliveryAttempt.Outcome.TRANSIENT
    else:
        outcome = DeliveryAttempt.Outcome.PERMANENT
    return DeliveryAttempt(
        message=message,
        number=message.attempts,
        kind=result.extra.get("attempt_kind") or DeliveryAttempt.Kind.PROVIDER,
        started_at=result.started_at,
        duration_ms=result.duration_ms,
        url=result.url[:2000],
        http_status=result.http_status,
        outcome=outcome,
        error_kind=result.error_kind[:64],
        error=excerpt(result.error),
        response_excerpt=excerpt(result.response_text),
    )


def interrupted_attempt(message: Message, now: datetime) -> Attempt:
    """The Attempt recorded for attempt `message.attempts` when its worker stopped before recording
    an answer: a transient error of kind `interrupted` (the provider may have received the call)."""
    started = message.sending_started_at or now
    reason = (
        f"Delivery attempt {message.attempts} was interrupted (worker stopped or Redis lost the job) and "
        "no answer was recorded; the provider may have received it."
    )
    call = CallResult(
        url="",
        started_at=started,
        duration_ms=max(0, int((now - started).total_seconds() * 1000)),
        transient=True,
        error_kind=INTERRUPTED,
        error=reason,
    )
    return Attempt([call])


def _provider_message_id(result: CallResult) -> str:
    """The provider's id for the message from a JSON object body (`id`, `sid` or `messageId`), else
    "" (whatever the body is: see messaging.lib.answers)."""
    data = answers.json_object(result.response_text)
    if data is None:
        return ""
    return answers.short_text(data.get("id") or data.get("sid") or data.get("messageId"), 200)


def settle(message: Message, attempt: Attempt, now: datetime) -> tuple[dict[str, Any], str]:
    """Decide what `attempt` (attempt number `message.attempts`) means for the message.

    Returns (fields to store on the message, a short description). Sent when the last call
    succeeded. A transient error with attempts left goes back to `queued` with a new job id and
    `next_attempt_at` after the backoff (its step: attempt_in_round) or the provider's Retry-After
    (at most RETRY_BACKOFF_MAX seconds); anything else is `failed`. Also updates `message` in memory.
    """
    result = attempt.last
    fields: dict[str, Any] = dict(attempt.fields)
    fields.update(provider_status=result.http_status, provider_response=excerpt(result.response_text))
    if attempt.ok:
        fields.update(
            status=Status.SENT,
            sent_at=now,
            next_attempt_at=None,
            provider_message_id=_provider_message_id(result),
            last_error="",
            error_kind="",
        )
        text = "sent"
    else:
        fields.update(last_error=excerpt(result.error), error_kind=result.error_kind[:64])
        if result.transient and message.attempts < message.max_attempts:
            asked = result.retry_after
            usable = asked is not None and math.isfinite(asked) and asked >= 0
            delay = min(
                asked if usable else backoff_seconds(attempt_in_round(message)), settings.RETRY_BACKOFF_MAX
            )
            fields.update(
                status=Status.QUEUED,
                next_attempt_at=now + timedelta(seconds=delay),
                rq_job_id=queues.new_job_id(),
            )
            text = f"retry in {delay:.1f}s: {result.error}"
        else:
            fields.update(status=Status.FAILED, failed_at=now, next_attempt_at=None)
            text = f"failed: {result.error}"
    for name, value in fields.items():
        setattr(message, name, value)
    return fields, text


def record(finished: list[tuple[Message, Attempt]]) -> list[str | None]:
    """Record finished attempts in one transaction; return each one's description, in order.

    Each message must still be `sending` with the attempt count and job id it was claimed with;
    one that is not (the sweep settled it meanwhile) is left alone and gets None. For the others:
    a DeliveryAttempt row per call, then the message fields from `settle`. Retries are enqueued
    once the transaction commits (or left `accepted` for the sweep when Redis is down).
    Raises django.db.DatabaseError; nothing is recorded then.
    """
    if not finished:
        return []
    now = timezone.now()
    texts: list[str | None] = [None] * len(finished)
    with transaction.atomic():
        ours = rows.still_sending([message for message, _ in finished], lock=True)
        attempt_rows: list[DeliveryAttempt] = []
        updates: dict[tuple[str, ...], list[tuple[Any, list[Any]]]] = defaultdict(list)
        retried: list[Message] = []
        for index, (message, attempt) in enumerate(finished):
            if str(message.pk) not in ours:
                continue
            attempt_rows.extend(attempt_row(message, call) for call in attempt.calls)
            fields, texts[index] = settle(message, attempt, now)
            names = tuple(sorted(fields))
            updates[names].append((message.pk, [fields[name] for name in names]))
            if fields["status"] == Status.QUEUED:
                retried.append(message)
        insert_rows(attempt_rows)
        for names, values in updates.items():
            update_rows(Message, names, values, where={"status": Status.SENDING})
        outbox.enqueue_after_commit(retried)
    return texts

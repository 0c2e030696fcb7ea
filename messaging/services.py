"""Writes: creating, cancelling, retrying, rescheduling and delivering messages.

All times are aware UTC datetimes. Enqueueing happens after the database transaction commits, so a
worker never sees a job for a row it cannot read; when Redis is unreachable the message stays in the
database (status `accepted`, or `queued` with its time) and the sweep enqueues it later.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from . import queues, ratelimit
from .lib.bulkinsert import insert_rows, update_rows
from .models import ApiKey, DeliveryAttempt, Message, Status, Workspace
from .providers.ai import ChatClient, Reply, simulated_reply
from .providers.base import CallResult, ProviderError, excerpt
from .providers.callback import CallbackClient
from .providers.email import EmailClient
from .providers.sms import SmsClient
from .reporting import rollup
from .workspaces import workspace_get, workspace_get_or_create

logger = logging.getLogger(__name__)

# A job that reaches a worker this many seconds (or less) before its message is due waits in place;
# one that is earlier is put back on the scheduler. rq-scheduler polls once a second.
EARLY_WAIT_MAX_SECONDS = 2.0
# A batch job over its channel's delivery rate waits for slots itself (sending at the rate, in order)
# for up to this many seconds in all; past that, the rest of its messages go to one new batch job at
# the time a slot frees.
RATE_PACING_MAX_SECONDS = 20.0
CANCELLABLE = (Status.ACCEPTED, Status.QUEUED, Status.SCHEDULED)
CLAIMABLE = (Status.QUEUED, Status.SCHEDULED)


# --- Creating and changing messages ---------------------------------------------------------------


def _enqueue_after_commit(message: Message, *, buffered: bool = False) -> None:
    """Register the enqueue of `message` for after the current transaction commits.

    With `buffered` (the API's path) and ENQUEUE_BATCH_MS > 0, a job due now goes through the
    process's queues.enqueue_buffer (enqueued with others moments later, off the request's path).
    """

    def enqueue() -> None:
        if buffered and message.next_attempt_at is None and settings.ENQUEUE_BATCH_MS > 0:
            queues.enqueue_buffer.add(
                str(message.id), message.channel, message.rq_job_id, _mark_for_sweep(message)
            )
            return
        try:
            queues.enqueue_delivery(
                str(message.id), message.channel, job_id=message.rq_job_id, at=message.next_attempt_at
            )
        except redis.exceptions.RedisError as exc:
            logger.warning("Redis unavailable, message %s left for the sweep: %s", message.id, exc)
            if message.status != Status.ACCEPTED:
                Message.objects.filter(pk=message.pk, status=message.status).update(status=Status.ACCEPTED)
                message.status = Status.ACCEPTED

    transaction.on_commit(enqueue)


def _mark_for_sweep(message: Message) -> Callable[[], None]:
    """Return a callback that marks `message` `accepted` (its enqueue failed; the sweep retries it).

    Runs on the enqueue buffer's thread, which then gives back its database connection.
    """
    pk, status = message.pk, message.status

    def mark() -> None:
        try:
            Message.objects.filter(pk=pk, status=status).update(status=Status.ACCEPTED)
        finally:
            connection.close()

    return mark


def _mark_waiting(
    message: Message, when: datetime | None, now: datetime, *, job_id: str | None = None
) -> None:
    """Set the fields of a message that is about to be enqueued (not saved); `job_id` defaults to a new
    one."""
    message.status = Status.SCHEDULED if when else Status.QUEUED
    message.accepted_at = message.accepted_at or now  # accepted and queued at the same instant
    message.scheduled_for = when if when else message.scheduled_for
    message.next_attempt_at = when
    message.queued_at = now
    message.rq_job_id = queues.new_job_id() if job_id is None else job_id


@transaction.atomic
def message_create(
    *,
    channel: str,
    workspace_external_id: str,
    workspace: Workspace | None = None,
    api_key: ApiKey | None = None,
    contact_id: str = "",
    recipient: str = "",
    body: str = "",
    subject: str = "",
    media_url: str = "",
    metadata: dict | None = None,
    scheduled_for: datetime | None = None,
    **extra: Any,
) -> Message:
    """Store an accepted request as a Message and enqueue it once the transaction commits.

    `workspace` is the one `workspace_external_id` (an ID or alias) names, when the caller has looked
    it up; None creates it (or finds it) here. `scheduled_for` (aware) delays delivery; None sends
    now. `extra` sets further Message fields (segments, encoding, callback_url, ...). Returns the
    message with status `queued` or `scheduled` (or `accepted` when Redis could not be reached; the
    sweep enqueues it later).
    """
    now = timezone.now()
    message = Message(
        channel=channel,
        workspace=workspace or workspace_get_or_create(external_id=workspace_external_id),
        api_key=api_key,
        contact_id=contact_id,
        recipient=recipient,
        body=body,
        subject=subject,
        media_url=media_url,
        metadata=metadata or {},
        max_attempts=settings.DELIVERY_MAX_ATTEMPTS,
        **extra,
    )
    _mark_waiting(message, scheduled_for, now)
    insert_rows([message])
    _enqueue_after_commit(message, buffered=True)
    return message


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@transaction.atomic
def message_create_bulk(*, items: list[dict[str, Any]], api_key: ApiKey | None = None) -> list[Message]:
    """Store many validated requests with bulk inserts and enqueue them as batch jobs after commit.

    `items` are `message_create` keyword dicts (as returned by the validation cleaners); an item's
    workspace is created (or found) once per distinct ID when it has none. Messages due at
    the same second on the same channel share `deliver_batch` jobs of up to BULK_BATCH_SIZE ids; each
    message is still claimed and recorded on its own. Returns the messages in input order with status
    `queued`/`scheduled` (or `accepted` when Redis could not be reached; the sweep enqueues those).
    """
    now = timezone.now()
    workspaces: dict[str, Workspace] = {}
    messages = []
    for item in items:
        fields = dict(item)
        external_id = fields.pop("workspace_external_id")
        workspace = fields.pop("workspace", None)
        scheduled_for = fields.pop("scheduled_for", None)
        if workspace is None:
            if external_id not in workspaces:
                workspaces[external_id] = workspace_get_or_create(external_id=external_id)
            workspace = workspaces[external_id]
        message = Message(
            workspace=workspace,
            api_key=api_key,
            max_attempts=settings.DELIVERY_MAX_ATTEMPTS,
            **fields,
        )
        _mark_waiting(message, scheduled_for, now, job_id="")  # the batch's job id is set below
        messages.append(message)
    groups: dict[tuple[str, datetime | None], list[Message]] = defaultdict(list)
    for message in messages:
        due = queues.scheduler_time(message.next_attempt_at) if message.next_attempt_at else None
        groups[(message.channel, due)].append(message)
    batches: dict[str, list[tuple[str, list[str], datetime | None]]] = defaultdict(list)
    for (channel, due), group in groups.items():
        for chunk in _chunks(group, settings.BULK_BATCH_SIZE):
            job_id = queues.new_batch_job_id()
            for message in chunk:
                message.rq_job_id = job_id
            batches[channel].append((job_id, [str(m.id) for m in chunk], due))
    insert_rows(messages)

    def enqueue() -> None:
        for channel, channel_batches in batches.items():
            try:
                queues.enqueue_batches(channel, channel_batches)
            except redis.exceptions.RedisError as exc:
                ids = [message_id for _, chunk, _ in channel_batches for message_id in chunk]
                logger.warning(
                    "Redis unavailable, %d %s messages left for the sweep: %s", len(ids), channel, exc
                )
                Message.objects.filter(pk__in=ids, status__in=CLAIMABLE).update(status=Status.ACCEPTED)
                for message in messages:
                    if message.channel == channel:
                        message.status = Status.ACCEPTED

    transaction.on_commit(enqueue)
    return messages


class MessageStateError(Exception):
    """The message is not in a status that allows the action; `message` says which status it is in."""


@transaction.atomic
def message_cancel(*, message: Message) -> Message:
    """Cancel a message that has not started sending. Cancelling a cancelled message is a no-op.

    Raises MessageStateError when it is sending, sent or failed.
    """
    now = timezone.now()
    updated = Message.objects.filter(pk=message.pk, status__in=CANCELLABLE).update(
        status=Status.CANCELLED, cancelled_at=now, next_attempt_at=None
    )
    message.refresh_from_db()
    if not updated and message.status != Status.CANCELLED:
        raise MessageStateError(f"Message is {message.status} and can no longer be cancelled.")
    if updated:
        job_id = message.rq_job_id
        transaction.on_commit(lambda: queues.cancel_job(job_id))
    return message


def _requeue_failed(pk: Any, job_id: str, now: datetime) -> int:
    """Move message `pk` from failed to queued with a fresh set of attempts and job `job_id`.

    Conditional on the message still being failed; returns the number of rows moved (0 or 1).
    """
    return Message.objects.filter(pk=pk, status=Status.FAILED).update(
        status=Status.QUEUED,
        next_attempt_at=None,
        queued_at=now,
        failed_at=None,
        max_attempts=F("attempts") + settings.DELIVERY_MAX_ATTEMPTS,
        rq_job_id=job_id,
    )


@transaction.atomic
def message_retry(*, message: Message) -> Message:
    """Queue a failed message again with a fresh set of attempts. Raises MessageStateError otherwise."""
    now = timezone.now()
    job_id = queues.new_job_id()
    failed_at = (
        Message.objects.filter(pk=message.pk, status=Status.FAILED)
        .values_list("failed_at", flat=True)
        .first()
    )
    updated = _requeue_failed(message.pk, job_id, now)
    message.refresh_from_db()
    if not updated:
        raise MessageStateError(f"Only failed messages can be retried; this one is {message.status}.")
    # The message no longer counts as failed in the hour it failed: that hour's rollup is redone.
    rollup.hours_mark_dirty([failed_at])
    _enqueue_after_commit(message)
    return message


# Messages retried per transaction by failed_group_retry.
GROUP_RETRY_BATCH = 500


def failed_group_retry(
    *, channel: str, error_kind: str, workspace_id: int | None = None, batch_size: int = GROUP_RETRY_BATCH
) -> int:
    """Retry every message that is `failed` with this channel and error kind (optionally one workspace).

    Works in batches of `batch_size`, each its own transaction, holding one batch of ids in memory at
    a time. Each message is moved failed -> queued with a conditional update, so a message that is no
    longer failed (retried, or changed meanwhile) is never retried; messages that fail again while
    this runs (failed_at after the start) are left alone. Jobs are enqueued after each batch commits.
    Returns the number of messages retried.
    """
    started = timezone.now()
    group = Message.objects.filter(
        status=Status.FAILED, channel=channel, error_kind=error_kind, failed_at__lte=started
    )
    if workspace_id is not None:
        group = group.filter(workspace_id=workspace_id)
    total = 0
    while True:
        with transaction.atomic():
            batch = list(group.order_by("failed_at", "pk").values_list("pk", "failed_at")[:batch_size])
            if not batch:
                return total
            retried: list[tuple[str, str]] = []
            now = timezone.now()
            for pk, _failed_at in batch:
                job_id = queues.new_job_id()
                if _requeue_failed(pk, job_id, now):
                    retried.append((str(pk), job_id))
            rollup.hours_mark_dirty(failed_at for _pk, failed_at in batch)
            transaction.on_commit(lambda items=retried: _enqueue_many(items, channel))
        total += len(retried)
        if len(batch) < batch_size:
            return total


def _enqueue_many(items: list[tuple[str, str]], channel: str) -> None:
    """Enqueue (message id, job id) pairs now; on a Redis error leave the rest `accepted` for the sweep."""
    for index, (message_id, job_id) in enumerate(items):
        try:
            queues.enqueue_delivery(message_id, channel, job_id=job_id)
        except redis.exceptions.RedisError as exc:
            logger.warning(
                "Redis unavailable, %d retried messages left for the sweep: %s", len(items) - index, exc
            )
            pending = [pk for pk, _job in items[index:]]
            Message.objects.filter(pk__in=pending, status=Status.QUEUED).update(status=Status.ACCEPTED)
            return


@transaction.atomic
def message_reschedule(*, message: Message, scheduled_for: datetime | None) -> Message:
    """Move a waiting message to a new send time (aware datetime; None or past = now).

    Raises MessageStateError unless the message is accepted, queued or scheduled.
    """
    now = timezone.now()
    when = scheduled_for if scheduled_for and scheduled_for > now else None
    old_job = message.rq_job_id
    job_id = queues.new_job_id()
    updated = Message.objects.filter(pk=message.pk, status__in=CANCELLABLE).update(
        status=Status.SCHEDULED if when else Status.QUEUED,
        scheduled_for=when,
        next_attempt_at=when,
        rq_job_id=job_id,
    )
    message.refresh_from_db()
    if not updated:
        raise MessageStateError(f"Message is {message.status} and can no longer be rescheduled.")
    transaction.on_commit(lambda: queues.cancel_job(old_job))
    _enqueue_after_commit(message)
    return message


# --- Delivery (runs in the worker) ----------------------------------------------------------------


def backoff_seconds(attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): exponential, capped."""
    delay = settings.RETRY_BACKOFF_BASE * settings.RETRY_BACKOFF_FACTOR ** max(0, attempt - 1)
    return min(delay, settings.RETRY_BACKOFF_MAX)


def _send_sms(message: Message) -> CallResult:
    return SmsClient().send(message)


# channel -> function that performs the outbound call(s) for one attempt; returns the successful
# CallResult or raises ProviderError.
SENDERS: dict[str, Callable[[Message], CallResult]] = {"sms": _send_sms}


# --- Email and AI replies -------------------------------------------------------------------------


def _send_email(message: Message) -> CallResult:
    return EmailClient().send(message)


SENDERS["email"] = _send_email


@transaction.atomic
def ai_request_create(
    *,
    workspace_external_id: str,
    workspace: Workspace | None = None,
    contact_id: str,
    external_message_id: str,
    body: str,
    callback_url: str,
    rate_limit_key: str,
    phone_number: str = "",
    api_key: ApiKey | None = None,
) -> Message:
    """Store an AI-reply request as a Message on queue `ai` and enqueue it after commit.

    `workspace` as in message_create. `body` is the client's message text. The message's metadata
    keeps `jobId` (the job id answered to the client, sent back in the callback even if later retries
    run under other job ids) and `to` (the optional phone number for a `/send-sms` callback).
    """
    message = message_create(
        channel="ai",
        workspace_external_id=workspace_external_id,
        workspace=workspace,
        api_key=api_key,
        contact_id=contact_id,
        recipient=(urlsplit(callback_url).hostname or "")[:320],
        body=body,
        external_message_id=external_message_id,
        callback_url=callback_url,
        rate_limit_key=rate_limit_key,
    )
    message.metadata = {"jobId": message.rq_job_id, **({"to": phone_number} if phone_number else {})}
    Message.objects.filter(pk=message.pk).update(metadata=message.metadata)
    return message


@transaction.atomic
def message_reply_store(*, message: Message, reply: Reply) -> None:
    """Record a generated AI reply on a message being sent: text, model, token counts, latency (ms).

    Stored before the callback is attempted, so a failed callback is retried without generating
    (and paying for) the reply again. Also records the generation as a DeliveryAttempt.
    """
    attempt_record(message, reply.result, kind=DeliveryAttempt.Kind.GENERATION)
    message.response_text = reply.text
    message.ai_model = reply.model
    message.prompt_tokens = reply.prompt_tokens
    message.completion_tokens = reply.completion_tokens
    message.generation_ms = reply.result.duration_ms
    message.generated_at = timezone.now()
    Message.objects.filter(pk=message.pk).update(
        response_text=message.response_text,
        ai_model=message.ai_model,
        prompt_tokens=message.prompt_tokens,
        completion_tokens=message.completion_tokens,
        generation_ms=message.generation_ms,
        generated_at=message.generated_at,
    )


def _generate_reply(message: Message) -> None:
    if not settings.AI_API_URL:
        reply = simulated_reply(message)
    else:
        prompt = message.workspace.ai_system_prompt or settings.AI_SYSTEM_PROMPT
        try:
            reply = ChatClient().generate(message, system_prompt=prompt)
        except ProviderError as exc:
            exc.result.extra["attempt_kind"] = DeliveryAttempt.Kind.GENERATION
            raise
    message_reply_store(message=message, reply=reply)


def _send_ai(message: Message) -> CallResult:
    """Generate the reply (unless an earlier attempt stored one), then POST it to the callback URL."""
    if not message.response_text:
        _generate_reply(message)
    try:
        result = CallbackClient().send(message)
    except ProviderError as exc:
        exc.result.extra["attempt_kind"] = DeliveryAttempt.Kind.CALLBACK
        raise
    result.extra["attempt_kind"] = DeliveryAttempt.Kind.CALLBACK
    return result


SENDERS["ai"] = _send_ai


def _delivery_rate_wait(message: Message) -> float | None:
    """Take a slot of the channel's delivery rate (and the workspace's, if set).

    Returns None when allowed, else the seconds until a slot frees. Specs come from
    DELIVERY_RATE_LIMITS (the `limits` notation) and Workspace.sms_per_second / email_per_second.
    """
    channel = message.channel
    spec = settings.DELIVERY_RATE_LIMITS.get(channel)
    if spec:
        outcome = ratelimit.hit(spec, "delivery", channel)
        if not outcome.allowed:
            return outcome.retry_after
    per_second = getattr(message.workspace, f"{channel}_per_second", None)
    if per_second:
        workspace_key = str(message.workspace_id)
        outcome = ratelimit.hit(f"{per_second}/second", "delivery", channel, "workspace", workspace_key)
        if not outcome.allowed:
            return outcome.retry_after
    return None


def attempt_record(message: Message, result: CallResult, *, kind: str | None = None) -> None:
    """Store one DeliveryAttempt row for `result` (error and response cut to a bounded excerpt).

    `kind` defaults to `result.extra["attempt_kind"]` when a sender set it (AI: generation or
    callback), else `provider`.
    """
    attempt_row(message, result, kind=kind).save(force_insert=True)


def attempt_row(message: Message, result: CallResult, *, kind: str | None = None) -> DeliveryAttempt:
    """Return the (unsaved) DeliveryAttempt for `result` as attempt number `message.attempts`."""
    kind = kind or result.extra.get("attempt_kind") or DeliveryAttempt.Kind.PROVIDER
    if result.ok:
        outcome = DeliveryAttempt.Outcome.SUCCESS
    elif result.transient:
        outcome = DeliveryAttempt.Outcome.TRANSIENT
    else:
        outcome = DeliveryAttempt.Outcome.PERMANENT
    return DeliveryAttempt(
        message=message,
        number=message.attempts,
        kind=kind,
        started_at=result.started_at,
        duration_ms=result.duration_ms,
        url=result.url[:2000],
        http_status=result.http_status,
        outcome=outcome,
        error_kind=result.error_kind[:64],
        error=excerpt(result.error),
        response_excerpt=excerpt(result.response_text),
    )


def _message_for_delivery(message_id: str) -> Message | None:
    """Return the message with id `message_id` (a UUID string) and its workspace (from the per-process
    cache, see workspace_get), or None when there is no such message.

    One primary-key read; the worker's hot path avoids the ORM's query building here.
    """
    pk = Message._meta.pk.get_db_prep_value(message_id, connection)
    table = connection.ops.quote_name(Message._meta.db_table)
    found = list(Message.objects.raw(f"SELECT * FROM {table} WHERE id = %s", [pk]))  # noqa: S608 (a parameter)
    if not found:
        return None
    message = found[0]
    message.workspace = workspace_get(message.workspace_id)
    return message


def _messages_for_delivery(message_ids: list[str]) -> dict[str, Message]:
    """Return {message id string: Message with its workspace} for the ids that exist; one query."""
    messages = {str(m.pk): m for m in Message.objects.filter(pk__in=message_ids)}
    for message in messages.values():
        message.workspace = workspace_get(message.workspace_id)
    return messages


def _defer(message: Message, at: datetime) -> None:
    """Put the message's job back on the scheduler for `at` without using an attempt."""
    job_id = queues.new_job_id()
    Message.objects.filter(pk=message.pk, status__in=CLAIMABLE).update(rq_job_id=job_id)
    queues.enqueue_delivery(str(message.pk), message.channel, job_id=job_id, at=at)


def message_deliver(*, message_id: str, job_id: str | None = None) -> str:
    """Make one delivery attempt for a message; the body of the `deliver` job.

    Claims the message with a conditional update (queued/scheduled -> sending); when the claim fails
    (sent, cancelled, or claimed by another job) it does nothing. A job that arrives before the
    message's `next_attempt_at` waits (up to EARLY_WAIT_MAX_SECONDS) or defers itself, so nothing is
    handed to a provider early. A job over its channel's delivery rate (DELIVERY_RATE_LIMITS, and the
    workspace's own per-second rate when set) defers itself until a slot frees, without using an
    attempt. Outcomes: `sent`; a transient error with attempts left goes back on
    the scheduler after the backoff (or the provider's Retry-After); otherwise `failed` with the reason.
    With `job_id` (the running RQ job), only the job the message points at (`rq_job_id`) may claim it,
    so a stale or duplicate job left by a sweep, reschedule or Redis restart does nothing.
    Returns a short description of what happened (stored as the RQ job result).
    """
    message = _message_for_delivery(message_id)
    if message is None:
        return "missing"
    return _deliver_loaded(message, job_id)


def _deliver_loaded(message: Message, job_id: str | None) -> str:
    """message_deliver for a message already read from the database (with its workspace)."""
    if message.status not in CLAIMABLE:
        return f"skipped: message is {message.status}"
    if job_id and message.rq_job_id and message.rq_job_id != job_id:
        return "skipped: superseded by another job"
    now = timezone.now()
    if message.next_attempt_at and message.next_attempt_at > now:
        wait = (message.next_attempt_at - now).total_seconds()
        if wait > EARLY_WAIT_MAX_SECONDS:
            _defer(message, message.next_attempt_at)
            return f"deferred {wait:.1f}s"
        time.sleep(wait)
        now = timezone.now()
    rate_wait = _delivery_rate_wait(message)
    if rate_wait is not None:
        # Over the channel's delivery rate: try again when a slot frees, without using an attempt.
        _defer(message, now + timedelta(seconds=rate_wait))
        return f"deferred {rate_wait:.2f}s: over the {message.channel} delivery rate"
    # The claim also requires the status, job and attempt count read above, so the fields set here
    # are exactly what the row holds afterwards (no second read).
    claimed = (
        Message.objects.filter(
            pk=message.pk, status=message.status, rq_job_id=message.rq_job_id, attempts=message.attempts
        )
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .update(status=Status.SENDING, attempts=F("attempts") + 1, sending_started_at=now)
    )
    if claimed != 1:
        return "skipped: claimed elsewhere or not due"
    message.status, message.attempts, message.sending_started_at = Status.SENDING, message.attempts + 1, now
    try:
        result = SENDERS[message.channel](message)
    except ProviderError as exc:
        return _record_failure(message, exc.result)
    _record_success(message, result)
    return "sent"


def _sent_fields(result: CallResult, now: datetime) -> dict[str, Any]:
    """The Message fields a successful attempt sets (the provider's id from `id`, `sid` or `messageId`)."""
    data = result.json()
    provider_id = ""
    if isinstance(data, dict):
        provider_id = str(data.get("id") or data.get("sid") or data.get("messageId") or "")[:200]
    return {
        "status": Status.SENT,
        "sent_at": now,
        "next_attempt_at": None,
        "provider_status": result.http_status,
        "provider_response": excerpt(result.response_text),
        "provider_message_id": provider_id,
        "last_error": "",
        "error_kind": "",
    }


@transaction.atomic
def _record_success(message: Message, result: CallResult) -> None:
    attempt_record(message, result)
    Message.objects.filter(pk=message.pk, status=Status.SENDING).update(
        **_sent_fields(result, timezone.now())
    )


@transaction.atomic
def _record_failure(message: Message, result: CallResult) -> str:
    attempt_record(message, result)
    now = timezone.now()
    fields = {
        "last_error": excerpt(result.error),
        "error_kind": result.error_kind[:64],
        "provider_status": result.http_status,
        "provider_response": excerpt(result.response_text),
    }
    if result.transient and message.attempts < message.max_attempts:
        delay = result.retry_after if result.retry_after is not None else backoff_seconds(message.attempts)
        delay = min(delay, settings.RETRY_BACKOFF_MAX)
        message.next_attempt_at = now + timedelta(seconds=delay)
        message.rq_job_id = queues.new_job_id()
        message.status = Status.QUEUED
        Message.objects.filter(pk=message.pk, status=Status.SENDING).update(
            status=Status.QUEUED,
            next_attempt_at=message.next_attempt_at,
            rq_job_id=message.rq_job_id,
            **fields,
        )
        _enqueue_after_commit(message)
        return f"retry in {delay:.1f}s: {result.error}"
    Message.objects.filter(pk=message.pk, status=Status.SENDING).update(
        status=Status.FAILED, failed_at=now, next_attempt_at=None, **fields
    )
    return f"failed: {result.error}"


_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] | None = None  # (process id, size) the pool was made for


def delivery_pool() -> ThreadPoolExecutor:
    """Return this process's pool of BULK_DELIVERY_CONCURRENCY delivery threads, made on first use.

    The threads outlive a batch job, so their database connections (CONN_MAX_AGE) and HTTP keep-alive
    connections to providers are reused by the next batch instead of opened again. A forked work
    horse makes its own pool.
    """
    global _pool, _pool_key
    key = (os.getpid(), max(1, settings.BULK_DELIVERY_CONCURRENCY))
    if _pool is None or _pool_key != key:
        with _pool_lock:
            if _pool is None or _pool_key != key:
                _pool = ThreadPoolExecutor(max_workers=key[1], thread_name_prefix="deliver")
                _pool_key = key
    return _pool


def delivery_pool_shutdown() -> None:
    """Stop this process's delivery threads once their calls finish (tests call this)."""
    global _pool, _pool_key
    with _pool_lock:
        pool, _pool, _pool_key = _pool, None, None
    if pool is not None:
        pool.shutdown(wait=True)


# Channels whose sender only makes HTTP calls (no database work), so batch jobs run them in the
# delivery threads. AI replies store the generated text mid-attempt; they are delivered one by one.
CONCURRENT_CHANNELS = ("sms", "email")


def _outcome_tag(outcome: str) -> str:
    return outcome.split(":")[0].split(" ")[0]


def _send_in_thread(message: Message) -> CallResult | Exception:
    """Run the channel's sender in a delivery thread; return its CallResult or the exception."""
    try:
        return SENDERS[message.channel](message)
    except Exception as exc:  # noqa: BLE001 - handed back to the job's thread, which records it
        return exc


def _claim_many(messages: list[Message], job_id: str | None, now: datetime) -> list[Message]:
    """Claim `messages` (queued/scheduled -> sending, attempts + 1) in one conditional UPDATE; return
    those claimed, with status, attempts and sending_started_at as now stored.

    Each row is claimed on its own terms: still claimable, due, and pointing at `job_id` (when given).
    The claimed rows are then read back by the claim's own timestamp.
    """
    if not messages:
        return []
    by_pk = {m.pk: m for m in messages}
    claimable = Message.objects.filter(pk__in=list(by_pk), status__in=CLAIMABLE)
    if job_id:
        claimable = claimable.filter(rq_job_id=job_id)
    claimable.filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)).update(
        status=Status.SENDING, attempts=F("attempts") + 1, sending_started_at=now
    )
    claimed = Message.objects.filter(pk__in=list(by_pk), status=Status.SENDING, sending_started_at=now)
    if job_id:
        claimed = claimed.filter(rq_job_id=job_id)
    result = []
    for pk, attempts in claimed.values_list("pk", "attempts"):
        message = by_pk[pk]
        message.status, message.attempts, message.sending_started_at = Status.SENDING, attempts, now
        result.append(message)
    return result


def _defer_batch(messages: list[Message], job_id: str | None, at: datetime) -> int:
    """Move `messages` (one channel, still waiting) to one new batch job released at `at`.

    Only messages still claimable and pointing at `job_id` move; returns how many did.
    """
    if not messages:
        return 0
    new_job_id = queues.new_batch_job_id()
    movable = Message.objects.filter(pk__in=[m.pk for m in messages], status__in=CLAIMABLE)
    if job_id:
        movable = movable.filter(rq_job_id=job_id)
    moved = movable.update(rq_job_id=new_job_id)
    if moved:
        ids = [str(m.pk) for m in messages]
        queues.enqueue_batches(messages[0].channel, [(new_job_id, ids, at)])
    return moved


def _record_many(finished: list[tuple[Message, CallResult | Exception]], outcomes: Counter[str]) -> None:
    """Record the outcomes of attempts made by a batch job.

    Successes: their DeliveryAttempt rows and Message updates in one transaction (one INSERT and one
    UPDATE statement, each run for all rows). Provider errors go through the single-message path
    (retry with backoff, or failed). An unexpected exception is logged and its message left `sending`
    for the sweep.
    """
    now = timezone.now()
    successes = []
    for message, outcome in finished:
        if isinstance(outcome, CallResult):
            successes.append((message, outcome))
        elif isinstance(outcome, ProviderError):
            outcomes[_outcome_tag(_record_failure(message, outcome.result))] += 1
        else:
            logger.error("delivery of message %s raised", message.pk, exc_info=outcome)
            outcomes["error"] += 1
    if not successes:
        return
    with transaction.atomic():
        insert_rows([attempt_row(message, result) for message, result in successes])
        fields = list(_sent_fields(successes[0][1], now))
        update_rows(
            Message,
            fields,
            [(message.pk, list(_sent_fields(result, now).values())) for message, result in successes],
            where={"status": Status.SENDING},
        )
    outcomes["sent"] += len(successes)


def message_deliver_many(*, message_ids: list[str], job_id: str | None = None) -> str:
    """Deliver many messages (a batch job) with up to BULK_DELIVERY_CONCURRENCY calls in flight.

    `job_id` is the batch job's id: a message the sweep has since given a job of its own is skipped.
    The messages are read in one query. Each is then handled as message_deliver would: nothing is
    sent before its `next_attempt_at` (the job waits for it, up to EARLY_WAIT_MAX_SECONDS, else
    defers that message), each takes its own slot of the delivery rate, each is claimed, attempted,
    recorded and retried on its own. Over the delivery rate the job waits for the next slot (so a
    burst goes out at the rate, in order, without using attempts), for up to RATE_PACING_MAX_SECONDS
    in all; then the rest of its messages move to one new batch job at the time a slot frees. The database
    work stays on this thread, grouped: one UPDATE claims the messages that are about to be sent,
    and finished attempts are recorded together; the delivery threads (delivery_pool) only make the
    provider calls, so a worker process holds one database connection however many calls are in
    flight. When the job is interrupted (its timeout, a cold shutdown), messages not yet claimed wait
    for the sweep, and finished attempts are still recorded. Returns a count of outcomes, e.g.
    "sent=98 retry=2".
    """
    loaded = _messages_for_delivery(message_ids)
    outcomes: Counter[str] = Counter()
    ready: list[Message] = []
    now = timezone.now()
    for message_id in message_ids:
        message = loaded.get(str(message_id))
        if message is None:
            outcomes["missing"] += 1
        elif message.status not in CLAIMABLE or (
            job_id and message.rq_job_id and message.rq_job_id != job_id
        ):
            outcomes["skipped"] += 1
        elif message.channel not in CONCURRENT_CHANNELS:
            outcomes[_outcome_tag(_deliver_loaded(message, job_id))] += 1
        elif (
            message.next_attempt_at
            and (message.next_attempt_at - now).total_seconds() > EARLY_WAIT_MAX_SECONDS
        ):
            _defer(message, message.next_attempt_at)
            outcomes["deferred"] += 1
        else:
            ready.append(message)
    ready.sort(key=lambda m: m.next_attempt_at or now)
    pending = deque(ready)
    window = max(1, settings.BULK_DELIVERY_CONCURRENCY)
    # Top up (and record) in groups: one claim UPDATE per group instead of one per finished call.
    group = max(1, window // 3)
    pool = delivery_pool()
    in_flight: dict[Future, Message] = {}
    finished: list[tuple[Message, CallResult | Exception]] = []
    paced_until: datetime | None = None  # no delivery-rate slot before this time
    paced_seconds = 0.0  # time this job has waited for slots so far
    try:
        while pending or in_flight:
            now = timezone.now()
            batch: list[Message] = []
            free = window - len(in_flight)
            if (free >= group or not in_flight) and (paced_until is None or paced_until <= now):
                paced_until = None
                while (
                    pending
                    and len(batch) < free
                    and (pending[0].next_attempt_at is None or pending[0].next_attempt_at <= now)
                ):
                    rate_wait = _delivery_rate_wait(pending[0])
                    if rate_wait is None:
                        batch.append(pending.popleft())
                    elif paced_seconds + rate_wait <= RATE_PACING_MAX_SECONDS:
                        # Over the delivery rate: this job waits for the next slot, keeping its order.
                        paced_until = now + timedelta(seconds=rate_wait)
                        paced_seconds += rate_wait
                        break
                    else:
                        # A long wait: the rest goes to one new batch job at the time a slot frees.
                        outcomes["deferred"] += _defer_batch(
                            list(pending), job_id, now + timedelta(seconds=rate_wait)
                        )
                        pending.clear()
            claimed: list[Message] = []
            if batch or (finished and (len(finished) >= group or not in_flight)):
                # One transaction (one commit) records what finished and claims what goes out next;
                # the calls start only once the claim is committed.
                with transaction.atomic():
                    if finished:
                        _record_many(finished, outcomes)
                        finished = []
                    claimed = _claim_many(batch, job_id, now)
            outcomes["skipped"] += len(batch) - len(claimed)
            for message in claimed:
                in_flight[pool.submit(_send_in_thread, message)] = message
            # Sleep until a call finishes or the next message is due (or a rate slot frees).
            # (None: only a finished call can let more go out.)
            now = timezone.now()
            waits = [
                t for t in (paced_until, pending[0].next_attempt_at if pending else None) if t and t > now
            ]
            due_in = (max(waits) - now).total_seconds() if pending and waits else None
            if in_flight:
                done, _ = futures_wait(in_flight, timeout=due_in, return_when=FIRST_COMPLETED)
                finished.extend((in_flight.pop(future), future.result()) for future in done)
            elif due_in:
                time.sleep(due_in)
            if finished and not in_flight and not pending:
                _record_many(finished, outcomes)
                finished = []
    except BaseException:
        for future in in_flight:
            future.cancel()
        raise
    finally:
        if finished:
            _record_many(finished, outcomes)
    return " ".join(f"{name}={count}" for name, count in sorted(outcomes.items()))

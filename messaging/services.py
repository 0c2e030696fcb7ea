"""Intake writes: creating, cancelling, retrying and rescheduling messages.

All times are aware UTC datetimes. A message's job is enqueued only after the transaction that
stored it commits (messaging.delivery.outbox); when Redis is unreachable the message stays in the
database (status `accepted`) and the sweep enqueues it later.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from . import queues
from .delivery import outbox
from .lib.bulkinsert import insert_rows, new_instances, prepare_rows, write_rows
from .lib.groupcommit import GroupCommitter
from .models import ApiKey, Message, Status, Workspace
from .reporting import rollup
from .workspaces import workspace_get_or_create

logger = logging.getLogger(__name__)

CANCELLABLE = (Status.ACCEPTED, Status.QUEUED, Status.SCHEDULED)
CLAIMABLE = (Status.QUEUED, Status.SCHEDULED)


# --- Creating and changing messages ---------------------------------------------------------------


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


def message_build(
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
    """Return an accepted request as an unsaved Message, ready to store with `messages_store`.

    `workspace` is the one `workspace_external_id` (an ID or alias) names, when the caller has looked
    it up; None creates it (or finds it) here. `scheduled_for` (aware) delays delivery; None sends
    now. `extra` sets further Message fields (segments, encoding, callback_url, ...). The message has
    its id, status `queued` or `scheduled` and its job id already.
    """
    # new_instances: as Message(...) builds it, without Model.__init__'s cost per field.
    (message,) = new_instances(
        Message,
        [
            dict(
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
        ],
    )
    _mark_waiting(message, scheduled_for, timezone.now())
    return message


def _share_batch_jobs(messages: list[Message]) -> None:
    """Give the SMS and email messages of one group commit that are due now shared batch jobs.

    Messages due now on the same channel (at least two) get `deliver_batch` jobs of up to
    BULK_BATCH_SIZE ids, as a bulk send's do: RQ's per-job work (creating, saving and later running a
    job) was a quarter of a single request's CPU time, and a job per message costs about 1,800 bytes
    of Redis against about 40 per message in a batch. Each message is still claimed, attempted and
    recorded on its own, and a retry gets a job of its own. AI requests keep a job each (the job id
    answered to the client goes back in its callback).
    """
    by_channel: dict[str, list[Message]] = defaultdict(list)
    for message in messages:
        if message.next_attempt_at is None and message.channel != "ai":
            by_channel[message.channel].append(message)
    for group in by_channel.values():
        if len(group) < 2:
            continue
        for chunk in _chunks(group, settings.BULK_BATCH_SIZE):
            job_id = queues.new_batch_job_id()
            for message in chunk:
                message.rq_job_id = job_id


def _insert(messages: list[Message]) -> None:
    _share_batch_jobs(messages)
    insert_rows(messages)


def _enqueue_stored(messages: list[Message]) -> None:
    outbox.enqueue(messages)


# One per process: the API's single-message requests are stored in groups (messaging.lib.groupcommit).
_committer: GroupCommitter[Message] = GroupCommitter(
    _insert,
    after_commit=_enqueue_stored,
    max_items=500,
    max_wait=settings.GROUP_COMMIT_WAIT_MS / 1000,
    name="message-committer",
)


def messages_store(messages: list[Message]) -> None:
    """Store built messages (message_build) and enqueue their jobs once they are committed.

    Returns after the commit that holds them, so an answer sent afterwards means "stored". Outside
    any transaction and with GROUP_COMMIT on, the rows go through the process's group committer (one
    transaction for the requests of many threads) and their jobs are enqueued right after that commit,
    before this returns: a message is then `queued`, or `accepted` when Redis could not take it (left
    for the sweep). Inside a transaction they are inserted in it and enqueued after it commits.
    Raises django.db.DatabaseError when they could not be stored, or groupcommit.CommitTimeout
    (nothing is known; GROUP_COMMIT_TIMEOUT_SECONDS passed without an answer).
    """
    if settings.GROUP_COMMIT and not transaction.get_connection().in_atomic_block:
        _committer.store(messages, timeout=settings.GROUP_COMMIT_TIMEOUT_SECONDS)
        return
    with transaction.atomic():
        insert_rows(messages)
        outbox.enqueue_after_commit(messages, buffered=True)


def message_create(**fields: Any) -> Message:
    """Store an accepted request as a Message and enqueue it once it is committed.

    `fields` are message_build's keyword arguments. Returns the message with status `queued` or
    `scheduled` (or `accepted` when Redis could not be reached; the sweep enqueues it later). Raises
    as messages_store does.
    """
    message = message_build(**fields)
    messages_store([message])
    return message


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def message_create_bulk(*, items: list[dict[str, Any]], api_key: ApiKey | None = None) -> list[Message]:
    """Store many validated requests with bulk inserts and enqueue them as batch jobs after commit.

    `items` are `message_create` keyword dicts (as returned by the validation cleaners); an item's
    workspace is created (or found) once per distinct ID when it has none. Messages due at
    the same second on the same channel share `deliver_batch` jobs of up to BULK_BATCH_SIZE ids; each
    message is still claimed and recorded on its own. Returns the messages in input order with status
    `queued`/`scheduled` (or `accepted` when Redis could not be reached; the sweep enqueues those).
    Everything is stored in one transaction, or nothing (django.db.DatabaseError is raised).
    """
    now = timezone.now()
    rows = []
    times = []
    without_workspace: list[tuple[int, str]] = []  # (index, workspace ID) of items naming a new one
    for index, item in enumerate(items):
        fields = dict(item)
        external_id = fields.pop("workspace_external_id")
        workspace = fields.pop("workspace", None)
        times.append(fields.pop("scheduled_for", None))
        if workspace is None:
            without_workspace.append((index, external_id))
        else:
            fields["workspace"] = workspace
        fields["api_key"] = api_key
        fields["max_attempts"] = settings.DELIVERY_MAX_ATTEMPTS
        rows.append(fields)
    messages = new_instances(Message, rows)
    for message, scheduled_for in zip(messages, times, strict=True):
        _mark_waiting(message, scheduled_for, now, job_id="")  # the batch's job id is set below
    groups: dict[tuple[str, datetime | None], list[Message]] = defaultdict(list)
    for message in messages:
        due = queues.scheduler_time(message.next_attempt_at) if message.next_attempt_at else None
        groups[(message.channel, due)].append(message)
    for group in groups.values():
        for chunk in _chunks(group, settings.BULK_BATCH_SIZE):
            job_id = queues.new_batch_job_id()
            for message in chunk:
                message.rq_job_id = job_id
    # The rows are built before the transaction starts: on SQLite it holds the database's write lock
    # (IMMEDIATE), which every other request's write waits for. Rows of messages whose workspace is
    # created below are built inside it.
    prepared = None if without_workspace else prepare_rows(messages)
    with transaction.atomic():
        workspaces: dict[str, Workspace] = {}
        for index, external_id in without_workspace:
            if external_id not in workspaces:
                workspaces[external_id] = workspace_get_or_create(external_id=external_id)
            messages[index].workspace = workspaces[external_id]
        write_rows(prepared or prepare_rows(messages))
        outbox.enqueue_after_commit(messages)
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
    The backoff's step is counted from here (delivery.outcomes.attempt_in_round reads it from
    max_attempts - DELIVERY_MAX_ATTEMPTS), so the backoff starts again from its first step.
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
    outbox.enqueue_after_commit([message])
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
            retried: list[Message] = []
            now = timezone.now()
            for pk, _failed_at in batch:
                job_id = queues.new_job_id()
                if _requeue_failed(pk, job_id, now):
                    retried.append(Message(pk=pk, channel=channel, status=Status.QUEUED, rq_job_id=job_id))
            rollup.hours_mark_dirty(failed_at for _pk, failed_at in batch)
            outbox.enqueue_after_commit(retried)
        total += len(retried)
        if len(batch) < batch_size:
            return total


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
    outbox.enqueue_after_commit([message])
    return message


# --- AI replies -------------------------------------------------------------------------------


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
    message = message_build(
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
    messages_store([message])
    return message

"""Conditional changes to message rows, for many messages at once.

Every change here is guarded by what the row held when it was read (its status, job id and attempt
count), so several workers and the sweep can act on the same messages at once: of two, only one moves
a row, and the other learns it did not. Each is one SQL statement run for every row with
`executemany` (a single call into the driver); the number of rows changed tells whether all of them
moved, and only when some did not are the moved ones read back. These run on the delivery hot path,
so they use plain SQL instead of the ORM's query building.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import connection

from messaging.models import Message, Status

CLAIMABLE = (Status.QUEUED.value, Status.SCHEDULED.value)


def _table() -> str:
    return connection.ops.quote_name(Message._meta.db_table)


def _pk(value: Any) -> Any:
    return Message._meta.pk.get_db_prep_value(value, connection)


def _stamp(value: datetime | None) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def _placeholders(count: int) -> str:
    return ", ".join(["%s"] * count)


def _run(sql: str, rows: list[tuple]) -> int:
    """Run `sql` for every row; return how many rows it changed in all."""
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)
        return cursor.rowcount


def _ids(condition: str, params: list[Any]) -> set[str]:
    """Ids (as strings) of the messages matching `condition` (SQL after WHERE, with %s parameters)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id FROM {_table()} WHERE {condition}", params)  # noqa: S608 (parameters)
        return {str(Message._meta.pk.to_python(row[0])) for row in cursor.fetchall()}


def _distinct(pks) -> None:
    pks = [str(pk) for pk in pks]
    if len(set(pks)) != len(pks):
        raise ValueError("a message appears twice in one conditional update")


def load(message_ids: Sequence[str]) -> dict[str, Message]:
    """Return {id string: Message} for the ids that exist, in one query. Raises DatabaseError."""
    if not message_ids:
        return {}
    sql = f"SELECT * FROM {_table()} WHERE id IN ({_placeholders(len(message_ids))})"  # noqa: S608
    return {str(m.pk): m for m in Message.objects.raw(sql, [_pk(i) for i in message_ids])}


def claim(messages: Sequence[Message], now: datetime) -> set[str]:
    """Claim messages for an attempt: queued/scheduled -> sending, attempts + 1, sending_started_at.

    A row moves only if it is still waiting, points at the same job, has the attempt count read and
    is due. Returns the ids (strings) of the messages claimed; updates those in memory. Each message
    may appear once (ValueError otherwise): which of two claims of one row succeeded cannot be told
    by its id.
    """
    if not messages:
        return set()
    _distinct(m.pk for m in messages)
    stamp = _stamp(now)
    sql = (
        f"UPDATE {_table()} SET status = %s, attempts = %s, sending_started_at = %s "  # noqa: S608
        "WHERE id = %s AND status IN (%s, %s) AND rq_job_id = %s AND attempts = %s "
        "AND (next_attempt_at IS NULL OR next_attempt_at <= %s)"
    )
    rows = [
        (Status.SENDING.value, m.attempts + 1, stamp, _pk(m.pk), *CLAIMABLE, m.rq_job_id, m.attempts, stamp)
        for m in messages
    ]
    if _run(sql, rows) == len(rows):
        claimed = {str(m.pk) for m in messages}
    else:
        # Which rows moved: those now `sending` with this claim's time, attempt count and job id.
        ids = [_pk(m.pk) for m in messages]
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, attempts, rq_job_id FROM {_table()} "  # noqa: S608 (parameters)
                f"WHERE id IN ({_placeholders(len(ids))}) AND status = %s AND sending_started_at = %s",
                [*ids, Status.SENDING.value, stamp],
            )
            found = {str(Message._meta.pk.to_python(pk)): (n, job) for pk, n, job in cursor.fetchall()}
        claimed = {str(m.pk) for m in messages if found.get(str(m.pk)) == (m.attempts + 1, m.rq_job_id)}
    for message in messages:
        if str(message.pk) in claimed:
            message.status, message.attempts, message.sending_started_at = (
                Status.SENDING,
                message.attempts + 1,
                now,
            )
    return claimed


def release(messages: Sequence[Message]) -> None:
    """Undo claims (sending -> queued, attempts - 1) of messages whose call was not made; updates
    them in memory."""
    if not messages:
        return
    sql = (
        f"UPDATE {_table()} SET status = %s, attempts = %s, sending_started_at = NULL "  # noqa: S608
        "WHERE id = %s AND status = %s AND attempts = %s"
    )
    _run(
        sql,
        [
            (Status.QUEUED.value, m.attempts - 1, _pk(m.pk), Status.SENDING.value, m.attempts)
            for m in messages
        ],
    )
    for message in messages:
        message.status, message.attempts, message.sending_started_at = (
            Status.QUEUED,
            message.attempts - 1,
            None,
        )


def move(
    moves: Sequence[tuple[Message, str, datetime | None]],
    *,
    from_statuses: Sequence[str] = CLAIMABLE,
    status: dict[str, str] | None = None,
    queued_at: datetime | None = None,
) -> set[str]:
    """Give waiting messages new jobs: for each (message, new job id, next attempt time), set
    `rq_job_id` and `next_attempt_at`, and with `status` ({id: status}) and `queued_at` those too.

    A row moves only if its status is one of `from_statuses` and it still points at the job id the
    message object holds. Returns the ids (strings) of the messages moved; updates those in memory.
    Each message may appear once (ValueError otherwise).
    """
    if not moves:
        return set()
    _distinct(message.pk for message, _, _ in moves)
    from_statuses = [str(value) for value in from_statuses]
    sets = "rq_job_id = %s, next_attempt_at = %s" + (", status = %s, queued_at = %s" if status else "")
    sql = (
        f"UPDATE {_table()} SET {sets} "  # noqa: S608
        f"WHERE id = %s AND rq_job_id = %s AND status IN ({_placeholders(len(from_statuses))})"
    )
    stamp = _stamp(queued_at)
    rows = []
    for message, job_id, at in moves:
        extra = (str(status[str(message.pk)]), stamp) if status else ()
        rows.append((job_id, _stamp(at), *extra, _pk(message.pk), message.rq_job_id, *from_statuses))
    if _run(sql, rows) == len(rows):
        moved = {str(message.pk) for message, _, _ in moves}
    else:
        ids = [_pk(message.pk) for message, _, _ in moves]
        job_ids = sorted({job_id for _, job_id, _ in moves})
        moved = _ids(
            f"id IN ({_placeholders(len(ids))}) AND rq_job_id IN ({_placeholders(len(job_ids))})",
            [*ids, *job_ids],
        )
    for message, job_id, at in moves:
        if str(message.pk) in moved:
            message.rq_job_id, message.next_attempt_at = job_id, at
            if status:
                message.status = status[str(message.pk)]
    return moved


def still_sending(messages: Sequence[Message], *, lock: bool) -> set[str]:
    """Ids of `messages` still `sending` with the attempt count and job id the objects hold (nothing
    settled them meanwhile). With `lock`, the rows stay locked until the transaction ends (where the
    database can: SELECT ... FOR UPDATE)."""
    if not messages:
        return set()
    sql = (
        f"SELECT id, attempts, rq_job_id FROM {_table()} "  # noqa: S608
        f"WHERE id IN ({_placeholders(len(messages))}) AND status = %s"
    )
    if lock and connection.features.has_select_for_update:
        sql += " FOR UPDATE"
    with connection.cursor() as cursor:
        cursor.execute(sql, [*(_pk(m.pk) for m in messages), Status.SENDING.value])
        found = {
            str(Message._meta.pk.to_python(pk)): (attempts, job) for pk, attempts, job in cursor.fetchall()
        }
    return {str(m.pk) for m in messages if found.get(str(m.pk)) == (m.attempts, m.rq_job_id)}

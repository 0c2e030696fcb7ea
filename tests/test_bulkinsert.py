"""messaging.lib.bulkinsert: instances built without Model.__init__, rows written in one statement
(executemany on SQLite, COPY on PostgreSQL), read back exactly as Model.save() would have stored them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from django.db import IntegrityError, transaction

from messaging.lib.bulkinsert import insert_rows, new_instances
from messaging.models import Message, Workspace

pytestmark = pytest.mark.django_db(transaction=True)

# Values a COPY in text format must escape (tab, newline, backslash, \N, quotes), non-ASCII text, a
# character outside the BMP, nested JSON and JSON that looks like a string.
AWKWARD = {
    "channel": "sms",
    "contact_id": "c\t1\\N",
    "recipient": "+14155550001",
    "body": "line 1\nline 2\r\n\\ \"quoted\" 'single' é 😀 \x7f",
    "subject": "\\.",
    "metadata": {"a": [1, 2.5, None, True, {"b": "x\ty\n😀"}], "empty": {}, "s": '"text"'},
    "segments": 3,
    "encoding": "UCS-2",
    "status": "scheduled",
    "scheduled_for": datetime(2031, 3, 27, 9, 30, 0, 123456, tzinfo=UTC),
    "next_attempt_at": datetime(2031, 3, 27, 9, 30, 0, 123456, tzinfo=UTC),
    "rq_job_id": "batch-1",
}


def stored(message_id) -> dict:
    message = Message.objects.get(pk=message_id)
    return {f.attname: getattr(message, f.attname) for f in Message._meta.concrete_fields}


def test_rows_written_in_bulk_read_back_as_saved_ones():
    workspace = Workspace.objects.create(external_id="w1")
    when = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    saved = Message(workspace=workspace, accepted_at=when, **AWKWARD)
    saved.save()
    rows = [
        {"workspace": workspace, "accepted_at": when, **AWKWARD},
        {"workspace": workspace, "accepted_at": when, "channel": "email", "metadata": {}},
    ]
    with transaction.atomic():
        bulk = new_instances(Message, rows)
        insert_rows(bulk)
    assert all(not m._state.adding and m._state.db == "default" for m in bulk)
    expected, got = stored(saved.pk), stored(bulk[0].pk)
    # save() sets auto_now_add fields itself; insert_rows keeps a value the caller set.
    assert got.pop("accepted_at") == when
    for name in ("id", "updated_at", "accepted_at"):
        expected.pop(name, None), got.pop(name, None)
    assert got == expected
    assert stored(bulk[1].pk)["metadata"] == {}
    assert stored(bulk[1].pk)["scheduled_for"] is None


def test_new_instances_are_what_the_model_constructor_builds():
    workspace = Workspace.objects.create(external_id="w1")
    values = {"workspace": workspace, **AWKWARD}
    built, constructed = new_instances(Message, [values, values]), Message(**values)
    for message in built:
        assert isinstance(message.pk, uuid.UUID)
        assert message.workspace is workspace  # cached, as assignment caches it: no query
        assert message._state.adding and message._state.db is None
        attrs = {k: v for k, v in vars(message).items() if k not in ("id", "_state")}
        assert attrs == {k: v for k, v in vars(constructed).items() if k not in ("id", "_state")}
    assert built[0].pk != built[1].pk
    # Callable defaults are called per instance: no shared mutable default.
    a, b = new_instances(Message, [{"workspace": workspace}, {"workspace": workspace}])
    assert a.metadata == {} and a.metadata is not b.metadata
    with pytest.raises(TypeError, match="no_such_field"):
        new_instances(Message, [{"no_such_field": 1}])


def test_a_failed_bulk_write_raises_a_django_database_error_and_stores_nothing():
    workspace = Workspace.objects.create(external_id="w1")
    first, second = new_instances(Message, [{"workspace": workspace, **AWKWARD}] * 2)
    second.id = first.id
    with pytest.raises(IntegrityError), transaction.atomic():
        insert_rows([first, second])
    assert Message.objects.count() == 0

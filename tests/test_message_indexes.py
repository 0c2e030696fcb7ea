"""The messages table carries only the indexes Message.Meta names (each one costs every stored
message), and the dashboard's counts are read from the partial indexes meant for them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from messaging.models import Message, Status
from messaging.reporting import numbers, queue_stats
from tests import factories


def message_indexes() -> dict[str, list[str]]:
    """{index name: columns} of the plain (not unique, not primary key) indexes of messaging_message."""
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, Message._meta.db_table)
    return {
        name: info["columns"]
        for name, info in constraints.items()
        if info["index"] and not info["unique"] and not info["primary_key"]
    }


def test_the_messages_table_has_exactly_the_indexes_the_model_names(db):
    found = message_indexes()
    assert set(found) == {index.name for index in Message._meta.indexes}
    # The foreign keys have no index of their own: workspace leads msg_ws_accepted, api_key is unread.
    assert ["workspace_id"] not in found.values()
    assert ["api_key_id"] not in found.values()
    assert found["msg_ws_accepted"][0] == "workspace_id"


@pytest.mark.skipif(connection.vendor != "sqlite", reason="reads SQLite's EXPLAIN QUERY PLAN")
def test_waiting_and_delayed_counts_are_read_from_the_waiting_index_alone(db):
    ws = factories.workspace("idx")
    later = timezone.now() + timedelta(hours=2)
    for status in (Status.ACCEPTED, Status.QUEUED, Status.SCHEDULED, Status.SENT, Status.FAILED):
        factories.message(ws, status=status)
    Message.objects.filter(status=Status.SCHEDULED).update(next_attempt_at=later)

    with CaptureQueriesContext(connection) as queries:
        waiting = numbers.waiting_counts()
        delayed = queue_stats.delayed_counts()
    assert waiting == {(ws.pk, "sms"): 3}
    assert delayed == {"sms": 1}
    counts = [q["sql"] for q in queries.captured_queries if "messaging_message" in q["sql"]]
    assert len(counts) == 6
    for sql in counts:
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN QUERY PLAN " + sql)
            plan = " ".join(row[3] for row in cursor.fetchall())
        assert "COVERING INDEX msg_waiting" in plan, (sql, plan)

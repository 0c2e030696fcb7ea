"""services.failed_group_retry: batched, bounded, and never retries a message that is not failed."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from messaging import queues, services
from messaging.models import Message, MessageStatHour, Status
from tests import factories
from tests.conftest import run_jobs


def test_it_retries_the_whole_group_in_batches_of_bounded_size(db):
    ws = factories.workspace("1", "Batch")
    group = [factories.message(ws, status=Status.FAILED, error_kind="http_503") for _ in range(23)]
    with CaptureQueriesContext(connection) as queries:
        assert services.failed_group_retry(channel="sms", error_kind="http_503", batch_size=10) == 23
    selects = [q["sql"] for q in queries if q["sql"].startswith("SELECT") and "messaging_message" in q["sql"]]
    assert len(selects) == 3  # 10 + 10 + 3: the last short batch ends the loop
    assert all("LIMIT 10" in sql for sql in selects)
    assert set(Message.objects.filter(pk__in=[m.pk for m in group]).values_list("status", flat=True)) == {
        "queued"
    }
    assert all(m.max_attempts >= 4 for m in Message.objects.filter(pk__in=[m.pk for m in group]))
    assert MessageStatHour.objects.filter(dirty=True).exists()


def test_it_leaves_other_groups_workspaces_and_statuses_alone(db):
    a, b = factories.workspace("2", "A"), factories.workspace("3", "B")
    target = factories.message(a, status=Status.FAILED, error_kind="http_503")
    other_kind = factories.message(a, status=Status.FAILED, error_kind="http_400")
    other_channel = factories.message(a, channel="email", status=Status.FAILED, error_kind="http_503")
    other_workspace = factories.message(b, status=Status.FAILED, error_kind="http_503")
    sent = factories.message(a, status=Status.SENT, error_kind="http_503")
    cancelled = factories.message(a, status=Status.CANCELLED, error_kind="http_503")
    assert services.failed_group_retry(channel="sms", error_kind="http_503", workspace_id=a.pk) == 1
    statuses = dict(Message.objects.values_list("pk", "status"))
    assert statuses[target.pk] == "queued"
    for untouched, status in (
        (other_kind, "failed"),
        (other_channel, "failed"),
        (other_workspace, "failed"),
        (sent, "sent"),
        (cancelled, "cancelled"),
    ):
        assert statuses[untouched.pk] == status


def test_a_message_that_stops_being_failed_after_the_batch_was_read_is_not_retried(db, monkeypatch):
    ws = factories.workspace("4", "Race")
    messages = [factories.message(ws, status=Status.FAILED, error_kind="http_500") for _ in range(3)]
    real_new_job_id = queues.new_job_id
    calls = []

    def new_job_id_while_someone_else_retries():
        # Runs after the batch was read: meanwhile another operator retried message 2 and it was sent.
        if not calls:
            Message.objects.filter(pk=messages[2].pk).update(status=Status.SENT)
        calls.append(1)
        return real_new_job_id()

    monkeypatch.setattr(queues, "new_job_id", new_job_id_while_someone_else_retries)
    assert services.failed_group_retry(channel="sms", error_kind="http_500") == 2
    assert Message.objects.get(pk=messages[2].pk).status == Status.SENT
    assert len(calls) == 3


@pytest.mark.django_db(transaction=True)
def test_retried_messages_are_delivered_by_a_worker(sms_provider):
    sms_provider.expect_request("/send-sms").respond_with_json({"id": "ok"})
    ws = factories.workspace("5", "Deliver")
    for _ in range(4):
        factories.message(ws, status=Status.FAILED, error_kind="http_503")
    assert services.failed_group_retry(channel="sms", error_kind="http_503", batch_size=3) == 4
    run_jobs()
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}
    assert len(sms_provider.log) == 4

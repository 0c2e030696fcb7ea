"""services.failed_group_retry: batched, bounded, and never retries a message that is not failed."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
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


# --- After an operator's retry the backoff starts again from its first step -----------------------


def _failed_after_every_attempt(ws):
    """A message that used all DELIVERY_MAX_ATTEMPTS (3) attempts and failed on a 503."""
    return factories.message(ws, status=Status.FAILED, error_kind="http_503", attempts=3, max_attempts=3)


def _retry_once_more(message_id) -> Message:
    """Run the retried message's job until its next attempt failed and it waits for the backoff."""
    run_jobs(until=lambda: Message.objects.get(pk=message_id).attempts == 4)
    return Message.objects.get(pk=message_id)


@pytest.mark.parametrize("how", ["message page", "failures page"])
@pytest.mark.django_db(transaction=True)
def test_after_an_operators_retry_the_backoff_starts_again_from_its_first_step(sms_provider, settings, how):
    # Steps 1 s, 10 s, 100 s, 1,000 s (capped at 300 s): continuing the old count would wait 300 s.
    settings.RETRY_BACKOFF_BASE, settings.RETRY_BACKOFF_FACTOR = 1.0, 10.0
    sms_provider.expect_request("/send-sms").respond_with_data("down", status=503)
    message = _failed_after_every_attempt(factories.workspace("6", "Backoff"))
    staff = Client()
    staff.force_login(factories.user("staff-user"))
    if how == "message page":
        response = staff.post(f"/messages/{message.pk}/retry")
    else:
        response = staff.post("/failures/retry", {"channel": "sms", "error_kind": "http_503"})
    assert response.status_code == 302

    message = _retry_once_more(message.pk)

    assert (message.status, message.attempts, message.max_attempts) == ("queued", 4, 6)
    attempt = message.delivery_attempts.get(number=4)
    waits = (message.next_attempt_at - attempt.started_at).total_seconds()
    assert 1.0 <= waits < 2.0, f"the retried message waits {waits:.1f}s after its first new attempt"


@pytest.mark.django_db(transaction=True)
def test_the_second_attempt_after_a_retry_takes_the_second_step(sms_provider, settings):
    settings.RETRY_BACKOFF_BASE, settings.RETRY_BACKOFF_FACTOR = 0.2, 10.0
    sms_provider.expect_request("/send-sms").respond_with_data("down", status=503)
    message = _failed_after_every_attempt(factories.workspace("7", "Backoff 2"))
    services.message_retry(message=message)
    run_jobs(until=lambda: Message.objects.get(pk=message.pk).attempts == 5)
    message = Message.objects.get(pk=message.pk)
    attempt = message.delivery_attempts.get(number=5)
    waits = (message.next_attempt_at - attempt.started_at).total_seconds()
    assert 2.0 <= waits < 3.0, f"{waits:.1f}s after attempt 5, the second of its round"

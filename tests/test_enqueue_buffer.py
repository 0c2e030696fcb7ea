"""The enqueue buffer (ENQUEUE_BATCH_MS): messages stored without the group committer (GROUP_COMMIT off,
or inside a caller's transaction) reach Redis in batches. The committer enqueues its groups itself
(tests/test_group_commit.py)."""

from __future__ import annotations

import time

import pytest
import redis

from messaging import queues
from messaging.delivery import outbox
from messaging.models import Message
from tests.conftest import run_jobs

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = {"phoneNumber": "+14155550123", "message": "Hello", "contactId": "c-1", "workspaceId": "66338"}


@pytest.fixture(autouse=True)
def without_group_commit(settings):
    settings.GROUP_COMMIT = False


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_messages_accepted_one_by_one_are_enqueued_together_and_delivered(api, sms_provider, settings):
    settings.ENQUEUE_BATCH_MS = 50
    sms_provider.expect_request("/send-sms").respond_with_json({"id": "p"})
    ids = []
    for n in range(20):
        response = api.post("/api/schedule-sms", {**GOOD, "contactId": f"c-{n}"})
        assert response.status_code == 202, response.content
        assert response.json()["status"] == "queued"
        ids.append(response.json()["id"])
    queue = queues.get_queue("sms")
    assert wait_until(lambda: queue.count == 20), f"{queue.count} of 20 jobs on the queue"
    assert {job.args[0] for job in queue.jobs} == set(ids)
    # Each job has the id the message points at, so the worker's job check lets it through.
    assert {job.id for job in queue.jobs} == set(Message.objects.values_list("rq_job_id", flat=True))
    run_jobs()
    assert Message.objects.filter(status="sent").count() == 20
    assert len(sms_provider.log) == 20


@pytest.fixture
def held_buffer(settings, monkeypatch):
    """A buffer of this test's own whose thread does not flush within the test: flushes are manual."""
    settings.ENQUEUE_BATCH_MS = 60_000
    buffer = outbox.EnqueueBuffer()
    monkeypatch.setattr(outbox, "buffer", buffer)
    return buffer


def test_when_redis_is_down_at_flush_time_the_messages_are_left_for_the_sweep(api, settings, held_buffer):
    response = api.post("/api/schedule-sms", GOOD)
    assert response.status_code == 202
    message_id = response.json()["id"]
    assert Message.objects.get(pk=message_id).status == "queued"
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    queues.reset_connection()
    assert held_buffer.flush() == 0
    assert Message.objects.get(pk=message_id).status == "accepted"  # the sweep enqueues it later


def test_a_flush_with_nothing_gathered_does_nothing(redis_clean):
    assert outbox.buffer.flush() == 0
    assert not redis_clean.keys("rq:job:*")


def test_without_batching_the_request_enqueues_before_it_answers(api, settings):
    settings.ENQUEUE_BATCH_MS = 0
    response = api.post("/api/schedule-sms", GOOD)
    assert response.status_code == 202
    assert queues.get_queue("sms").count == 1


def test_a_held_message_is_enqueued_by_an_explicit_flush(api, held_buffer):
    response = api.post("/api/schedule-sms", GOOD)
    assert queues.get_queue("sms").count == 0
    assert held_buffer.flush() == 1
    assert queues.get_queue("sms").job_ids == [Message.objects.get(pk=response.json()["id"]).rq_job_id]


def test_redis_errors_from_the_pipeline_are_not_raised_to_the_caller(api, held_buffer, monkeypatch):
    api.post("/api/schedule-sms", GOOD)

    def broken(*args, **kwargs):
        raise redis.exceptions.ConnectionError("boom")

    monkeypatch.setattr(queues, "get_connection", broken)
    assert held_buffer.flush() == 0
    assert Message.objects.get().status == "accepted"


def test_once_redis_is_known_to_be_down_answers_say_accepted(api, settings):
    settings.ENQUEUE_BATCH_MS = 20
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    queues.reset_connection()
    first = api.post("/api/schedule-sms", GOOD).json()
    assert wait_until(lambda: Message.objects.get(pk=first["id"]).status == "accepted")  # its flush failed
    second = api.post("/api/schedule-sms", GOOD).json()
    assert second["status"] == "accepted"
    assert Message.objects.get(pk=second["id"]).status == "accepted"

"""Idempotency-Key on POST endpoints: a retry returns the first answer and creates nothing."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import timedelta

import pytest
from django.test import RequestFactory
from django.utils import timezone

from messaging import queues
from messaging.idempotency import request_fingerprint
from messaging.models import ApiKey, IdempotencyRecord, Message
from messaging.retention import idempotency_records_prune
from messaging.workspaces import api_key_create
from tests.conftest import ApiClient

GOOD = {"phoneNumber": "+14155550123", "message": "Hello", "contactId": "c-1", "workspaceId": "66338"}


def test_the_same_post_with_the_same_key_twice_creates_one_message(api):
    first = api.post("/api/schedule-sms", GOOD, headers={"Idempotency-Key": "order-1"})
    second = api.post("/api/schedule-sms", GOOD, headers={"Idempotency-Key": "order-1"})
    assert first.status_code == second.status_code == 202
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true"
    assert not first.has_header("Idempotent-Replayed")
    assert Message.objects.count() == 1


def test_the_same_key_with_a_different_body_is_a_422(api):
    api.post("/api/schedule-sms", GOOD, headers={"Idempotency-Key": "order-2"})
    response = api.post(
        "/api/schedule-sms", {**GOOD, "message": "Other"}, headers={"Idempotency-Key": "order-2"}
    )
    assert response.status_code == 422
    assert response.json()["success"] is False
    assert "different request" in response.json()["message"]
    assert Message.objects.count() == 1


def test_the_same_json_with_other_key_order_and_spacing_counts_as_the_same_body(api):
    first = api.post("/api/schedule-sms", GOOD, headers={"Idempotency-Key": "k"})
    raw = (
        b'{ "workspaceId": "66338",  "contactId": "c-1", "message": "Hello", "phoneNumber": "+14155550123" }'
    )
    second = api.post("/api/schedule-sms", raw=raw, headers={"Idempotency-Key": "k"})
    assert second.status_code == 202
    assert second.json()["id"] == first.json()["id"]
    assert Message.objects.count() == 1


def test_posts_without_a_key_are_not_deduplicated(api):
    api.post("/api/schedule-sms", GOOD)
    api.post("/api/schedule-sms", GOOD)
    assert Message.objects.count() == 2


def test_keys_are_scoped_to_the_api_key(api, db):
    other = ApiClient(api_key_create(name="other", all_workspaces=True)[1])
    first = api.post("/api/schedule-sms", GOOD, headers={"Idempotency-Key": "shared"})
    second = other.post("/api/schedule-sms", GOOD, headers={"Idempotency-Key": "shared"})
    assert first.json()["id"] != second.json()["id"]
    assert Message.objects.count() == 2


def test_the_same_key_on_another_endpoint_is_a_422(api):
    message_id = api.post(
        "/api/schedule-sms", {**GOOD, "delay": 60_000}, headers={"Idempotency-Key": "x"}
    ).json()["id"]
    response = api.post(
        f"/api/messages/{message_id}/cancel", {**GOOD, "delay": 60_000}, headers={"Idempotency-Key": "x"}
    )
    assert response.status_code == 422
    assert Message.objects.get(pk=message_id).status == "scheduled"


def test_a_cancel_repeated_with_its_key_replays_the_first_answer(api):
    message_id = api.post("/api/schedule-sms", {**GOOD, "delay": 60_000}).json()["id"]
    first = api.post(f"/api/messages/{message_id}/cancel", {}, headers={"Idempotency-Key": "cancel-1"})
    second = api.post(f"/api/messages/{message_id}/cancel", {}, headers={"Idempotency-Key": "cancel-1"})
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true"


def test_a_rejected_request_does_not_use_up_its_key(api):
    bad = api.post(
        "/api/schedule-sms", {**GOOD, "phoneNumber": "nope"}, headers={"Idempotency-Key": "fix-me"}
    )
    assert bad.status_code == 400
    fixed = api.post("/api/schedule-sms", GOOD, headers={"Idempotency-Key": "fix-me"})
    assert fixed.status_code == 202
    assert Message.objects.count() == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "naïve"])
def test_a_malformed_key_is_a_400_naming_the_header(api, key):
    response = api.post("/api/schedule-sms", GOOD, headers={"Idempotency-Key": key})
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["errors"]
    assert Message.objects.count() == 0


@pytest.fixture
def silent_redis(settings):
    """A TCP port that accepts connections and never answers: every Redis call waits for its timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    settings.REDIS_URL = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    settings.REDIS_SOCKET_TIMEOUT = 1.0
    queues.reset_connection()
    yield
    listener.close()
    queues.reset_connection()


def test_a_repeat_while_the_first_request_is_still_handled_is_a_409(api):
    # The first request's process has claimed the key and not answered yet: exactly what it leaves in
    # the database while its view runs (an in-progress record with the request's fingerprint).
    request = RequestFactory().post(
        "/api/schedule-sms", data=json.dumps(GOOD), content_type="application/json"
    )
    IdempotencyRecord.objects.create(
        api_key=ApiKey.objects.get(), key="busy", request_hash=request_fingerprint(request)
    )
    response = api.post("/api/schedule-sms", GOOD, headers={"Idempotency-Key": "busy"})
    assert response.status_code == 409
    assert response["Retry-After"] == "1"
    assert "being handled" in response.json()["message"]
    assert Message.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_create_one_message(api):
    barrier = threading.Barrier(6)
    answers = []

    def post():
        client = ApiClient(api.key)
        barrier.wait()
        answers.append(client.post("/api/schedule-sms", GOOD, headers={"Idempotency-Key": "race"}))

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert Message.objects.count() == 1
    assert {r.status_code for r in answers} <= {202, 409}
    assert {r.json()["id"] for r in answers if r.status_code == 202} == {str(Message.objects.get().pk)}


@pytest.mark.django_db(transaction=True)
def test_with_a_hung_redis_only_the_first_request_waits_for_the_timeout(api, silent_redis):
    timings = []
    for i in range(5):
        started = time.monotonic()
        response = api.post(
            "/api/schedule-sms", {**GOOD, "contactId": f"c-{i}"}, headers={"Idempotency-Key": f"h-{i}"}
        )
        timings.append(time.monotonic() - started)
        assert response.status_code == 202
        assert response.json()["status"] == "accepted"
    assert timings[0] < 2.5  # one socket timeout (1 s), then Redis is skipped
    assert sum(timings[1:]) < 1.0, timings
    assert set(Message.objects.values_list("status", flat=True)) == {"accepted"}


def test_a_key_left_in_progress_by_a_dead_process_is_taken_over_after_the_lock_time(api, settings):
    # What a process killed between claiming the key and finishing would leave behind.
    client = ApiClient(api.key)
    response = client.post("/api/schedule-sms", GOOD, headers={"Idempotency-Key": "orphan"})
    record = IdempotencyRecord.objects.get(key="orphan")
    Message.objects.all().delete()
    IdempotencyRecord.objects.filter(pk=record.pk).update(response_status=None, response_body=None)
    assert response.status_code == 202
    assert client.post("/api/schedule-sms", GOOD, headers={"Idempotency-Key": "orphan"}).status_code == 409
    old = timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_LOCK_SECONDS + 1)
    IdempotencyRecord.objects.filter(pk=record.pk).update(created_at=old)
    retried = client.post("/api/schedule-sms", GOOD, headers={"Idempotency-Key": "orphan"})
    assert retried.status_code == 202
    assert Message.objects.count() == 1
    assert IdempotencyRecord.objects.get(pk=record.pk).response_status == 202


def test_keys_are_kept_24_hours_then_pruned(api):
    api.post("/api/schedule-sms", GOOD, headers={"Idempotency-Key": "young"})
    api.post("/api/schedule-sms", GOOD, headers={"Idempotency-Key": "old"})
    IdempotencyRecord.objects.filter(key="old").update(
        created_at=timezone.now() - timedelta(hours=24, minutes=1)
    )
    IdempotencyRecord.objects.filter(key="young").update(
        created_at=timezone.now() - timedelta(hours=23, minutes=59)
    )
    assert idempotency_records_prune() == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["young"]
    replay = api.post("/api/schedule-sms", GOOD, headers={"Idempotency-Key": "young"})
    assert replay["Idempotent-Replayed"] == "true"

"""SMS delivery through real Redis, rq-scheduler and a burst worker, to a real local HTTP provider."""

from __future__ import annotations

import json
import threading
import time

import pytest
from django.utils import timezone
from werkzeug import Response

from messaging import queues
from messaging.models import DeliveryAttempt, Message
from tests.conftest import run_jobs

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = {"phoneNumber": "+14155550123", "message": "Hello", "contactId": "c-1", "workspaceId": "66338"}


def sent_bodies(httpserver) -> list[dict]:
    return [json.loads(request.data) for request, _ in httpserver.log]


def test_it_delivers_an_sms_immediately(api, sms_provider):
    sms_provider.expect_request("/send-sms", method="POST").respond_with_json({"id": "prov-1"})
    message_id = api.post("/api/schedule-sms", GOOD).json()["id"]
    run_jobs()
    message = Message.objects.get(pk=message_id)
    assert message.status == "sent"
    assert message.attempts == 1
    assert message.provider_message_id == "prov-1"
    assert message.sent_at is not None
    request, _ = sms_provider.log[0]
    assert request.headers["Idempotency-Key"] == message_id
    assert json.loads(request.data) == {
        "to": "+14155550123",
        "message": "Hello",
        "contactId": "c-1",
        "workspaceId": "66338",
    }
    attempt = DeliveryAttempt.objects.get(message=message)
    assert (attempt.number, attempt.http_status, attempt.outcome) == (1, 200, "success")


def test_metadata_is_spread_but_never_overrides_core_fields(api, sms_provider):
    sms_provider.expect_request("/send-sms").respond_with_json({"ok": True})
    body = {
        "phoneNumber": "+14155550123",
        "message": "Hello",
        "contactId": "c-1",
        "workspaceId": 66338,
        "delay": 0,
        # ("to" is refused: see tests/test_provider_metadata.py)
        "metadata": {"source": "broadcast2", "message": "evil", "workspaceId": "1"},
    }
    response = api.post("/api/schedule-sms", body)
    assert response.status_code == 202
    run_jobs()
    [sent] = sent_bodies(sms_provider)
    assert sent["to"] == "+14155550123"
    assert sent["workspaceId"] == "66338"
    assert sent["message"] == "Hello"
    assert sent["source"] == "broadcast2"


def test_an_mms_carries_its_media_url(api, sms_provider, fixtures_file):
    sms_provider.expect_request("/send-sms").respond_with_json({"ok": True})
    api.post("/api/schedule-sms", fixtures_file["sms_mms"]["body"])
    run_jobs()
    [sent] = sent_bodies(sms_provider)
    assert sent["mediaUrl"] == "https://media.example.com/pic.jpg"
    assert sent["workspaceId"] == "66338"


def test_a_scheduled_sms_goes_out_through_rq_scheduler_never_early(api, sms_provider):
    received_at = []

    def handler(request):
        received_at.append(timezone.now())
        return Response(json.dumps({"id": "x"}), status=200, content_type="application/json")

    sms_provider.expect_request("/send-sms").respond_with_handler(handler)
    response = api.post("/api/schedule-sms", {**GOOD, "delay": 1500}).json()
    assert response["status"] == "scheduled"
    assert queues.get_connection().zcard("rq:scheduler:scheduled_jobs") == 1
    message = Message.objects.get(pk=response["id"])
    run_jobs(until=lambda: Message.objects.get(pk=message.pk).status == "sent")
    assert len(received_at) == 1
    assert received_at[0] >= message.scheduled_for
    assert (received_at[0] - message.scheduled_for).total_seconds() < 2


def test_an_early_job_defers_instead_of_sending(api, sms_provider):
    sms_provider.expect_request("/send-sms").respond_with_json({"ok": True})
    message_id = api.post("/api/schedule-sms", {**GOOD, "delay": 5000}).json()["id"]
    # A job that reaches a worker long before the time (e.g. a stray duplicate) must not send.
    queues.get_queue("sms").enqueue(queues.DELIVER_JOB, message_id)
    run_jobs(until=lambda: True)
    assert sms_provider.log == []
    message = Message.objects.get(pk=message_id)
    assert message.status == "scheduled"
    assert message.attempts == 0


def test_it_retries_on_503_then_sends_once(api, sms_provider):
    sms_provider.expect_oneshot_request("/send-sms").respond_with_json({"error": "busy"}, status=503)
    sms_provider.expect_request("/send-sms").respond_with_json({"id": "ok"})
    message_id = api.post("/api/schedule-sms", GOOD).json()["id"]
    run_jobs(until=lambda: Message.objects.get(pk=message_id).status == "sent")
    message = Message.objects.get(pk=message_id)
    assert message.attempts == 2
    outcomes = list(DeliveryAttempt.objects.filter(message=message).values_list("http_status", "outcome"))
    assert outcomes == [(503, "transient"), (200, "success")]
    assert [r.status_code for _, r in sms_provider.log] == [503, 200]
    # Both calls carried the same idempotency key, so the provider can drop a duplicate.
    assert {r.headers["Idempotency-Key"] for r, _ in sms_provider.log} == {message_id}


def test_it_honours_retry_after_on_429(api, sms_provider):
    sms_provider.expect_oneshot_request("/send-sms").respond_with_response(
        Response("slow down", status=429, headers={"Retry-After": "2"})
    )
    sms_provider.expect_request("/send-sms").respond_with_json({"id": "ok"})
    message_id = api.post("/api/schedule-sms", GOOD).json()["id"]
    run_jobs(until=lambda: Message.objects.get(pk=message_id).status == "sent")
    first, second = DeliveryAttempt.objects.filter(message_id=message_id).order_by("number")
    assert (second.started_at - first.started_at).total_seconds() >= 2


def test_a_400_fails_at_once_with_the_providers_reason(api, sms_provider):
    sms_provider.expect_request("/send-sms").respond_with_json({"error": "Invalid 'To' number"}, status=400)
    message_id = api.post("/api/schedule-sms", GOOD).json()["id"]
    run_jobs()
    message = Message.objects.get(pk=message_id)
    assert message.status == "failed"
    assert message.attempts == 1
    assert message.last_error == "HTTP 400: Invalid 'To' number"
    assert message.error_kind == "http_400"
    assert len(sms_provider.log) == 1


def test_it_fails_after_the_last_attempt(api, sms_provider, settings):
    settings.RETRY_BACKOFF_BASE = 0.1
    sms_provider.expect_request("/send-sms").respond_with_data("down", status=500)
    message_id = api.post("/api/schedule-sms", GOOD).json()["id"]
    run_jobs(until=lambda: Message.objects.get(pk=message_id).status == "failed")
    message = Message.objects.get(pk=message_id)
    assert message.attempts == 3
    assert len(sms_provider.log) == 3
    assert DeliveryAttempt.objects.filter(message=message, outcome="transient").count() == 3


def test_a_timeout_is_a_transient_attempt(api, sms_provider, settings):
    settings.PROVIDER_READ_TIMEOUT = 0.3
    settings.DELIVERY_MAX_ATTEMPTS = 1

    finished = threading.Event()

    def slow(request):
        time.sleep(1)
        finished.set()
        return Response("late", status=200)

    sms_provider.expect_request("/send-sms").respond_with_handler(slow)
    message_id = api.post("/api/schedule-sms", GOOD).json()["id"]
    run_jobs()
    attempt = DeliveryAttempt.objects.get(message_id=message_id)
    assert attempt.outcome == "transient"
    assert attempt.error_kind == "ReadTimeout"
    assert attempt.duration_ms < 1000
    assert Message.objects.get(pk=message_id).status == "failed"
    # Let the slow handler finish so its late log entry does not land in the next test's server log.
    assert finished.wait(5)


def test_a_duplicate_job_sends_nothing(api, sms_provider):
    sms_provider.expect_request("/send-sms").respond_with_json({"id": "ok"})
    message_id = api.post("/api/schedule-sms", GOOD).json()["id"]
    queues.get_queue("sms").enqueue(queues.DELIVER_JOB, message_id)
    assert queues.get_queue("sms").count == 2
    run_jobs()
    assert len(sms_provider.log) == 1
    assert Message.objects.get(pk=message_id).attempts == 1


def test_a_cancelled_message_is_never_sent(api, sms_provider):
    sms_provider.expect_request("/send-sms").respond_with_json({"id": "ok"})
    message_id = api.post("/api/schedule-sms", {**GOOD, "delay": 1000}).json()["id"]
    assert api.post(f"/api/messages/{message_id}/cancel", {}).status_code == 200
    # Even if the job is still in Redis (e.g. cancel could not remove it), the claim refuses it.
    queues.get_queue("sms").enqueue(queues.DELIVER_JOB, message_id)
    time.sleep(1.2)
    run_jobs()
    assert sms_provider.log == []
    assert Message.objects.get(pk=message_id).status == "cancelled"


def test_cancel_after_sending_is_a_409(api, sms_provider):
    sms_provider.expect_request("/send-sms").respond_with_json({"id": "ok"})
    message_id = api.post("/api/schedule-sms", GOOD).json()["id"]
    run_jobs()
    response = api.post(f"/api/messages/{message_id}/cancel", {})
    assert response.status_code == 409
    assert "sent" in response.json()["message"]


def test_the_sandbox_fails_once_for_its_503_test_number(api, live_server, settings):
    settings.SMS_API_URL = f"{live_server.url}/sandbox"
    message_id = api.post("/api/schedule-sms", {**GOOD, "phoneNumber": "+15005550503"}).json()["id"]
    run_jobs(until=lambda: Message.objects.get(pk=message_id).status in ("sent", "failed"))
    message = Message.objects.get(pk=message_id)
    assert message.status == "sent"
    assert list(message.delivery_attempts.values_list("http_status", flat=True)) == [503, 200]
    from messaging.models import SandboxReceipt

    receipts = SandboxReceipt.objects.filter(endpoint="sms").order_by("id")
    assert [r.response_status for r in receipts] == [503, 200]
    assert receipts[1].payload["to"] == "+15005550503"

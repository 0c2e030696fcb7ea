"""The real thing: gunicorn, `rqworker sms email ai` and `rqscheduler` as subprocesses, driven over HTTP."""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest
import requests
from werkzeug import Response

from tests.processes import running_services

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]


def poll_status(base_url: str, key: str, message_id: str, want: str, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = requests.get(
            f"{base_url}/api/messages/{message_id}", headers={"Authorization": f"Bearer {key}"}, timeout=5
        ).json()
        if body.get("status") == want:
            return body
        time.sleep(0.1)
    raise AssertionError(f"message never became {want}: {body}")


def test_web_worker_and_scheduler_deliver_now_and_later(api_key, httpserver, tmp_path):
    received: list[tuple[datetime, dict]] = []

    def provider(request):
        from django.utils import timezone

        received.append((timezone.now(), json.loads(request.data)))
        return Response(json.dumps({"id": f"p-{len(received)}"}), status=200, content_type="application/json")

    httpserver.expect_request("/send-sms", method="POST").respond_with_handler(provider)
    with running_services(tmp_path, SMS_API_URL=httpserver.url_for("").rstrip("/")) as services:
        headers = {"Authorization": f"Bearer {api_key}"}
        body = {
            "phoneNumber": "+1 415 555 0123",
            "message": "Hello",
            "contactId": "c-1",
            "workspaceId": 66338,
        }
        now = requests.post(f"{services.base_url}/api/schedule-sms", json=body, headers=headers, timeout=5)
        assert now.status_code == 202, now.text
        later = requests.post(
            f"{services.base_url}/api/schedule-sms", json={**body, "delay": 3000}, headers=headers, timeout=5
        )
        assert later.json()["status"] == "scheduled"

        sent_now = poll_status(services.base_url, api_key, now.json()["id"], "sent")
        assert sent_now["attempts"] == 1
        assert len(sent_now["deliveryAttempts"]) == 1
        sent_later = poll_status(services.base_url, api_key, later.json()["id"], "sent")
        assert sent_later["attempts"] == 1

        queues = requests.get(f"{services.base_url}/api/queues", headers=headers, timeout=5).json()["queues"]
        assert queues["sms"]["completed"] >= 2

    assert [payload["to"] for _, payload in received] == ["+14155550123", "+14155550123"]
    assert all(payload["workspaceId"] == "66338" for _, payload in received)
    scheduled_for = datetime.fromisoformat(later.json()["scheduledFor"])
    later_received_at = received[1][0]
    assert later_received_at >= scheduled_for, "handed to the provider before its scheduled time"
    assert (later_received_at - scheduled_for).total_seconds() < 2.5
    assert "Listening on sms, email, ai" in services.output("worker")

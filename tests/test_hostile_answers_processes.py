"""Slow and malformed answers against a real `rqworker` process: a callback receiver that answers a
byte at a time is cut off at CALLBACK_DEADLINE_SECONDS while another workspace's SMS go out, and
provider answers the worker cannot read (a Retry-After in non-ASCII digits, bodies that do not parse
or cannot be stored) are recorded attempts, never a message left `sending`."""

from __future__ import annotations

import json
import time

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from messaging.models import DeliveryAttempt, Message
from tests.drip import OK_HEAD, DripServer
from tests.process_control import wait_for
from tests.process_fixtures import all_final, post, statuses

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]

AI = {
    "workspace_id": "66338",
    "contact_id": "c-1",
    "message_id": "m-1",
    "message_text": "Opening hours?",
    "rate_limit_key": "66338:c-1",
}


@pytest.fixture
def dripping_receiver(settings):
    # Every call gets a 200 head at once, then its body a byte every 0.25 s (25 s in all): each gap
    # is far below CALLBACK_READ_TIMEOUT, so only a deadline on the whole call ends it.
    receiver = DripServer([[(OK_HEAD, 0), (b"x" * 100, 0.25)]])
    settings.CALLBACK_ALLOWED_HOSTS = [f"127.0.0.1:{receiver.port}"]
    yield receiver
    receiver.close()


def test_a_dripping_callback_is_cut_off_at_its_deadline_while_another_workspaces_sms_go_out(
    api, processes, provider, dripping_receiver
):
    netloc = f"127.0.0.1:{dripping_receiver.port}"
    worker = processes.worker(
        CALLBACK_ALLOWED_HOSTS=netloc, CALLBACK_DEADLINE_SECONDS="2", WORKER_CONCURRENCY="4"
    )
    response = api.post("/api/ai-response", {**AI, "callback_url": f"http://{netloc}/cb"})
    assert response.status_code == 202, response.content
    ai_id = response.json()["id"]
    wait_for(lambda: dripping_receiver.requests >= 1, 15, what="the callback to reach the receiver")
    called = time.monotonic()

    sms_ids = post(api, 10, workspaceId="70001")
    wait_for(lambda: all_final(sms_ids), 10, what="workspace 70001's SMS")
    sms_done = time.monotonic() - called
    wait_for(
        lambda: DeliveryAttempt.objects.filter(message_id=ai_id, kind="callback").exists(),
        10,
        what="the callback attempt to be recorded",
    )
    recorded = time.monotonic() - called

    assert set(statuses(sms_ids).values()) == {"sent"}
    assert sms_done < 2.0, f"workspace 70001's SMS took {sms_done:.1f}s, behind the dripping callback"
    attempt = DeliveryAttempt.objects.get(message_id=ai_id, kind="callback")
    assert (attempt.outcome, attempt.error_kind, attempt.http_status) == (
        "transient",
        "deadline_exceeded",
        None,
    )
    assert "No complete answer within 2 s (CALLBACK_DEADLINE_SECONDS" in attempt.error
    assert 1900 <= attempt.duration_ms < 3500, attempt.duration_ms
    assert recorded < 4.0
    message = Message.objects.get(pk=ai_id)
    assert (message.status, message.attempts, message.error_kind) == ("queued", 1, "deadline_exceeded")
    assert message.response_text  # the reply is kept: the retry only calls back again
    assert "Traceback" not in worker.output()


@pytest.fixture
def hostile_provider():
    """SMS API whose answer depends on the request's contactId (`how[contactId]`): (status, body,
    headers) for the message's first call, 200 afterwards. `how.url`: SMS_API_URL for the worker."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)

    class How(dict):
        url = ""

    how = How()
    seen: dict[str, int] = {}

    def handler(request):
        contact = json.loads(request.data)["contactId"]
        key = request.headers.get("Idempotency-Key", "")
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 1 and contact in how:
            status, body, headers = how[contact]
            return Response(body, status=status, headers=headers)
        return Response(json.dumps({"id": f"p-{contact}"}), status=200, content_type="application/json")

    server.expect_request("/send-sms", method="POST").respond_with_handler(handler)
    server.start()
    how.url = server.url_for("").rstrip("/")
    yield how
    server.clear()
    server.stop()


def test_a_retry_after_in_non_ascii_digits_is_a_recorded_attempt_and_the_message_is_retried(
    api, processes, hostile_provider
):
    # "²" is a digit to str.isdigit() but not to float(); Latin-1 is how HTTP header bytes are read.
    hostile_provider["c-0"] = (503, b'{"error": "busy"}', {"Retry-After": "\u00b2"})
    hostile_provider["c-1"] = (429, b"", {"Retry-After": "9" * 5000})
    worker = processes.worker(SMS_API_URL=hostile_provider.url, RETRY_BACKOFF_MAX="2")
    processes.scheduler()

    ids = post(api, 2)
    wait_for(lambda: all_final(ids), 30, what="both messages")

    for message_id, status in zip(ids, (503, 429), strict=True):
        message = Message.objects.get(pk=message_id)
        assert (message.status, message.attempts) == ("sent", 2)
        first, second = message.delivery_attempts.order_by("number")
        assert (first.outcome, first.error_kind, first.http_status) == ("transient", f"http_{status}", status)
        assert second.outcome == "success"
    assert Message.objects.get(pk=ids[0]).delivery_attempts.get(number=1).error == "HTTP 503: busy"
    # The huge Retry-After was capped at RETRY_BACKOFF_MAX (2 s); the invalid one left the backoff.
    huge = Message.objects.get(pk=ids[1]).delivery_attempts.order_by("number")
    assert (huge[1].started_at - huge[0].started_at).total_seconds() >= 2
    assert "Traceback" not in worker.output()
    assert DeliveryAttempt.objects.filter(error_kind="internal_error").count() == 0


def test_answers_the_worker_cannot_parse_or_store_are_recorded_and_do_not_stop_other_deliveries(
    api, processes, hostile_provider
):
    hostile_provider["c-0"] = (200, b"[" * 60_000, {"Content-Type": "application/json"})
    hostile_provider["c-1"] = (200, b'{"id": "\\ud800\\u0000x"}', {"Content-Type": "application/json"})
    hostile_provider["c-2"] = (200, b'{"id": "p-2"}', {"Content-Type": "application/json; charset=no-such"})
    hostile_provider["c-3"] = (503, b"not gzip at all", {"Content-Encoding": "gzip"})
    hostile_provider["c-4"] = (200, b"\x00\xff\xfe binary", {"Content-Type": "text/plain; charset=zlib"})
    worker = processes.worker(SMS_API_URL=hostile_provider.url)

    ids = post(api, 6)  # c-5 gets an ordinary answer
    wait_for(
        lambda: (
            not Message.objects.filter(pk__in=ids, status="sending").exists()
            and DeliveryAttempt.objects.filter(message_id__in=ids).count() == 6
        ),
        15,
        what="an attempt recorded for every message",
    )

    found = {m.contact_id: m for m in Message.objects.filter(pk__in=ids)}
    assert (found["c-0"].status, found["c-0"].provider_message_id) == ("sent", "")
    assert (found["c-1"].status, found["c-1"].provider_message_id) == ("sent", "\ufffd\ufffdx")
    assert (found["c-2"].status, found["c-2"].provider_message_id) == ("sent", "p-2")
    attempt = found["c-3"].delivery_attempts.get()
    assert (found["c-3"].status, attempt.outcome, attempt.error_kind) == (
        "queued",
        "transient",
        "DecodeError",
    )
    assert found["c-4"].status == "sent" and "\x00" not in found["c-4"].provider_response
    assert (found["c-5"].status, found["c-5"].provider_message_id) == ("sent", "p-c-5")
    assert "Traceback" not in worker.output()

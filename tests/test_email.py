"""POST /api/schedule-email and delivery to the Email API (a real local HTTP server, and the sandbox)."""

from __future__ import annotations

import time

import pytest
from django.utils import timezone
from werkzeug import Response

from messaging.models import DeliveryAttempt, Message, SandboxReceipt
from tests.conftest import run_jobs

GOOD = {
    "to": "recipient@example.com",
    "subject": "Hello",
    "html": "<p>Email content</p>",
    "contactId": "c-1",
    "workspaceId": "66338",
}


# --- API ------------------------------------------------------------------------------------------


def test_it_accepts_an_email_and_answers_202(api):
    response = api.post("/api/schedule-email", GOOD)
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == "queued"
    assert body["message"] == "Email queued for immediate delivery"
    message = Message.objects.get(pk=body["id"])
    assert (message.channel, message.recipient, message.subject, message.body) == (
        "email",
        "recipient@example.com",
        "Hello",
        "<p>Email content</p>",
    )


def test_an_internationalised_domain_is_idna_encoded(api):
    response = api.post("/api/schedule-email", {**GOOD, "to": "kunde@bücher.de"})
    assert response.status_code == 202, response.json()
    assert Message.objects.get(pk=response.json()["id"]).recipient == "kunde@xn--bcher-kva.de"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"to": None}, "to"),
        ({"to": "not-an-address"}, "to"),
        ({"to": "someone@localhost"}, "to"),
        ({"to": "a b@example.com"}, "to"),
        ({"to": "x@[127.0.0.1]"}, "to"),
        ({"to": "ünïcode@bücher.de"}, "to"),  # needs SMTPUTF8, which email APIs commonly refuse
        ({"to": ["a@example.com"]}, "to"),
        ({"subject": "Hello\r\nBcc: everyone@example.com"}, "subject"),
        ({"subject": "Hello\nthere"}, "subject"),
        ({"subject": "Carriage\rreturn"}, "subject"),
        ({"subject": ""}, "subject"),
        ({"subject": "x" * 999}, "subject"),
        ({"html": None}, "html"),
        ({"html": 42}, "html"),
        ({"contactId": ""}, "contactId"),
        ({"workspaceId": False}, "workspaceId"),
        ({"metadata": [1]}, "metadata"),
        ({"delay": -5}, "delay"),
        ({"scheduledFor": "next week"}, "scheduledFor"),
    ],
)
def test_it_rejects_bad_email_input_with_the_field(api, change, field):
    response = api.post("/api/schedule-email", {**GOOD, **change})
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["success"] is False
    assert field in body["errors"], body
    assert Message.objects.count() == 0


def test_every_earlier_service_email_body_is_accepted(api, fixtures_file):
    for name in ("email_immediate", "email_delayed"):
        fixture = fixtures_file[name]
        response = api.post(fixture["path"], fixture["body"])
        assert response.status_code == 202, (name, response.json())
        assert response.json()["status"] == ("scheduled" if fixture["body"].get("delay") else "queued")
    assert Message.objects.filter(channel="email").count() == 2


# --- Delivery to a local Email API ----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_email_api_gets_the_earlier_contract_with_core_fields_winning(api, email_provider):
    email_provider.expect_request("/api/email/send", method="POST").respond_with_json({"id": "em_1"})
    # ("to" is refused: see tests/test_provider_metadata.py)
    metadata = {"source": "broadcast2", "subject": "spoof", "content": "x"}
    message_id = api.post(
        "/api/schedule-email", {**GOOD, "to": "kunde@bücher.de", "metadata": metadata}
    ).json()["id"]

    run_jobs()

    ((request, _),) = email_provider.log
    assert request.headers["X-Workspace-Id"] == "66338"
    assert request.headers["Idempotency-Key"] == message_id
    assert request.json == {
        "to": "kunde@xn--bcher-kva.de",
        "contactId": "c-1",
        "subject": "Hello",
        "content": "<p>Email content</p>",
        "source": "broadcast2",
    }
    message = Message.objects.get(pk=message_id)
    assert message.status == "sent"
    assert message.provider_message_id == "em_1"
    attempt = message.delivery_attempts.get()
    assert (attempt.kind, attempt.http_status, attempt.outcome) == ("provider", 200, "success")


@pytest.mark.django_db(transaction=True)
def test_the_email_path_is_configurable_and_metadata_cannot_change_it(api, email_provider, settings):
    settings.EMAIL_API_PATH = "/v2/mail"
    email_provider.expect_request("/v2/mail", method="POST").respond_with_json({"ok": True})
    body = {**GOOD, "metadata": {"callbackEndpoint": "/somewhere/else"}}
    message_id = api.post("/api/schedule-email", body).json()["id"]

    run_jobs()

    assert [request.path for request, _ in email_provider.log] == ["/v2/mail"]
    assert Message.objects.get(pk=message_id).status == "sent"


@pytest.mark.django_db(transaction=True)
def test_an_email_api_503_is_retried_and_a_400_fails_at_once(api, email_provider):
    answers = {"first@example.com": [503, 200], "bad@example.com": [400, 200]}

    def handler(request):
        status = answers[request.json["to"]].pop(0)
        return Response('{"error": "nope"}' if status >= 400 else "{}", status=status)

    email_provider.expect_request("/api/email/send").respond_with_handler(handler)
    retried = api.post("/api/schedule-email", {**GOOD, "to": "first@example.com"}).json()["id"]
    refused = api.post("/api/schedule-email", {**GOOD, "to": "bad@example.com"}).json()["id"]

    run_jobs()

    retried_message = Message.objects.get(pk=retried)
    assert (retried_message.status, retried_message.attempts) == ("sent", 2)
    outcomes = list(retried_message.delivery_attempts.values_list("outcome", "http_status"))
    assert outcomes == [("transient", 503), ("success", 200)]
    refused_message = Message.objects.get(pk=refused)
    assert (refused_message.status, refused_message.attempts) == ("failed", 1)
    assert refused_message.last_error == "HTTP 400: nope"


@pytest.mark.django_db(transaction=True)
def test_an_unset_email_api_url_fails_the_email_with_a_reason(api, settings):
    settings.EMAIL_API_URL = ""
    message_id = api.post("/api/schedule-email", GOOD).json()["id"]

    run_jobs()

    message = Message.objects.get(pk=message_id)
    assert message.status == "failed"
    assert "EMAIL_API_URL is not set" in message.last_error
    assert DeliveryAttempt.objects.get(message=message).error_kind == "not_configured"


# --- Must show: the earlier service's bodies reach the sandbox Email API ---------------------------


@pytest.mark.django_db(transaction=True)
def test_earlier_email_bodies_with_delay_0_and_5000_reach_the_sandbox_email_api(
    api, live_server, settings, fixtures_file
):
    settings.EMAIL_API_URL = f"{live_server.url}/sandbox"
    body = fixtures_file["email_immediate"]["body"]
    requested_at = timezone.now()
    now_id = api.post("/api/schedule-email", {**body, "delay": 0}).json()["id"]
    later_id = api.post("/api/schedule-email", {**body, "delay": 5000}).json()["id"]
    assert Message.objects.get(pk=later_id).status == "scheduled"

    started = time.monotonic()
    run_jobs(
        until=lambda: Message.objects.filter(pk__in=[now_id, later_id], status="sent").count() == 2,
        timeout=20,
    )
    assert time.monotonic() - started >= 4.5

    receipts = {r.idempotency_key: r for r in SandboxReceipt.objects.filter(endpoint="email")}
    assert set(receipts) == {now_id, later_id}
    for receipt in receipts.values():
        assert receipt.response_status == 200
        assert receipt.headers["X-Workspace-Id"] == "66338"
        assert receipt.payload["content"] == body["html"] == "<p>Email content</p>"
        assert receipt.payload["to"] == "recipient@example.com"
        assert receipt.payload["source"] == "broadcast2"
    assert receipts[now_id].received_at - requested_at < (receipts[later_id].received_at - requested_at)
    assert (receipts[later_id].received_at - requested_at).total_seconds() >= 5.0

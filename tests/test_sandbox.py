"""The built-in sandbox as Email API, OpenAI-compatible chat completions and callback receiver."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from django.test import Client

from messaging.devtools.sandbox import sandbox_reply
from messaging.models import SandboxReceipt
from messaging.providers.callback import signature_headers

EMAIL = {"to": "a@example.com", "subject": "Hi", "content": "<p>x</p>", "contactId": "c-1"}


def post(client: Client, path: str, body, **headers):
    extra = {"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}
    data = body if isinstance(body, bytes) else json.dumps(body)
    return client.post(path, data=data, content_type="application/json", **extra)


def test_the_email_api_needs_the_workspace_header_and_the_core_fields(client, db):
    assert post(client, "/sandbox/api/email/send", EMAIL).status_code == 400
    assert (
        post(client, "/sandbox/api/email/send", {"to": "a@example.com"}, x_workspace_id="1").status_code
        == 400
    )
    response = post(client, "/sandbox/api/email/send", EMAIL, x_workspace_id="66338", idempotency_key="k1")
    assert response.status_code == 200
    assert response.json()["id"].startswith("sbx_")
    receipt = SandboxReceipt.objects.filter(endpoint="email").first()
    assert (receipt.response_status, receipt.idempotency_key) == (200, "k1")
    assert receipt.headers["X-Workspace-Id"] == "66338"
    assert receipt.payload == EMAIL


def test_the_email_api_test_addresses_fail_as_documented(client, db):
    def send(to: str, key: str) -> int:
        return post(
            client, "/sandbox/api/email/send", {**EMAIL, "to": to}, x_workspace_id="1", idempotency_key=key
        ).status_code

    assert [send("fail-400@sandbox.example.com", "a"), send("fail-400@sandbox.example.com", "a")] == [
        400,
        400,
    ]
    assert [
        send("fail-once-503@sandbox.example.com", "b"),
        send("fail-once-503@sandbox.example.com", "b"),
    ] == [
        503,
        200,
    ]
    assert [send("fail-500@sandbox.example.com", "c"), send("fail-500@sandbox.example.com", "c")] == [
        500,
        500,
    ]


def test_chat_completions_answer_deterministically_in_the_openai_shape(client, db):
    body = {
        "model": "m1",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Opening hours?"},
        ],
    }
    first = post(client, "/sandbox/chat/completions", body).json()
    second = post(client, "/sandbox/chat/completions", body).json()
    assert first["choices"][0]["message"] == {"role": "assistant", "content": sandbox_reply("Opening hours?")}
    assert first["choices"][0]["message"] == second["choices"][0]["message"]
    assert first["object"] == "chat.completion"
    assert first["model"] == "m1"
    assert first["usage"]["prompt_tokens"] == 4
    assert (
        first["usage"]["total_tokens"]
        == first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    )
    assert post(client, "/sandbox/chat/completions", {"messages": []}).status_code == 400
    assert SandboxReceipt.objects.filter(endpoint="ai").count() == 3


def test_the_callback_receiver_records_whether_the_signature_verifies(client, db, signing_secret):
    body = json.dumps({"response_text": "hello"}).encode()
    good = signature_headers("msg_1", body, secret=signing_secret)
    response = post(client, "/sandbox/callback/ai-reply", body, idempotency_key=str(uuid.uuid4()), **good)
    assert response.status_code == 200
    tampered = post(client, "/sandbox/callback/ai-reply", body.replace(b"hello", b"HELLO"), **good)
    assert tampered.status_code == 401
    unsigned = post(client, "/sandbox/callback/ai-reply", body)
    assert unsigned.status_code == 401
    valid = list(
        SandboxReceipt.objects.filter(endpoint="callback")
        .order_by("id")
        .values_list("signature_valid", flat=True)
    )
    assert valid == [True, False, False]


def test_without_a_secret_the_receiver_records_no_verdict(client, db, settings):
    settings.CALLBACK_SIGNING_SECRET = ""
    assert post(client, "/sandbox/callback/x", {"response_text": "hi"}).status_code == 200
    assert SandboxReceipt.objects.get(endpoint="callback").signature_valid is None


def test_the_receiver_checks_the_sms_shape_and_can_fail_once(client, db, settings):
    settings.CALLBACK_SIGNING_SECRET = ""
    assert post(client, "/sandbox/callback/send-sms", {"to": None}).status_code == 400
    assert post(client, "/sandbox/callback/send-sms", {"message": "hi"}).status_code == 200
    first = post(client, "/sandbox/callback/fail-once", {"r": 1}, idempotency_key="k").status_code
    second = post(client, "/sandbox/callback/fail-once", {"r": 1}, idempotency_key="k").status_code
    assert (first, second) == (503, 200)


@pytest.mark.parametrize(
    "path", ["/sandbox/api/email/send", "/sandbox/chat/completions", "/sandbox/callback/x"]
)
def test_the_sandbox_is_absent_when_disabled(client, db, settings, path):
    settings.SANDBOX_ENABLED = False
    assert post(client, path, {}).status_code == 404


@pytest.mark.parametrize(
    ("to", "status"), [("+15005550500", 500), ("+15005550503", 503), ("+15005550429", 429)]
)
def test_a_deliberate_sandbox_error_is_not_logged_as_a_server_error(client, db, caplog, to, status):
    response = post(client, "/sandbox/send-sms", {"to": to, "message": "Hello"}, idempotency_key=f"k-{to}")
    assert response.status_code == status
    assert [r.getMessage() for r in caplog.records if r.name == "django.request"] == []


def test_runserver_writes_a_sandbox_error_request_line_at_info_and_others_as_they_are(caplog):
    server_log = logging.getLogger("django.server")
    server_log.addHandler(caplog.handler)
    try:
        server_log.error('"%s" %s %s', "POST /sandbox/send-sms HTTP/1.1", "500", "62")
        server_log.error('"%s" %s %s', "POST /api/schedule-sms HTTP/1.1", "500", "62")
    finally:
        server_log.removeHandler(caplog.handler)
    assert [(r.levelname, r.getMessage().split(" ")[1]) for r in caplog.records] == [
        ("INFO", "/sandbox/send-sms"),
        ("ERROR", "/api/schedule-sms"),
    ]

"""AI replies: the API (validation, SSRF refusals, rate limits), generation, and signed callbacks."""

from __future__ import annotations

import socket
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from werkzeug import Response

from messaging.devtools.sandbox import sandbox_reply
from messaging.models import DeliveryAttempt, Message, SandboxReceipt, Workspace
from tests.conftest import ApiClient, run_jobs

GOOD = {
    "workspace_id": "66338",
    "contact_id": "c-1",
    "message_id": "m-1",
    "message_text": "What are your opening hours?",
    "callback_url": "https://app.example.com/api/ai-response/callback",
    "rate_limit_key": "66338:c-1",
}
COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "test-model-2",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "We open at 9."}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 31, "completion_tokens": 5, "total_tokens": 36},
}


def requests_to(server, path: str) -> list:
    return [request for request, _ in server.log if request.path == path]


def ai_request(api: ApiClient, **change) -> str:
    response = api.post("/api/ai-response", {**GOOD, **change})
    assert response.status_code == 202, response.json()
    return response.json()["id"]


def done(*ids: str):
    return lambda: Message.objects.filter(pk__in=ids, status__in=("sent", "failed")).count() == len(ids)


# --- API ------------------------------------------------------------------------------------------


def test_it_accepts_an_ai_request_and_answers_202(api):
    response = api.post("/api/ai-response", GOOD)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    message = Message.objects.get(pk=body["id"])
    assert message.channel == "ai"
    assert (message.external_message_id, message.body, message.rate_limit_key) == (
        "m-1",
        "What are your opening hours?",
        "66338:c-1",
    )
    assert message.callback_url == GOOD["callback_url"]
    assert message.metadata == {"jobId": body["jobId"]}


def test_the_enqueue_alias_and_every_earlier_service_ai_body_are_accepted(api, fixtures_file):
    for name in ("ai_response", "ai_response_enqueue_alias"):
        fixture = fixtures_file[name]
        response = api.post(fixture["path"], fixture["body"])
        assert response.status_code == 202, (name, response.json())
    assert Message.objects.filter(channel="ai").count() == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"workspace_id": None}, "workspace_id"),
        ({"contact_id": ""}, "contact_id"),
        ({"message_id": {"id": 1}}, "message_id"),
        ({"message_text": ""}, "message_text"),
        ({"message_text": "x" * 8001}, "message_text"),
        ({"rate_limit_key": None}, "rate_limit_key"),
        ({"callback_url": None}, "callback_url"),
        ({"callback_url": "not a url"}, "callback_url"),
        ({"phone_number": "12"}, "phone_number"),
    ],
)
def test_it_rejects_bad_ai_input_with_the_field(api, change, field):
    response = api.post("/api/ai-response", {**GOOD, **change})
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"], response.json()
    assert Message.objects.count() == 0


REFUSED_CALLBACKS = [
    "http://127.0.0.1:9/x",
    "http://169.254.169.254/latest",
    "http://[::1]/cb",
    "http://10.0.0.1/cb",
    "http://192.168.1.20/cb",
    "http://2130706433/cb",  # 127.0.0.1 as one decimal integer
    "http://0x7f.1/cb",  # 127.0.0.1 in hex shorthand
    "http://[::ffff:127.0.0.1]/cb",  # IPv4-mapped IPv6
    "http://[::ffff:a9fe:a9fe]/latest",  # 169.254.169.254, IPv4-mapped, in hex
    "http://localhost:9/cb",  # a host name that resolves to loopback
    "http://0.0.0.0:9/cb",
    "http://[fd00:ec2::254]/latest",  # the IPv6 metadata address (unique local)
    "ftp://app.example.com/cb",
    "file:///etc/passwd",
    # pragma: allowlist nextline secret (generated or deliberately fake)
    "http://user:password@app.example.com/cb",
]


@pytest.mark.parametrize("url", REFUSED_CALLBACKS)
def test_a_callback_url_to_a_private_address_is_refused_with_400_naming_the_field(api, url):
    response = api.post("/api/ai-response", {**GOOD, "callback_url": url})
    assert response.status_code == 400, response.json()
    body = response.json()
    assert list(body["errors"]) == ["callback_url"]
    assert body["errors"]["callback_url"][0]
    assert Message.objects.count() == 0


def test_the_refusal_says_what_the_address_is(api):
    reasons = {}
    for url in ("http://127.0.0.1:9/x", "http://169.254.169.254/latest", "http://localhost:9/cb"):
        reasons[url] = api.post("/api/ai-response", {**GOOD, "callback_url": url}).json()["errors"][
            "callback_url"
        ][0]
    assert "loopback" in reasons["http://127.0.0.1:9/x"]
    assert "link-local" in reasons["http://169.254.169.254/latest"]
    assert "localhost resolves to 127.0.0.1" in reasons["http://localhost:9/cb"]


def test_an_allow_listed_host_and_port_may_be_private(api, settings):
    settings.CALLBACK_ALLOWED_HOSTS = ["127.0.0.1:8000"]
    assert (
        api.post("/api/ai-response", {**GOOD, "callback_url": "http://127.0.0.1:8000/cb"}).status_code == 202
    )
    assert (
        api.post("/api/ai-response", {**GOOD, "callback_url": "http://127.0.0.1:8001/cb"}).status_code == 400
    )


def test_the_sixth_request_with_one_rate_limit_key_in_a_minute_gets_429_with_retry_after(api):
    statuses = [api.post("/api/ai-response", {**GOOD, "message_id": f"m-{i}"}).status_code for i in range(5)]
    assert statuses == [202] * 5
    sixth = api.post("/api/ai-response", {**GOOD, "message_id": "m-6"})
    assert sixth.status_code == 429
    assert 1 <= int(sixth["Retry-After"]) <= 60
    assert sixth.json()["success"] is False
    assert "rate_limit_key" in sixth.json()["message"]
    assert Message.objects.count() == 5
    other_key = api.post("/api/ai-response", {**GOOD, "rate_limit_key": "66338:c-2"})
    assert other_key.status_code == 202


def test_the_workspace_limit_counts_every_key_and_a_workspace_can_have_its_own(api, settings):
    settings.AI_RATE_LIMIT_PER_WORKSPACE = "3/minute"
    statuses = [
        api.post("/api/ai-response", {**GOOD, "rate_limit_key": f"k{i}"}).status_code for i in range(4)
    ]
    assert statuses == [202, 202, 202, 429]
    Workspace.objects.create(external_id="big", ai_per_minute=4)
    statuses = [
        api.post("/api/ai-response", {**GOOD, "workspace_id": "big", "rate_limit_key": f"b{i}"}).status_code
        for i in range(5)
    ]
    assert statuses == [202, 202, 202, 202, 429]


# --- Generation -----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_without_an_ai_api_the_reply_is_labelled_simulated(api, callback_server, settings):
    settings.AI_API_URL = ""
    callback_server.expect_request("/cb", method="POST").respond_with_json({"ok": True})
    message_id = ai_request(api, callback_url=callback_server.url_for("/cb"))

    run_jobs(until=done(message_id))

    message = Message.objects.get(pk=message_id)
    assert message.status == "sent"
    assert message.response_text.startswith("[simulated]")
    assert message.ai_model == "simulated"
    (request,) = requests_to(callback_server, "/cb")
    assert request.json["response_text"] == message.response_text


@pytest.mark.django_db(transaction=True)
def test_the_reply_comes_from_the_chat_completions_api_with_model_tokens_and_latency(
    api, callback_server, settings
):
    settings.AI_API_URL = callback_server.url_for("/v1").rstrip("/")
    # pragma: allowlist nextline secret (generated or deliberately fake)
    settings.AI_API_KEY = "test-key-" + str(time.time_ns())
    settings.AI_MODEL = "test-model"
    Workspace.objects.create(external_id="66338", ai_system_prompt="You answer for Bob's Bikes.")
    callback_server.expect_request("/v1/chat/completions", method="POST").respond_with_json(COMPLETION)
    callback_server.expect_request("/cb", method="POST").respond_with_json({"ok": True})
    message_id = ai_request(api, callback_url=callback_server.url_for("/cb"))

    run_jobs(until=done(message_id))

    (generation,) = requests_to(callback_server, "/v1/chat/completions")
    assert generation.headers["Authorization"] == f"Bearer {settings.AI_API_KEY}"
    assert generation.json["model"] == "test-model"
    assert generation.json["messages"] == [
        {"role": "system", "content": "You answer for Bob's Bikes."},
        {"role": "user", "content": "What are your opening hours?"},
    ]
    message = Message.objects.get(pk=message_id)
    assert message.status == "sent"
    assert (message.response_text, message.ai_model) == ("We open at 9.", "test-model-2")
    assert (message.prompt_tokens, message.completion_tokens) == (31, 5)
    assert message.generation_ms is not None and message.generated_at is not None
    (callback,) = requests_to(callback_server, "/cb")
    assert callback.json == {
        "workspace_id": "66338",
        "message_id": "m-1",
        "job_id": message.metadata["jobId"],
        "response_text": "We open at 9.",
        "contact_id": "c-1",
    }
    kinds = list(message.delivery_attempts.values_list("kind", "outcome"))
    assert kinds == [("generation", "success"), ("callback", "success")]


@pytest.mark.django_db(transaction=True)
def test_a_rejected_generation_fails_without_calling_back(api, callback_server, settings):
    settings.AI_API_URL = callback_server.url_for("/v1").rstrip("/")
    callback_server.expect_request("/v1/chat/completions").respond_with_json(
        {"error": {"message": "Incorrect API key provided"}}, status=401
    )
    message_id = ai_request(api, callback_url=callback_server.url_for("/cb"))

    run_jobs(until=done(message_id))

    message = Message.objects.get(pk=message_id)
    assert (message.status, message.attempts) == ("failed", 1)
    assert message.last_error == "HTTP 401: Incorrect API key provided"
    assert list(message.delivery_attempts.values_list("kind", "outcome")) == [("generation", "permanent")]
    assert requests_to(callback_server, "/cb") == []


# --- Callbacks ------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_callback_answering_500_500_200_is_tried_three_times_and_the_reply_generated_once(
    api, callback_server, settings
):
    settings.AI_API_URL = callback_server.url_for("/v1").rstrip("/")
    callback_server.expect_request("/v1/chat/completions").respond_with_json(COMPLETION)
    statuses = [500, 500, 200]
    callback_server.expect_request("/cb").respond_with_handler(
        lambda request: Response("{}", status=statuses.pop(0))
    )
    message_id = ai_request(api, callback_url=callback_server.url_for("/cb"))

    run_jobs(until=done(message_id), timeout=20)

    message = Message.objects.get(pk=message_id)
    assert (message.status, message.attempts) == ("sent", 3)
    assert len(requests_to(callback_server, "/v1/chat/completions")) == 1
    callbacks = requests_to(callback_server, "/cb")
    assert len(callbacks) == 3
    assert {c.json["response_text"] for c in callbacks} == {"We open at 9."}
    assert {c.headers["Idempotency-Key"] for c in callbacks} == {message_id}
    attempts = list(
        message.delivery_attempts.order_by("started_at").values_list("kind", "number", "http_status")
    )
    assert attempts == [
        ("generation", 1, 200),
        ("callback", 1, 500),
        ("callback", 2, 500),
        ("callback", 3, 200),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_301_callback_is_a_failed_attempt_that_records_the_location_and_is_not_followed(
    api, callback_server
):
    elsewhere = callback_server.url_for("/elsewhere")
    callback_server.expect_request("/moved").respond_with_data(
        "", status=301, headers={"Location": elsewhere}
    )
    callback_server.expect_request("/elsewhere").respond_with_json({"ok": True})
    message_id = ai_request(api, callback_url=callback_server.url_for("/moved"))

    run_jobs(until=done(message_id))

    message = Message.objects.get(pk=message_id)
    assert (message.status, message.attempts) == ("failed", 1)
    attempt = message.delivery_attempts.get(kind="callback")
    assert (attempt.http_status, attempt.outcome, attempt.error_kind) == (301, "permanent", "http_301")
    assert elsewhere in attempt.error
    assert elsewhere in message.last_error
    assert requests_to(callback_server, "/elsewhere") == []
    assert message.response_text  # the reply is kept for a manual retry


@pytest.mark.django_db(transaction=True)
def test_a_slow_callback_times_out_and_the_worker_moves_on(api, callback_server, settings):
    settings.CALLBACK_READ_TIMEOUT = 0.5
    settings.DELIVERY_MAX_ATTEMPTS = 1
    silent = socket.socket()  # accepts connections (kernel backlog) but never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    silent_netloc = f"127.0.0.1:{silent.getsockname()[1]}"
    settings.CALLBACK_ALLOWED_HOSTS = [*settings.CALLBACK_ALLOWED_HOSTS, silent_netloc]
    callback_server.expect_request("/fast").respond_with_json({"ok": True})
    try:
        slow_id = ai_request(api, callback_url=f"http://{silent_netloc}/slow")
        fast_id = ai_request(api, callback_url=callback_server.url_for("/fast"), message_id="m-2")
        started = time.monotonic()
        run_jobs(until=done(slow_id, fast_id))
        elapsed = time.monotonic() - started
    finally:
        silent.close()

    slow = Message.objects.get(pk=slow_id)
    assert slow.status == "failed"
    attempt = slow.delivery_attempts.get(kind="callback")
    assert (attempt.outcome, attempt.error_kind, attempt.http_status) == ("transient", "ReadTimeout", None)
    assert 400 <= attempt.duration_ms < 3000
    assert "0.5s read" in attempt.error
    assert Message.objects.get(pk=fast_id).status == "sent"
    assert elapsed < 5


@pytest.mark.django_db(transaction=True)
def test_the_guard_runs_again_at_send_time(api, callback_server, settings):
    message_id = ai_request(api, callback_url=callback_server.url_for("/cb"))
    settings.CALLBACK_ALLOWED_HOSTS = []  # e.g. the operator removed the host, or DNS now says loopback

    run_jobs(until=done(message_id))

    message = Message.objects.get(pk=message_id)
    assert (message.status, message.attempts) == ("failed", 1)
    assert message.error_kind == "refused_url"
    assert "a loopback address; callbacks may only go to public hosts" in message.last_error
    assert requests_to(callback_server, "/cb") == []


@pytest.mark.django_db(transaction=True)
def test_a_callback_host_that_does_not_resolve_is_accepted_then_retried_as_transient(api, settings):
    settings.DELIVERY_MAX_ATTEMPTS = 1
    message_id = ai_request(api, callback_url="https://callbacks.invalid/cb")

    run_jobs(until=done(message_id))

    attempt = DeliveryAttempt.objects.get(message_id=message_id, kind="callback")
    assert (attempt.outcome, attempt.error_kind) == ("transient", "dns_error")


@pytest.mark.django_db(transaction=True)
def test_a_signed_callback_verifies_with_the_secret_and_not_with_another(
    api, callback_server, signing_secret
):
    callback_server.expect_request("/cb").respond_with_json({"ok": True})
    message_id = ai_request(api, callback_url=callback_server.url_for("/cb"))

    run_jobs(until=done(message_id))

    (request,) = requests_to(callback_server, "/cb")
    headers = dict(request.headers)
    assert headers["Webhook-Id"] == f"msg_{message_id}"
    payload = Webhook(signing_secret).verify(request.get_data(), headers)
    assert payload["message_id"] == "m-1"
    assert payload["response_text"].startswith("[simulated]")
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43).verify(request.get_data(), headers)


@pytest.mark.django_db(transaction=True)
def test_an_unsigned_callback_has_no_signature_headers(api, callback_server, settings):
    settings.CALLBACK_SIGNING_SECRET = ""
    callback_server.expect_request("/cb").respond_with_json({"ok": True})
    message_id = ai_request(api, callback_url=callback_server.url_for("/cb"))

    run_jobs(until=done(message_id))

    (request,) = requests_to(callback_server, "/cb")
    assert "Webhook-Signature" not in request.headers


# --- Must show: the sandbox as AI API and callback receiver ---------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_callback_to_the_sandbox_receiver_carries_the_reply_and_a_valid_signature(
    api, live_server, settings, signing_secret
):
    settings.AI_API_URL = f"{live_server.url}/sandbox"
    settings.CALLBACK_ALLOWED_HOSTS = [live_server.url.split("//", 1)[1]]
    message_id = ai_request(api, callback_url=f"{live_server.url}/sandbox/callback/ai-reply")

    run_jobs(until=done(message_id))

    message = Message.objects.get(pk=message_id)
    assert message.status == "sent"
    assert message.response_text == sandbox_reply("What are your opening hours?")
    generation = SandboxReceipt.objects.get(endpoint="ai")
    assert generation.payload["messages"][-1] == {"role": "user", "content": "What are your opening hours?"}
    receipt = SandboxReceipt.objects.get(endpoint="callback")
    assert receipt.signature_valid is True
    assert receipt.response_status == 200
    assert receipt.payload["response_text"] == message.response_text
    assert receipt.payload["message_id"] == "m-1"
    assert receipt.headers["webhook-id"] == f"msg_{message_id}"


@pytest.mark.django_db(transaction=True)
def test_a_callback_url_ending_in_send_sms_gets_the_sms_shape(api, live_server, settings, signing_secret):
    settings.CALLBACK_ALLOWED_HOSTS = [live_server.url.split("//", 1)[1]]
    message_id = ai_request(
        api, callback_url=f"{live_server.url}/sandbox/callback/send-sms", phone_number="+14155550123"
    )

    run_jobs(until=done(message_id))

    message = Message.objects.get(pk=message_id)
    assert message.status == "sent"
    receipt = SandboxReceipt.objects.get(endpoint="callback")
    assert receipt.signature_valid is True
    assert receipt.payload == {
        "to": "+14155550123",
        "message": message.response_text,
        "workspaceId": "66338",
        "contactId": "c-1",
        "metadata": {
            "contactId": "c-1",
            "isAiGenerated": True,
            "aiLogId": message_id,
            "messageId": "m-1",
            "jobId": message.metadata["jobId"],
        },
    }


def test_the_workspace_is_looked_up_once_for_validation_rate_limit_and_service(api, workspace_lookups):
    Workspace.objects.create(external_id="66338", default_phone_region="GB", ai_per_minute=1)
    accepted = api.post("/api/ai-response", {**GOOD, "phone_number": "020 7946 0018"})
    assert accepted.status_code == 202, accepted.json()
    assert Message.objects.get().metadata["to"] == "+442079460018"  # the workspace's region applied
    refused = api.post("/api/ai-response", {**GOOD, "message_id": "m-2", "rate_limit_key": "other"})
    assert refused.status_code == 429  # the workspace's own limit applied
    assert "workspace '66338'" in refused.json()["message"]
    assert workspace_lookups == ["66338", "66338"]  # one lookup per request

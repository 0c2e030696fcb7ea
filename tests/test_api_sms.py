"""POST /api/schedule-sms: authentication, validation table, compatibility, scheduling rules."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from messaging.models import Message, Workspace
from tests.conftest import ApiClient

GOOD = {"phoneNumber": "+14155550123", "message": "Hello", "contactId": "c-1", "workspaceId": "66338"}


def test_it_refuses_requests_without_a_valid_key(db):
    for key in ("", "nonsense", "mq_deadbeef_wrong"):
        response = ApiClient(key).post("/api/schedule-sms", GOOD)
        assert response.status_code == 401
        assert response.json() == {
            "success": False,
            "message": "Missing or invalid API key. Send Authorization: Bearer <key>.",
        }
    assert Message.objects.count() == 0


def test_it_accepts_an_sms_and_answers_202(api):
    response = api.post("/api/schedule-sms", GOOD)
    assert response.status_code == 202
    body = response.json()
    assert body["success"] is True
    assert body["status"] == "queued"
    assert body["scheduledFor"] is None
    message = Message.objects.get(pk=body["id"])
    assert message.rq_job_id == body["jobId"]
    assert message.recipient == "+14155550123"
    assert (message.encoding, message.segments) == ("GSM-7", 1)


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"phoneNumber": "4155550123"}, 400, "phoneNumber"),
        ({"phoneNumber": "not a number"}, 400, "phoneNumber"),
        ({"phoneNumber": "+1415555"}, 400, "phoneNumber"),
        ({"phoneNumber": None}, 400, "phoneNumber"),
        ({"message": ""}, 400, "message"),
        ({"message": "   "}, 400, "message"),
        ({"message": 42}, 400, "message"),
        ({"message": "x" * 1601}, 400, "message"),
        ({"workspaceId": None}, 400, "workspaceId"),
        ({"workspaceId": True}, 400, "workspaceId"),
        ({"workspaceId": 1.5}, 400, "workspaceId"),
        ({"workspaceId": {"id": 1}}, 400, "workspaceId"),
        ({"contactId": ""}, 400, "contactId"),
        ({"metadata": "source=x"}, 400, "metadata"),
        ({"metadata": [1, 2]}, 400, "metadata"),
        ({"mediaUrl": "ftp://x.example/pic.jpg"}, 400, "mediaUrl"),
        ({"delay": -1}, 400, "delay"),
        ({"delay": "soon"}, 400, "delay"),
        ({"delay": 1000, "scheduledFor": "2030-01-01T00:00:00Z"}, 400, "scheduledFor"),
        ({"scheduledFor": "tomorrow"}, 400, "scheduledFor"),
        ({"scheduledFor": 12345}, 400, "scheduledFor"),
        ({"delay": 367 * 86_400_000}, 400, "delay"),
    ],
)
def test_it_rejects_bad_input_with_the_field(api, change, status, field):
    response = api.post("/api/schedule-sms", {**GOOD, **change})
    assert response.status_code == status, response.content
    body = response.json()
    assert body["success"] is False
    assert field in body["errors"], body
    assert body["errors"][field][0]
    assert Message.objects.count() == 0


def test_it_rejects_a_time_more_than_366_days_ahead(api):
    too_far = (timezone.now() + timedelta(days=367)).isoformat()
    response = api.post("/api/schedule-sms", {**GOOD, "scheduledFor": too_far})
    assert response.status_code == 400
    assert "scheduledFor" in response.json()["errors"]


@pytest.mark.parametrize(
    ("raw", "content_type", "status"),
    [
        (b'{"phoneNumber": ', "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b"phoneNumber=1", "application/x-www-form-urlencoded", 415),
        (b"hello", "text/plain", 415),
    ],
)
def test_it_answers_malformed_bodies_with_json_errors(api, raw, content_type, status):
    response = api.post("/api/schedule-sms", raw=raw, content_type=content_type)
    assert response.status_code == status
    assert response.json()["success"] is False


def test_it_refuses_an_oversized_body_with_413(api, settings):
    settings.API_MAX_BODY_BYTES = 1000
    response = api.post("/api/schedule-sms", {**GOOD, "message": "x" * 2000})
    assert response.status_code == 413
    assert response.json()["success"] is False


def test_a_workspace_id_number_is_stored_as_the_exact_string(api):
    response = api.post("/api/schedule-sms", {**GOOD, "workspaceId": 66338})
    assert response.status_code == 202
    workspace = Message.objects.get(pk=response.json()["id"]).workspace
    assert workspace.external_id == "66338"
    assert workspace.name == ""


def test_a_number_without_country_code_uses_the_workspace_region(api):
    Workspace.objects.create(external_id="77", default_phone_region="GB")
    response = api.post("/api/schedule-sms", {**GOOD, "workspaceId": "77", "phoneNumber": "07400 123456"})
    assert response.status_code == 202, response.json()
    assert Message.objects.get(pk=response.json()["id"]).recipient == "+447400123456"


def test_unicode_text_is_counted_as_ucs2_segments(api):
    response = api.post("/api/schedule-sms", {**GOOD, "message": "Grüße 😀 " * 10})
    message = Message.objects.get(pk=response.json()["id"])
    assert message.encoding == "UCS-2"
    assert message.segments == 2  # 100 UTF-16 code units > 70, so 67 per part


def test_gsm_extension_characters_count_twice(api):
    response = api.post("/api/schedule-sms", {**GOOD, "message": "€" * 81})
    message = Message.objects.get(pk=response.json()["id"])
    assert (message.encoding, message.segments) == ("GSM-7", 2)  # 162 septets


def test_a_local_time_is_read_in_the_workspace_timezone(api):
    Workspace.objects.create(external_id="ny", timezone="America/New_York")
    year = timezone.now().year if timezone.now().month < 6 else timezone.now().year + 1
    response = api.post(
        "/api/schedule-sms", {**GOOD, "workspaceId": "ny", "scheduledFor": f"{year}-07-01T09:30:00"}
    )
    assert response.status_code == 202
    message = Message.objects.get(pk=response.json()["id"])
    assert message.status == "scheduled"
    assert message.scheduled_for.isoformat() == f"{year}-07-01T13:30:00+00:00"


@pytest.mark.parametrize(
    ("local_time", "reason"),
    # New York's DST changes in 2027: clocks skip 02:00-03:00 on 14 March, repeat 01:00-02:00 on 7 November.
    [("2027-03-14T02:30:00", "does not exist"), ("2027-11-07T01:30:00", "occurs twice")],
)
def test_a_local_time_on_a_dst_change_is_a_400(api, local_time, reason):
    Workspace.objects.create(external_id="ny", timezone="America/New_York")
    response = api.post("/api/schedule-sms", {**GOOD, "workspaceId": "ny", "scheduledFor": local_time})
    assert response.status_code == 400
    assert reason in response.json()["errors"]["scheduledFor"][0]


def test_a_time_with_an_offset_is_exact(api):
    day = (timezone.now() + timedelta(days=30)).date().isoformat()
    response = api.post("/api/schedule-sms", {**GOOD, "scheduledFor": f"{day}T00:20:00.182+02:00"})
    message = Message.objects.get(pk=response.json()["id"])
    expected = datetime.fromisoformat(f"{day}T00:20:00.182+02:00")
    assert message.scheduled_for == expected
    assert message.scheduled_for.isoformat().endswith(":20:00.182000+00:00")


def test_a_past_time_sends_now(api):
    response = api.post("/api/schedule-sms", {**GOOD, "scheduledFor": "2020-01-01T00:00:00Z"})
    assert response.json()["status"] == "queued"
    assert Message.objects.get(pk=response.json()["id"]).next_attempt_at is None


def test_every_earlier_service_sms_body_is_accepted(api, fixtures_file):
    for name in ("sms_immediate", "sms_delayed", "sms_mms"):
        fixture = fixtures_file[name]
        response = api.post(fixture["path"], fixture["body"])
        assert response.status_code == 202, (name, response.json())
        expected = "scheduled" if fixture["body"].get("delay") else "queued"
        assert response.json()["status"] == expected
    mms = Message.objects.get(media_url="https://media.example.com/pic.jpg")
    assert mms.workspace.external_id == "66338"


def test_get_message_and_cancel(api):
    message_id = api.post("/api/schedule-sms", {**GOOD, "delay": 60_000}).json()["id"]
    detail = api.get(f"/api/messages/{message_id}").json()
    assert detail["status"] == "scheduled"
    assert detail["attempts"] == 0
    cancelled = api.post(f"/api/messages/{message_id}/cancel", {})
    assert cancelled.status_code == 200
    assert Message.objects.get(pk=message_id).status == "cancelled"
    assert api.get("/api/messages/00000000-0000-0000-0000-000000000000").status_code == 404
    assert api.get("/api/messages/not-a-uuid").status_code == 404


def test_health_needs_no_key_and_ready_checks_both_backends(client, db):
    assert client.get("/health").json()["status"] == "ok"
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}


def test_ready_answers_503_when_redis_is_down(client, db, settings):
    from messaging import queues

    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.REDIS_SOCKET_TIMEOUT = 0.5
    queues.reset_connection()
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"].startswith("down")
    assert ready.json()["checks"]["database"] == "ok"
    queues.reset_connection()


@pytest.mark.django_db(transaction=True)
def test_queue_counts_list_every_queue(api):
    api.post("/api/schedule-sms", GOOD)
    api.post("/api/schedule-sms", {**GOOD, "delay": 60_000})
    body = api.get("/api/queues").json()
    assert set(body["queues"]) == {"sms", "email", "ai"}
    assert body["queues"]["sms"]["waiting"] == 1
    assert body["queues"]["sms"]["delayed"] == 1
    assert set(body["queues"]["email"]) == {"waiting", "active", "completed", "failed", "delayed"}


def test_an_unknown_api_path_answers_json_404_even_with_debug(client, db, settings):
    settings.DEBUG = True
    response = client.post("/api/no-such-endpoint", data="{}", content_type="application/json")
    assert response.status_code == 404
    assert response.json() == {"success": False, "message": "Not found."}

"""Metadata keys that would rewrite a provider call (sender, recipients, routing) are refused per
provider, configurable per deployment; plain data keys still reach the provider as before."""

from __future__ import annotations

import json

import pytest

from messaging.models import Message
from tests.conftest import run_jobs

pytestmark = pytest.mark.django_db(transaction=True)

SMS = {"phoneNumber": "+14155550123", "message": "Hello", "contactId": "c-1", "workspaceId": "66338"}
EMAIL = {
    "to": "rita@example.com",
    "subject": "Hello",
    "html": "<p>Hi</p>",
    "contactId": "c-1",
    "workspaceId": "66338",
}


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("bcc", "metadata.bcc"),
        ("from", "metadata.from"),
        ("From", "metadata.From"),
        ("headers", "metadata.headers"),
        ("statusCallback", "metadata.statusCallback"),
        ("status_callback", "metadata.status_callback"),
        ("Status-Callback", "metadata.Status-Callback"),
        ("StatusCallback", "metadata.StatusCallback"),
        ("mediaUrl", "metadata.mediaUrl"),
        ("To", "metadata.To"),
        ("messaging service sid", 'metadata["messaging service sid"]'),
    ],
)
def test_an_sms_whose_metadata_would_rewrite_the_provider_call_is_a_400_naming_the_key(api, key, field):
    response = api.post(
        "/api/schedule-sms", {**SMS, "metadata": {"campaignId": "c-9", key: "file:///etc/passwd"}}
    )
    assert response.status_code == 400, response.content
    assert list(response.json()["errors"]) == [field]
    assert "SMS_METADATA_DENIED_KEYS" in response.json()["errors"][field][0]
    assert Message.objects.count() == 0


@pytest.mark.parametrize("key", ["bcc", "cc", "from", "replyTo", "Reply-To", "headers", "personalizations"])
def test_an_email_whose_metadata_would_rewrite_the_provider_call_is_a_400_naming_the_key(api, key):
    response = api.post("/api/schedule-email", {**EMAIL, "metadata": {key: "attacker@example.net"}})
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert len(errors) == 1
    assert key in next(iter(errors))
    assert "EMAIL_METADATA_DENIED_KEYS" in next(iter(errors.values()))[0]
    assert Message.objects.count() == 0


def test_a_bulk_item_with_a_denied_key_is_refused_on_its_own(api):
    items = [SMS, {**SMS, "metadata": {"bcc": "+14155550999"}}]
    response = api.post("/api/schedule-sms/bulk", {"messages": items})
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, 1)
    assert list(body["results"][1]["errors"]) == ["metadata.bcc"]


def test_plain_data_keys_still_reach_the_provider_at_the_top_level(api, sms_provider):
    sms_provider.expect_request("/send-sms").respond_with_json({"ok": True})
    metadata = {"source": "broadcast2", "campaignId": "c-9", "batchId": "b-1", "fromPage": "signup"}
    response = api.post("/api/schedule-sms", {**SMS, "metadata": metadata})
    assert response.status_code == 202, response.content
    run_jobs()
    [(request, _)] = sms_provider.log
    assert json.loads(request.data) == {
        "to": "+14155550123",
        "message": "Hello",
        "contactId": "c-1",
        "workspaceId": "66338",
        **metadata,
    }


def test_the_deny_lists_are_set_per_deployment(api, settings):
    settings.SMS_METADATA_DENIED_KEYS = ["campaignId"]
    settings.EMAIL_METADATA_DENIED_KEYS = ["trackingDomain"]
    refused = api.post("/api/schedule-sms", {**SMS, "metadata": {"campaign_id": "c-9"}})
    assert refused.status_code == 400
    assert list(refused.json()["errors"]) == ["metadata.campaign_id"]
    # The setting replaces the default list.
    assert api.post("/api/schedule-sms", {**SMS, "metadata": {"bcc": "x"}}).status_code == 202
    refused = api.post("/api/schedule-email", {**EMAIL, "metadata": {"TrackingDomain": "x"}})
    assert list(refused.json()["errors"]) == ["metadata.TrackingDomain"]


def test_a_message_stored_before_a_key_was_denied_is_sent_without_it(api, settings, sms_provider):
    sms_provider.expect_request("/send-sms").respond_with_json({"ok": True})
    settings.EMAIL_API_URL = settings.SMS_API_URL
    sms_provider.expect_request("/api/email/send").respond_with_json({"ok": True})
    denied = settings.SMS_METADATA_DENIED_KEYS, settings.EMAIL_METADATA_DENIED_KEYS
    # Accepted while this deployment denied nothing (or before the upgrade), sent after.
    settings.SMS_METADATA_DENIED_KEYS = settings.EMAIL_METADATA_DENIED_KEYS = []
    sms_metadata = {"campaignId": "c-9", "bcc": "+14155550999", "From": "+14155550998", "statusCallback": "x"}
    email_metadata = {"campaignId": "c-9", "Reply-To": "attacker@example.net", "headers": {"Bcc": "x"}}
    assert api.post("/api/schedule-sms", {**SMS, "metadata": sms_metadata}).status_code == 202
    assert api.post("/api/schedule-email", {**EMAIL, "metadata": email_metadata}).status_code == 202
    settings.SMS_METADATA_DENIED_KEYS, settings.EMAIL_METADATA_DENIED_KEYS = denied
    run_jobs()
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}
    bodies = [json.loads(request.data) for request, _ in sms_provider.log]
    sms_sent = [body for body in bodies if "message" in body]
    email_sent = [body for body in bodies if "subject" in body]
    assert [set(body) for body in sms_sent] == [{"to", "message", "contactId", "workspaceId", "campaignId"}]
    assert [set(body) for body in email_sent] == [{"to", "contactId", "subject", "content", "campaignId"}]

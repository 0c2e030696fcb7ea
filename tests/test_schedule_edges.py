"""`scheduledFor` at the ends of the date range, in any workspace time zone: a 400 naming the field
(single, bulk item by item, dashboard test-send), never a 500."""

from __future__ import annotations

import pytest
from django.test import Client

from messaging.models import Message, Workspace
from tests import factories

SMS = {"phoneNumber": "+14155550123", "message": "Hello", "contactId": "c-1"}
EMAIL = {"to": "r@example.com", "subject": "Hi", "html": "<p>x</p>", "contactId": "c-1"}
ZONES = {"ny": "America/New_York", "tokyo": "Asia/Tokyo", "utc": "UTC"}
EXTREMES = [
    "0001-01-01T00:00:00",
    "9999-12-31T23:59:59",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
    "1969-12-31T23:59:59Z",
]


@pytest.fixture
def zoned(db):
    for external_id, zone in ZONES.items():
        Workspace.objects.create(external_id=external_id, timezone=zone)


@pytest.mark.parametrize("scheduled_for", EXTREMES)
@pytest.mark.parametrize("workspace_id", list(ZONES))
@pytest.mark.parametrize(("path", "body"), [("/api/schedule-sms", SMS), ("/api/schedule-email", EMAIL)])
def test_a_time_at_the_ends_of_the_date_range_is_a_400_on_scheduled_for(
    api, zoned, path, body, workspace_id, scheduled_for
):
    response = api.post(path, {**body, "workspaceId": workspace_id, "scheduledFor": scheduled_for})
    assert response.status_code == 400, response.content
    assert list(response.json()["errors"]) == ["scheduledFor"], response.json()
    assert not Message.objects.exists()


def test_a_past_time_since_1970_still_sends_now(api, zoned):
    response = api.post(
        "/api/schedule-sms", {**SMS, "workspaceId": "ny", "scheduledFor": "1970-01-01T00:00:00Z"}
    )
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "queued"


def test_in_bulk_an_extreme_time_costs_only_its_own_item(api, zoned):
    items = [
        {**SMS, "workspaceId": "ny", "scheduledFor": "9999-12-31T23:59:59"},
        {**SMS, "workspaceId": "ny"},
        {**SMS, "workspaceId": "tokyo", "scheduledFor": "0001-01-01T00:00:00"},
        {**SMS, "workspaceId": "tokyo", "delay": 60_000},
    ]
    response = api.post("/api/schedule-sms/bulk", {"messages": items})
    assert response.status_code == 202, response.content
    results = response.json()["results"]
    assert [r["success"] for r in results] == [False, True, False, True]
    assert list(results[0]["errors"]) == ["scheduledFor"]
    assert list(results[2]["errors"]) == ["scheduledFor"]
    assert Message.objects.count() == 2


@pytest.mark.parametrize(
    ("channel", "body", "value"),
    [
        ("sms", SMS, "0001-01-01T00:00"),
        ("sms", SMS, "9999-12-31T23:59"),
        ("email", EMAIL, "9999-12-31T23:59"),
        ("email", EMAIL, "0001-01-01T00:00"),
    ],
)
def test_the_test_send_form_shows_an_extreme_time_as_a_field_error(zoned, channel, body, value):
    staff = Client()
    staff.force_login(factories.user("staff-user"))
    for workspace_id in ("ny", "tokyo"):
        response = staff.post(
            "/test-send/", {"channel": channel, **body, "workspaceId": workspace_id, "scheduledFor": value}
        )
        assert response.status_code == 200
        assert "scheduledFor" in response.context["form"].errors
    assert not Message.objects.exists()

"""Personal data: masking helpers, the log masking in every record, the template filters."""

from __future__ import annotations

import logging

import pytest
from django.template import Context, Template

from messaging.lib.pii import (
    PiiMaskingFilter,
    mask_email,
    mask_phone,
    mask_recipient,
    mask_record,
    mask_text,
)
from tests.pii_log_check import find_full_values


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("+14155550123", "+1415***0123"),
        ("+447400123456", "+4474***3456"),
        ("+4930123456", "+49***456"),
        ("4155550123", "41***123"),
        ("+1234567", "+1***7"),
    ],
)
def test_phone_numbers_keep_only_their_ends(value, masked):
    assert mask_phone(value) == masked


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("rita@example.com", "r***@example.com"),
        ("r@example.com", "r***@example.com"),
        ("first.last+tag@mail.example.co.uk", "f***@mail.example.co.uk"),
        ("not an address", "***"),
    ],
)
def test_email_addresses_keep_the_first_letter_and_the_domain(value, masked):
    assert mask_email(value) == masked


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("+14155550123", "+1415***0123"),
        ("+1 (415) 555-0123", "+1415***0123"),
        ("rita@example.com", "r***@example.com"),
        ("hooks.example.com", "hooks.example.com"),
        ("", ""),
        (None, ""),
    ],
)
def test_mask_recipient_picks_the_right_mask(value, masked):
    assert mask_recipient(value) == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("to +14155550123 failed", "to +1415***0123 failed"),
        ("to +1 415 555 0123 failed", "to +1415***0123 failed"),
        ("to +1-415-555-0123.", "to +1415***0123."),
        ('{"to": "+447400123456"}', '{"to": "+4474***3456"}'),
        ("national 07400123456 number", "national 0740***3456 number"),
        ("mail rita@example.com and bo.b@ex.co", "mail r***@example.com and b***@ex.co"),
        ("/api/x?to=%2B14155550123&e=rita%40example.com", "/api/x?to=%2B1415***0123&e=r***%40example.com"),
        # Left alone: ids, times, short numbers, already-masked values.
        ("message 1b4e28ba-2fa1-11d2-883f-001234567890", "message 1b4e28ba-2fa1-11d2-883f-001234567890"),
        ("2026-11-01 12:00:00,123 took 1500 ms, HTTP 503", "2026-11-01 12:00:00,123 took 1500 ms, HTTP 503"),
        ("r***@example.com +1415***0123", "r***@example.com +1415***0123"),
    ],
)
def test_mask_text_finds_numbers_and_addresses_in_free_text(text, masked):
    assert mask_text(text) == masked


@pytest.mark.parametrize(
    ("line", "masked"),
    [
        # How browsers submit the dashboard's and admin's search forms ("+" is a space in a query).
        ('"GET /messages/?recipient=%2B1+415+555+0123 HTTP/1.1" 200', '"GET /messages/?recipient=%2B1415***0123 HTTP/1.1" 200'),
        ('"GET /admin/messaging/message/?q=%28415%29+555-0123 HTTP/1.1"', '"GET /admin/messaging/message/?q=41***123 HTTP/1.1"'),
        ('"GET /admin/messaging/message/?q=415.555.0123&o=-1 HTTP/1.1"', '"GET /admin/messaging/message/?q=41***123&o=-1 HTTP/1.1"'),
        ('"GET /admin/messaging/message/?q=+1+415+555+0123 HTTP/1.1"', '"GET /admin/messaging/message/?q=%201415***0123 HTTP/1.1"'),
        ('"GET /api/messages/%2B44%207400%20123456 HTTP/1.1" 404', '"GET /api/messages/+4474***3456 HTTP/1.1" 404'),
        ('"GET /messages/?recipient=rita.lopez%2540example.com HTTP/1.1"', '"GET /messages/?recipient=r***%2540example.com HTTP/1.1"'),
        # A login redirect's next= holds the search URL encoded once more.
        ('"GET /login/?next=/messages/%3Frecipient%3D%252B1%2B415%2B555%2B0123 HTTP/1.1"', '"GET /login/?next=/messages/%3Frecipient%3D%252B1415***0123 HTTP/1.1"'),
        ('referer "https://q.example.com/messages/?recipient=4155550123"', 'referer "https://q.example.com/messages/?recipient=41***123"'),
        # Left exactly as they were: ids, dates, cursors, versions.
        ('"GET /api/messages/3f1c2a10-1234-4567-8901-123456789012 HTTP/1.1"', None),
        ('"GET /messages/?date_from=2026-01-05&cursor=2026-12-02T10%3A01%3A49.932%2B00%3A00 HTTP/1.1"', None),
        ('[02/Dec/2026:10:01:49 +0000] "GET /health HTTP/1.1" 200 60 "-" "python-requests/2.32.3"', None),
    ],
)  # fmt: skip
def test_numbers_and_addresses_in_paths_and_query_strings_are_masked_however_encoded(line, masked):
    assert mask_text(line) == (line if masked is None else masked)


def test_the_run_wide_log_check_finds_numbers_in_paths_and_query_strings_however_encoded():
    lines = [
        '"GET /messages/?recipient=%2B1+415+555+0123 HTTP/1.1" 200',
        '"GET /admin/messaging/message/?q=%28415%29+555-0123 HTTP/1.1" 200',
        '"GET /admin/messaging/message/?q=+1+415+555+0123 HTTP/1.1" 200',
        '"GET /api/messages/%2B44%207400%20123456 HTTP/1.1" 404',
        '"GET /login/?next=/messages/%3Frecipient%3D%252B1%2B415%2B555%2B0123 HTTP/1.1"',
        '"GET /messages/?recipient=rita.lopez%2540example.com HTTP/1.1"',
    ]
    for line in lines:
        assert find_full_values(line), line
        assert find_full_values(mask_text(line)) == [], mask_text(line)
    # Django's request log prints the decoded path, spaces and all.
    record = logging.LogRecord(
        "django.request", 30, "", 0, "%s: %s", ("Not Found", "/x/+1 (415) 555-0123"), None
    )
    line = "2026-12-02 10:01:49,932 WARNING django.request {}"
    assert find_full_values(line.format(record.getMessage()))
    assert find_full_values(line.format(mask_record(record).getMessage())) == []


def test_django_request_log_paths_are_masked_decoded_spaces_and_all(caplog):
    caplog.set_level(logging.WARNING, logger="django.request")
    logging.getLogger("django.request").warning("%s: %s", "Not Found", "/api/messages/+1 (415) 555-0123")
    [record] = caplog.records
    assert record.getMessage() == "Not Found: /api/messages/+1415***0123"


def test_every_log_record_is_masked_whatever_the_handler(caplog):
    # caplog's handler has no filter of ours: the masking happens when the record is created.
    logger = logging.getLogger("messaging.anything")
    with caplog.at_level(logging.INFO):
        logger.info("sending to %s for %s", "+14155550123", "rita@example.com")
        logger.warning({"to": "+447400123456"})
    assert "+1415***0123" in caplog.text
    assert "r***@example.com" in caplog.text
    assert "+4474***3456" in caplog.text
    assert "4155550123" not in caplog.text
    assert "rita@" not in caplog.text
    assert "7400123456" not in caplog.text


def test_exception_text_in_log_records_is_masked(caplog):
    logger = logging.getLogger("messaging.anything")
    try:
        raise ValueError("provider refused +14155550123 / rita@example.com")
    except ValueError:
        logger.exception("delivery failed")
    assert "ValueError: provider refused +1415***0123 / r***@example.com" in caplog.text
    assert "4155550123" not in caplog.text
    assert "rita@" not in caplog.text


def test_the_filter_masks_a_record_made_without_the_factory():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "to %s", ("+14155550123",), None)
    record.pii_masked = False
    assert PiiMaskingFilter().filter(record) is True
    assert record.getMessage() == "to +1415***0123"


def test_template_filters_mask_recipients_for_lists():
    template = Template(
        "{% load privacy %}{{ phone|mask_recipient }} {{ mail|mask_recipient }} {{ note|mask_pii }}"
    )
    rendered = template.render(
        Context({"phone": "+14155550123", "mail": "rita@example.com", "note": "call +447400123456"})
    )
    assert rendered == "+1415***0123 r***@example.com call +4474***3456"


def test_the_admin_message_list_masks_recipients_and_the_detail_shows_them(db, api):
    from django.contrib.auth import get_user_model
    from django.test import Client

    message_id = api.post(
        "/api/schedule-sms",
        {"phoneNumber": "+14155550123", "message": "Hi", "contactId": "c-1", "workspaceId": "66338"},
    ).json()["id"]
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("boss", password=None))
    listing = client.get("/admin/messaging/message/").content.decode()
    assert "+1415***0123" in listing
    assert "4155550123" not in listing
    found = client.get("/admin/messaging/message/", {"q": "+14155550123"}).content.decode()
    assert message_id in found  # staff can still search by the full number
    detail = client.get(f"/admin/messaging/message/{message_id}/change/").content.decode()
    assert "+14155550123" in detail

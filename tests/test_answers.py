"""Reading what providers, models and callback receivers answer: Retry-After (RFC 9110, section
10.2.3), JSON bodies, charsets and text a database cannot store never raise; bad ones are recorded
attempts with a clear reason. Also: the deadline settings are checked against RQ_JOB_TIMEOUT."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from django.conf import settings as django_settings
from werkzeug import Response

from messaging.lib import answers
from messaging.models import Message
from messaging.providers.base import ProviderClient
from tests.conftest import run_jobs

NOW = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7\t", 7.0),
        ("0", 0.0),
        ("000042", 42.0),
        ("301", 300.0),  # capped
        ("9" * 5000, 300.0),  # any number of digits is valid: capped, never int() of it
        ("Wed, 02 Dec 2026 10:01:00 GMT", 60.0),  # IMF-fixdate
        ("Wednesday, 02-Dec-26 10:00:30 GMT", 30.0),  # obsolete RFC 850 form
        ("Wed Dec  2 10:00:10 2026", 10.0),  # obsolete asctime form, UTC
        ("Tue, 01 Dec 2026 10:00:00 GMT", 0.0),  # in the past
        ("Fri, 31 Dec 9999 23:59:59 GMT", 300.0),
    ],
)
def test_a_valid_retry_after_is_read_and_capped(value, seconds):
    assert answers.parse_retry_after(value, cap=300.0, now=NOW) == seconds


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "\u00b2",  # superscript two: str.isdigit() says yes, float() raises
        "\u0661\u0662",  # Arabic-Indic 12: str.isdigit() says yes, float() reads 12
        "\uff11\uff12",  # fullwidth digits
        "-5",
        "1.5",
        "1e3",
        "NaN",
        "inf",
        "+3",
        "12 34",
        "3\n",
        "\x00",
        "Wed, 02 Dec 99999 10:01:00 GMT",
        "Wed, 31 Feb 2026 10:01:00 GMT",
        "Wed, 02 Dec 2026 99:01:00 GMT",
        "Wed, 02 Dec 2026 10:01:00 +9999",
        "Wed, 02 Dec 2026 10:01:00 GMT" + " " * 100,
        "garbage",
        12,
    ],
)
def test_an_invalid_retry_after_is_ignored(value):
    assert answers.parse_retry_after(value, cap=300.0, now=NOW) is None


def test_json_that_does_not_parse_or_is_not_an_object_is_none():
    assert answers.loads("[" * 100_000) is None  # RecursionError in the parser
    assert answers.loads("1" * 5000) is None  # over Python's integer digit limit
    assert answers.loads("{") is None
    assert answers.json_object("[1, 2]") is None
    assert answers.json_object('"text"') is None
    assert answers.json_object("NaN") is None
    assert answers.json_object('{"id": 1}') == {"id": 1}


def test_text_a_database_cannot_store_is_made_storable():
    assert answers.storable("a\x00b\ud800c") == "a\ufffdb\ufffdc"
    assert answers.decode(b'{"a": 1}', "no-such-charset") == '{"a": 1}'
    assert answers.decode(b"abc", "zlib") == "abc"  # a codec, but not a text encoding
    assert answers.decode(b"\xff\x00", "utf-8") == "\ufffd\ufffd"
    assert answers.decode("é".encode("latin-1"), "latin-1") == "é"


def test_numbers_and_identifiers_from_answers_are_bounded():
    assert [answers.count(v) for v in (5, 0, -1, True, 2**31, 1.5, "5", None)] == [5, 0] + [None] * 6
    assert answers.short_text("p-1", 200) == "p-1"
    assert answers.short_text(42, 200) == "42"
    assert answers.short_text("x" * 300, 200) == "x" * 200
    assert [answers.short_text(v, 200) for v in (None, True, {"a": 1}, [1])] == ["", "", "", ""]


def test_a_provider_answer_with_a_bad_retry_after_is_a_transient_http_error(httpserver):
    httpserver.expect_request("/send-sms").respond_with_response(
        Response('{"error": "busy"}', status=503, headers={"Retry-After": "\u00b2"})
    )
    result = ProviderClient().post_json(httpserver.url_for("/send-sms"), {})
    assert (result.ok, result.transient, result.http_status, result.error_kind) == (
        False,
        True,
        503,
        "http_503",
    )
    assert (result.error, result.retry_after) == ("HTTP 503: busy", None)


def test_an_error_body_whose_reason_is_not_text_falls_back_to_the_body(httpserver):
    nested = '{"error": ' + "[" * 5000 + "]" * 5000 + "}"
    httpserver.expect_request("/send-sms").respond_with_data(nested, status=400)
    result = ProviderClient().post_json(httpserver.url_for("/send-sms"), {})
    assert (result.transient, result.error_kind) == (False, "http_400")
    assert result.error.startswith('HTTP 400: {"error": [[[')


AI = {
    "workspace_id": "66338",
    "contact_id": "c-1",
    "message_id": "m-1",
    "message_text": "Opening hours?",
    "callback_url": "https://app.example.com/cb",
    "rate_limit_key": "66338:c-1",
}


@pytest.mark.django_db(transaction=True)
def test_a_model_answer_nested_too_deep_to_parse_is_a_recorded_permanent_failure(api, httpserver, settings):
    settings.AI_API_URL = httpserver.url_for("").rstrip("/")
    httpserver.expect_request("/chat/completions").respond_with_data(
        "[" * 60_000, content_type="application/json"
    )
    message_id = api.post("/api/ai-response", AI).json()["id"]

    run_jobs(until=lambda: Message.objects.get(pk=message_id).status != "queued")

    message = Message.objects.get(pk=message_id)
    assert message.status == "failed"
    attempt = message.delivery_attempts.get()
    assert (attempt.kind, attempt.outcome, attempt.error_kind) == (
        "generation",
        "permanent",
        "invalid_response",
    )
    assert "without a reply text (the body is not a JSON object)" in attempt.error


@pytest.mark.django_db(transaction=True)
def test_a_model_reply_the_database_cannot_store_is_stored_cleaned(
    api, httpserver, callback_server, settings
):
    settings.AI_API_URL = httpserver.url_for("").rstrip("/")
    completion = (
        '{"model": {"x": 1}, "choices": [{"message": {"content": "Hi\\u0000 \\ud800there"}}],'
        ' "usage": {"prompt_tokens": 99999999999999999999, "completion_tokens": -3}}'
    )
    httpserver.expect_request("/chat/completions").respond_with_data(
        completion, content_type="application/json"
    )
    callback_server.expect_request("/cb").respond_with_json({"ok": True})
    message_id = api.post("/api/ai-response", {**AI, "callback_url": callback_server.url_for("/cb")}).json()[
        "id"
    ]

    run_jobs(until=lambda: Message.objects.get(pk=message_id).status not in ("queued", "sending"))

    message = Message.objects.get(pk=message_id)
    assert message.status == "sent"
    assert message.response_text == "Hi\ufffd \ufffdthere"
    assert (message.ai_model, message.prompt_tokens, message.completion_tokens) == (
        settings.AI_MODEL,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"AI_DEADLINE_SECONDS": "40", "CALLBACK_DEADLINE_SECONDS": "20"}, "AI_DEADLINE_SECONDS + CALLBACK"),
        ({"PROVIDER_DEADLINE_SECONDS": "60"}, "PROVIDER_DEADLINE_SECONDS"),
        ({"PROVIDER_DEADLINE_SECONDS": "0"}, "PROVIDER_DEADLINE_SECONDS"),
        ({"CALLBACK_DEADLINE_SECONDS": "-1"}, "CALLBACK_DEADLINE_SECONDS"),
    ],
)
def test_deadlines_that_do_not_fit_in_the_job_timeout_stop_the_process_at_start(env, expected):
    process = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=django_settings.BASE_DIR,
        env={**os.environ, "DJANGO_ENV": "test", "RQ_JOB_TIMEOUT": "60", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode != 0
    assert "ImproperlyConfigured" in process.stderr and expected in process.stderr, process.stderr

"""JSON the API must refuse with a 400 naming the field: NaN and Infinity, lone surrogates, U+0000.

Each of these parses in Python but cannot be stored (PostgreSQL's jsonb and text refuse them; a lone
surrogate cannot even be encoded as UTF-8), so before they were refused the API answered 503
"database unavailable" or 500, and one such item sank a whole bulk request.
"""

from __future__ import annotations

import logging

import pytest

from messaging.models import Message

pytestmark = pytest.mark.django_db(transaction=True)

SMS = (
    '{"phoneNumber": "+14155550123", "message": %s, "contactId": "c-1", "workspaceId": "66338", '
    '"metadata": %s%s}'
)


def sms_body(message: str = '"Hello"', metadata: str = '{"source": "x"}', extra: str = "") -> bytes:
    """An SMS request body as raw JSON text (json.dumps cannot write NaN or a lone surrogate as sent)."""
    return (SMS % (message, metadata, extra)).encode()


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (sms_body(metadata='{"score": NaN}'), "metadata.score"),
        (sms_body(metadata='{"score": Infinity}'), "metadata.score"),
        (sms_body(metadata='{"a": {"b": [1, -Infinity]}}'), "metadata.a.b[1]"),
        (sms_body(metadata='{"score": 1e400}'), "metadata.score"),
        (sms_body(extra=', "delay": NaN'), "delay"),
        (sms_body(message='"Hi \\ud800"'), "message"),
        (sms_body(message='"\\udc00 low half alone"'), "message"),
        (sms_body(metadata='{"note": "x\\ud83d"}'), "metadata.note"),
        (sms_body(metadata='{"odd key": NaN}'), 'metadata["odd key"]'),
        (sms_body(metadata='{"\\ud800": 1}'), 'metadata["\\ud800"]'),
        (sms_body(metadata='{"note": "a\\u0000b"}'), "metadata.note"),
        (sms_body(message='"nul \\u0000 in text"'), "message"),
    ],
)
def test_an_sms_with_an_unstorable_value_is_a_400_naming_its_path(api, caplog, raw, field):
    caplog.set_level(logging.WARNING)
    response = api.post("/api/schedule-sms", raw=raw)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["success"] is False
    assert list(body["errors"]) == [field]
    assert Message.objects.count() == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_valid_surrogate_pair_is_one_character_and_accepted(api):
    response = api.post("/api/schedule-sms", raw=sms_body(message='"Party \\ud83c\\udf89"'))
    assert response.status_code == 202, response.content
    assert Message.objects.get().body == "Party \N{PARTY POPPER}"


def test_email_and_ai_requests_with_unstorable_values_are_400s(api):
    email = (
        b'{"to": "rita@example.com", "subject": "Hi \\ud800", "html": "<p>x</p>", "contactId": "c-1",'
        b' "workspaceId": "66338", "metadata": {"n": NaN}}'
    )
    response = api.post("/api/schedule-email", raw=email)
    assert response.status_code == 400, response.content
    assert set(response.json()["errors"]) == {"subject", "metadata.n"}
    ai = (
        b'{"workspace_id": "66338", "contact_id": "c-1", "message_id": "m-1", "message_text": "\\udfff?",'
        b' "callback_url": "https://app.example.com/cb", "rate_limit_key": "k"}'
    )
    response = api.post("/api/ai-response", raw=ai)
    assert response.status_code == 400, response.content
    assert list(response.json()["errors"]) == ["message_text"]
    assert Message.objects.count() == 0


def test_an_unstorable_value_with_an_idempotency_key_is_a_400_and_its_replay_too(api):
    raw = sms_body(metadata='{"\\ud800": NaN}')
    first = api.post("/api/schedule-sms", raw=raw, headers={"Idempotency-Key": "hostile-1"})
    again = api.post("/api/schedule-sms", raw=raw, headers={"Idempotency-Key": "hostile-1"})
    assert (first.status_code, again.status_code) == (400, 400), (first.content, again.content)
    assert again.json() == first.json()
    assert set(first.json()["errors"]['metadata["\\ud800"]']) == {
        "Key: Must not contain a lone UTF-16 surrogate (such as \\ud800); it is not valid Unicode.",
        "Must be a finite number (NaN and Infinity are not JSON numbers).",
    }


def test_in_a_bulk_request_only_the_items_with_unstorable_values_are_refused(api):
    good = '{"phoneNumber": "+14155550123", "message": "Hi", "contactId": "c-1", "workspaceId": "66338"}'
    nan = good[:-1] + ', "metadata": {"score": NaN}}'
    surrogate = good.replace('"Hi"', '"Hi \\ud800"')
    raw = f'{{"messages": [{good}, {nan}, {surrogate}, {good}]}}'.encode()
    response = api.post("/api/schedule-sms/bulk", raw=raw)
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 2)
    results = body["results"]
    assert [r["success"] for r in results] == [True, False, False, True]
    assert list(results[1]["errors"]) == ["metadata.score"]
    assert list(results[2]["errors"]) == ["message"]
    assert Message.objects.count() == 2


def test_an_unstorable_value_outside_the_bulk_items_refuses_the_request_naming_it(api):
    good = '{"phoneNumber": "+14155550123", "message": "Hi", "contactId": "c-1", "workspaceId": "66338"}'
    response = api.post("/api/schedule-sms/bulk", raw=f'{{"messages": [{good}], "note": NaN}}'.encode())
    assert response.status_code == 400, response.content
    assert list(response.json()["errors"]) == ["note"]
    response = api.post("/api/schedule-sms/bulk", raw=b'{"messages": NaN}')
    assert response.status_code == 400, response.content
    assert list(response.json()["errors"]) == ["messages"]
    assert Message.objects.count() == 0


def test_the_halves_of_a_surrogate_pair_sent_in_two_strings_are_each_refused():
    from messaging.lib import strictjson

    value = strictjson.loads('{"a": ["\\ud83d", "\\ude00"], "b\\ud83d": {"c": 1}, "ok": "\\ud83d\\ude00"}')
    assert sorted(strictjson.unstorable_values(value)) == ['["b\\ud83d"]', "a[0]", "a[1]"]

"""What an identifier may hold (workspace, contact, client message ids, rate_limit_key), enforced at
the API's edge (single, bulk, dashboard test-send) with a 400 naming the field, and the earlier
service's rule for workspace ids (a number >= 1; a string not blank, no surrounding whitespace)."""

from __future__ import annotations

import pytest

from messaging.models import Message, Workspace

SMS = {"phoneNumber": "+14155550123", "message": "Hello", "contactId": "c-1", "workspaceId": "66338"}
EMAIL = {
    "to": "r@example.com",
    "subject": "Hi",
    "html": "<p>x</p>",
    "contactId": "c-1",
    "workspaceId": "66338",
}
AI = {
    "workspace_id": "66338",
    "contact_id": "c-1",
    "message_id": "m-1",
    "message_text": "Hi",
    "callback_url": "https://app.example.com/hook",
    "rate_limit_key": "66338:c-1",
}

# Characters no identifier may hold: controls (line breaks, NUL, TAB, DEL, C1), bidi controls,
# zero-width characters and the BOM, line/paragraph separators, non-ASCII spaces, a lone surrogate.
UNPRINTABLE = [
    "a\nb",
    "a\rb",
    "a\r\nX-Evil: 1",
    "a\x00b",
    "a\tb",
    "a\x7fb",
    "a\x85b",
    "a\u202eb",
    "a\u2066b",
    "a\u200bb",
    "a\u200db",
    "\ufeffa",
    "a\u2028b",
    "a\u00a0b",
    "a\ud800b",
]


def _cases():
    for path, body, fields in (
        ("/api/schedule-sms", SMS, ("workspaceId", "contactId")),
        ("/api/schedule-email", EMAIL, ("workspaceId", "contactId")),
        ("/api/ai-response", AI, ("workspace_id", "contact_id", "message_id", "rate_limit_key")),
    ):
        for field in fields:
            for value in UNPRINTABLE:
                yield pytest.param(path, body, field, value, id=f"{path}-{field}-{value!r}")
            too_long = "x" * (201 if field == "rate_limit_key" else 101)
            yield pytest.param(path, body, field, too_long, id=f"{path}-{field}-too-long")
            yield pytest.param(path, body, field, "   ", id=f"{path}-{field}-blank")


@pytest.mark.parametrize(("path", "body", "field", "value"), list(_cases()))
def test_an_identifier_with_a_character_that_is_not_printable_is_a_400_naming_the_field(
    api, path, body, field, value
):
    response = api.post(path, {**body, field: value})
    assert response.status_code == 400, response.content
    assert list(response.json()["errors"]) == [field], response.json()
    assert not Message.objects.exists()
    assert not Workspace.objects.exists()


@pytest.mark.parametrize("value", [0, -1, " ", "  ", " 66338", "66338 ", "66338\u3000", True, 1.5])
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/schedule-sms", SMS, "workspaceId"),
        ("/api/schedule-email", EMAIL, "workspaceId"),
        ("/api/ai-response", AI, "workspace_id"),
    ],
)
def test_a_workspace_id_follows_the_earlier_services_rule(api, path, body, field, value):
    response = api.post(path, {**body, field: value})
    assert response.status_code == 400, response.content
    assert list(response.json()["errors"]) == [field], response.json()
    assert not Workspace.objects.exists()


def test_a_rate_limit_key_must_be_a_string(api):
    response = api.post("/api/ai-response", {**AI, "rate_limit_key": 66338})
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["rate_limit_key"]


@pytest.mark.parametrize(
    "workspace_id",
    [1, 66338, "66338", "acme-eu.1", "bücher", "łódź", "工作区", "Team A/EU", "a:b@c", "50%"],
)
def test_printable_identifiers_of_any_script_are_accepted_exactly(api, workspace_id):
    response = api.post("/api/schedule-sms", {**SMS, "workspaceId": workspace_id, "contactId": "c 1 é"})
    assert response.status_code == 202, response.content
    message = Message.objects.select_related("workspace").get(pk=response.json()["id"])
    assert message.workspace.external_id == str(workspace_id)
    assert message.contact_id == "c 1 é"


def test_in_bulk_an_item_with_a_bad_identifier_is_refused_alone(api):
    items = [
        SMS,
        {**SMS, "workspaceId": "line\nbreak"},
        {**SMS, "contactId": "zero\u200bwidth"},
        {**SMS, "workspaceId": 0},
        {**SMS, "workspaceId": " "},
        {**SMS, "contactId": "c-2"},
    ]
    response = api.post("/api/schedule-sms/bulk", {"messages": items})
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 4)
    results = body["results"]
    assert [r["success"] for r in results] == [True, False, False, False, False, True]
    assert list(results[1]["errors"]) == ["workspaceId"]
    assert list(results[2]["errors"]) == ["contactId"]
    assert list(results[3]["errors"]) == ["workspaceId"]
    assert list(results[4]["errors"]) == ["workspaceId"]
    assert list(Workspace.objects.values_list("external_id", flat=True)) == ["66338"]
    assert Message.objects.count() == 2


@pytest.mark.parametrize(
    ("channel", "body", "field", "value"),
    [
        ("sms", SMS, "workspaceId", "line\nbreak"),
        ("sms", SMS, "workspaceId", "  "),
        ("sms", SMS, "contactId", "bidi\u202eid"),
        ("email", EMAIL, "workspaceId", " 66338"),
        ("ai", AI, "rate_limit_key", "key\u200b"),
        ("ai", AI, "message_id", "m\r\n1"),
    ],
)
def test_the_test_send_forms_refuse_bad_identifiers_on_the_field(staff, channel, body, field, value):
    response = staff.post("/test-send/", {"channel": channel, **body, field: value})
    assert response.status_code == 200
    form = response.context["form"]
    assert field in form.errors, form.errors
    assert not Message.objects.exists()

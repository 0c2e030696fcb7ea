"""AI limits that cannot be sidestepped: one budget per rate_limit_key however it is spelled, and a
budget per API key across all its workspaces (which are created on first use)."""

from __future__ import annotations

from messaging.models import Message
from messaging.workspaces import api_key_create
from tests.conftest import ApiClient

AI = {
    "workspace_id": "66338",
    "contact_id": "c-1",
    "message_id": "m-1",
    "message_text": "Hello?",
    "callback_url": "https://app.example.com/cb",
    "rate_limit_key": "66338:c-1",
}


def test_every_spelling_of_a_rate_limit_key_shares_its_budget(api, settings):
    settings.AI_RATE_LIMIT_PER_KEY = "2/minute"
    assert api.post("/api/ai-response", {**AI, "rate_limit_key": "Tenant:C-1"}).status_code == 202
    assert api.post("/api/ai-response", {**AI, "rate_limit_key": "tenant:c-1"}).status_code == 202
    spellings = [
        "TENANT:C-1",  # case
        " tenant:c-1 ",  # surrounding spaces
        "tenant:c-1\u00a0",  # a no-break space
        "ten\u200bant:c-1",  # zero-width space
        "\ufefftenant:\u200dc-1",  # byte order mark, zero-width joiner
        "ｔｅｎａｎｔ：ｃ－１",  # fullwidth forms (NFKC)
        "TENANT:C\u00ad-1",  # soft hyphen
    ]
    answers = {}
    for spelling in spellings:
        response = api.post("/api/ai-response", {**AI, "rate_limit_key": spelling})
        # Either the key's own budget (429), or refused at the API's edge as an identifier with
        # invisible or surrounding characters (400 naming the field): never a budget of its own.
        answers[spelling] = response.status_code
        if response.status_code == 400:
            assert "rate_limit_key" in response.json()["errors"], spelling
        else:
            assert response.status_code == 429, spelling
            assert "tenant:c-1" in response.json()["message"]
    assert answers["TENANT:C-1"] == answers["ｔｅｎａｎｔ：ｃ－１"] == 429
    assert api.post("/api/ai-response", {**AI, "rate_limit_key": "tenant:c-2"}).status_code == 202


def test_one_api_key_cannot_mint_budget_with_new_workspaces_and_keys(db, settings):
    settings.AI_RATE_LIMIT_PER_API_KEY = "3/minute"  # pragma: allowlist secret (a rate, not a secret)
    key, full_key = api_key_create(name="minting", all_workspaces=True)
    api = ApiClient(full_key)
    statuses = [
        api.post(
            "/api/ai-response", {**AI, "workspace_id": f"new-{i}", "rate_limit_key": f"k-{i}"}
        ).status_code
        for i in range(4)
    ]
    assert statuses == [202, 202, 202, 429]
    refused = api.post("/api/ai-response", {**AI, "workspace_id": "new-9", "rate_limit_key": "k-9"})
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert "this API key" in refused.json()["message"]
    assert Message.objects.filter(api_key=key).count() == 3
    # Another key has its own budget; SMS and email are not AI requests.
    other = ApiClient(api_key_create(name="other", all_workspaces=True)[1])
    assert other.post("/api/ai-response", AI).status_code == 202
    sms = {"phoneNumber": "+14155550123", "message": "Hi", "contactId": "c-1", "workspaceId": "66338"}
    assert api.post("/api/schedule-sms", sms).status_code == 202

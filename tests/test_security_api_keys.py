"""API keys: shown once, stored as a hash, looked up by prefix, revocable, scoped to workspaces."""

from __future__ import annotations

import hashlib
import io
import time

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from messaging import workspaces
from messaging.models import ApiKey, Message, Workspace, WorkspaceAlias
from messaging.workspaces import api_key_authenticate, api_key_create
from tests.conftest import ApiClient

GOOD = {"phoneNumber": "+14155550123", "message": "Hello", "contactId": "c-1", "workspaceId": "66338"}
UNAUTHORIZED = {"success": False, "message": "Missing or invalid API key. Send Authorization: Bearer <key>."}


def test_a_new_key_is_shown_once_and_only_the_hash_of_its_secret_is_stored(db):
    stdout = io.StringIO()
    call_command("create_api_key", "crm", "--all-workspaces", stdout=stdout)
    full_key = stdout.getvalue().strip().splitlines()[-1]
    tag, prefix, secret = full_key.split("_", 2)
    assert tag == "mq"
    assert len(secret) >= 43  # 32 random bytes, URL-safe base64
    key = ApiKey.objects.get(prefix=prefix)
    assert key.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    stored = " ".join(str(getattr(key, f.name)) for f in ApiKey._meta.fields)
    assert secret not in stored
    assert api_key_authenticate(full_key) == key


def test_two_keys_never_share_a_prefix_or_secret(db):
    keys = [api_key_create(name=f"k{i}", all_workspaces=True)[1] for i in range(20)]
    assert len({k.split("_")[1] for k in keys}) == 20
    assert len(set(keys)) == 20


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer nonsense",
        "Bearer mq_",
        "Bearer mq__",
        "Bearer xx_deadbeef_secret",
        "Bearer mq_deadbeef_secret",  # well-formed, unknown prefix
        "Bearer mq_deadbeef_" + "a" * 5000,
        "Bearer \x00\x01",
    ],
)
def test_missing_malformed_and_unknown_keys_get_the_same_401(db, header):
    client = Client()
    extra = {} if header is None else {"HTTP_AUTHORIZATION": header}
    for method, path in (("post", "/api/schedule-sms"), ("get", "/api/queues"), ("get", "/api/messages/x")):
        response = getattr(client, method)(path, content_type="application/json", **extra)
        assert response.status_code == 401, (header, path)
        assert response.json() == UNAUTHORIZED
    assert Message.objects.count() == 0


def test_a_wrong_secret_and_a_revoked_key_get_the_same_401_as_an_unknown_key(db, monkeypatch):
    # API processes cache keys for API_KEY_CACHE_SECONDS; a revocation made elsewhere (another web
    # process, the database) must take effect within that time. Shortened here to keep the test quick.
    monkeypatch.setattr(workspaces._api_keys, "ttl", 0.5)
    key, full_key = api_key_create(name="victim", all_workspaces=True)
    assert ApiClient(full_key).post("/api/schedule-sms", GOOD).status_code == 202
    wrong_secret = full_key[:-4] + ("aaaa" if not full_key.endswith("aaaa") else "bbbb")
    wrong = ApiClient(wrong_secret).post("/api/schedule-sms", GOOD)
    assert (wrong.status_code, wrong.json()) == (401, UNAUTHORIZED)

    ApiKey.objects.filter(pk=key.pk).update(revoked_at="2026-01-01T00:00:00Z")
    time.sleep(0.6)
    revoked = ApiClient(full_key).post("/api/schedule-sms", GOOD)
    assert (revoked.status_code, revoked.json()) == (401, UNAUTHORIZED)
    assert revoked.content == wrong.content
    assert Message.objects.count() == 1


def test_a_key_revoked_before_its_first_use_is_refused_at_once(db):
    key, full_key = api_key_create(name="never-used", all_workspaces=True)
    ApiKey.objects.filter(pk=key.pk).update(revoked_at="2026-01-01T00:00:00Z")
    response = ApiClient(full_key).get("/api/queues")
    assert (response.status_code, response.json()) == (401, UNAUTHORIZED)


def test_revoking_a_key_in_admin_refuses_it_at_once(superuser):
    key, full_key = api_key_create(name="leaked", all_workspaces=True)
    other, other_full = api_key_create(name="kept", all_workspaces=True)
    response = superuser.post(
        "/admin/messaging/apikey/", {"action": "revoke", "_selected_action": [key.pk]}, follow=True
    )
    assert response.status_code == 200
    assert "Revoked 1 key(s)." in response.content.decode()
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert ApiClient(full_key).post("/api/schedule-sms", GOOD).status_code == 401
    assert ApiClient(other_full).post("/api/schedule-sms", GOOD).status_code == 202


def test_admin_never_shows_or_takes_a_secret_hash(superuser):
    # Keys added in admin get their secret from api_key_create (tests/test_admin.py shows it once).
    add = superuser.get("/admin/messaging/apikey/add/")
    assert add.status_code == 200 and "secret_hash" not in add.content.decode()
    key, _ = api_key_create(name="crm", all_workspaces=True)
    for url in ("/admin/messaging/apikey/", f"/admin/messaging/apikey/{key.pk}/change/"):
        page = superuser.get(url).content.decode()
        assert "secret_hash" not in page and key.secret_hash not in page, url


def test_last_used_at_is_recorded_when_a_key_is_used(db):
    key, full_key = api_key_create(name="crm", all_workspaces=True)
    assert key.last_used_at is None
    ApiClient(full_key).get("/api/queues")
    key.refresh_from_db()
    assert key.last_used_at is not None


def test_a_key_scoped_to_workspace_a_gets_403_for_workspace_b(db):
    key, full_key = api_key_create(name="only-a", workspace_ids=["A"])
    WorkspaceAlias.objects.create(alias="alias-of-a", workspace=Workspace.objects.get(external_id="A"))
    api = ApiClient(full_key)

    refused = api.post("/api/schedule-sms", {**GOOD, "workspaceId": "B"})
    assert refused.status_code == 403
    assert refused.json()["success"] is False
    assert "'B'" in refused.json()["message"]
    assert not Workspace.objects.filter(external_id="B").exists()
    assert Message.objects.count() == 0

    assert api.post("/api/schedule-sms", {**GOOD, "workspaceId": "A"}).status_code == 202
    via_alias = api.post("/api/schedule-sms", {**GOOD, "workspaceId": "alias-of-a"})
    assert via_alias.status_code == 202
    assert Message.objects.get(pk=via_alias.json()["id"]).workspace.external_id == "A"


def test_a_scoped_key_cannot_read_or_cancel_another_workspaces_message(db):
    _, everything = api_key_create(name="all", all_workspaces=True)
    _, only_a = api_key_create(name="only-a", workspace_ids=["A"])
    message_id = (
        ApiClient(everything)
        .post("/api/schedule-sms", {**GOOD, "workspaceId": "B", "delay": 60_000})
        .json()["id"]
    )
    scoped = ApiClient(only_a)
    assert scoped.get(f"/api/messages/{message_id}").status_code == 404
    assert scoped.post(f"/api/messages/{message_id}/cancel", {}).status_code == 404
    assert Message.objects.get(pk=message_id).status == "scheduled"
    assert ApiClient(everything).get(f"/api/messages/{message_id}").status_code == 200


def test_a_scoped_key_gets_403_before_any_other_field_is_validated(db):
    """A key limited to A learns nothing about B from 400s (B's phone region, time zone, ...)."""
    _, only_a = api_key_create(name="only-a", workspace_ids=["A"])
    Workspace.objects.create(external_id="B", default_phone_region="GB", timezone="Europe/London")
    api = ApiClient(only_a)
    # Valid only in B's region, invalid in every other way, or both: always the same 403.
    for body in (
        {**GOOD, "workspaceId": "B", "phoneNumber": "020 7946 0018"},
        {**GOOD, "workspaceId": "B", "phoneNumber": "020 7946 0018", "message": ""},
        {"workspaceId": "B", "scheduledFor": "2030-03-31T01:30:00"},
    ):
        refused = api.post("/api/schedule-sms", body)
        assert refused.status_code == 403, refused.json()
        assert "errors" not in refused.json()
    refused = api.post("/api/ai-response", {"workspace_id": "B", "phone_number": "020 7946 0018"})
    assert refused.status_code == 403
    bulk = api.post("/api/schedule-sms/bulk", {"messages": [{"workspaceId": "B", "message": ""}]})
    message = "This API key may not send for workspace 'B'."
    assert bulk.json()["results"][0]["errors"] == {"workspaceId": [message]}
    # A missing or malformed workspace ID names no workspace: the usual 400 for the fields.
    missing = api.post("/api/schedule-sms", {**GOOD, "workspaceId": None})
    assert missing.status_code == 400
    assert list(missing.json()["errors"]) == ["workspaceId"]
    assert Message.objects.count() == 0


@pytest.mark.parametrize(
    "token",
    [
        "mq_deadbeef_" + "a" * 43,  # well-formed, unknown prefix
        "mq_DEADBEEF_" + "a" * 43,  # not a prefix this service makes
        "mq_dead/../_" + "a" * 43,
    ],
)
def test_an_unknown_key_prefix_costs_at_most_one_query_however_often_it_is_sent(db, token):
    client = Client()
    with CaptureQueriesContext(connection) as queries:
        for _ in range(20):
            response = client.get("/api/queues", HTTP_AUTHORIZATION=f"Bearer {token}")
            assert response.status_code == 401
    assert len(queries) <= 1, [q["sql"] for q in queries]


def test_a_known_key_costs_no_query_to_authenticate_once_cached(db):
    _, full_key = api_key_create(name="crm", all_workspaces=True)
    wrong = full_key[:-4] + ("aaaa" if not full_key.endswith("aaaa") else "bbbb")
    client = Client()
    assert client.get("/api/messages/x", HTTP_AUTHORIZATION=f"Bearer {full_key}").status_code == 404
    with CaptureQueriesContext(connection) as queries:
        for _ in range(20):
            response = client.get("/api/messages/x", HTTP_AUTHORIZATION=f"Bearer {wrong}")
            assert response.status_code == 401
    assert len(queries) == 0, [q["sql"] for q in queries]


def test_a_key_created_after_its_prefix_was_tried_works_at_once(db, monkeypatch):
    client = Client()
    tried = "mq_deadbeef_" + "a" * 43
    assert client.get("/api/queues", HTTP_AUTHORIZATION=f"Bearer {tried}").status_code == 401
    monkeypatch.setattr(workspaces.secrets, "token_hex", lambda n: "deadbeef")
    _, full_key = api_key_create(name="unlucky", all_workspaces=True)
    assert full_key.startswith("mq_deadbeef_")
    assert client.get("/api/queues", HTTP_AUTHORIZATION=f"Bearer {full_key}").status_code == 200

"""API-key scopes fail closed: "every workspace" is an explicit flag, a limited key never widens, and a
key is refused (403) before any field of a workspace outside its scope is validated."""

from __future__ import annotations

import io
import time

import pytest
from django.core.management import CommandError, call_command

from messaging import openapi, workspaces
from messaging.models import ApiKey, Message, Workspace
from messaging.workspaces import api_key_create
from tests.conftest import ApiClient

SMS = {"phoneNumber": "+14155550123", "message": "Hello", "contactId": "c-1", "workspaceId": "A"}
EMAIL = {"to": "r@example.com", "subject": "Hi", "html": "<p>Hi</p>", "contactId": "c-1", "workspaceId": "A"}
AI = {
    "workspace_id": "A",
    "contact_id": "c-1",
    "message_id": "m-1",
    "message_text": "Hello?",
    "callback_url": "https://app.example.com/cb",
    "rate_limit_key": "A:c-1",
}
REFUSED_B = "This API key may not send for workspace 'B'."


@pytest.fixture
def workspace_b(db) -> Workspace:
    """Another client's workspace whose settings a limited key must not learn from 400s."""
    return Workspace.objects.create(external_id="B", default_phone_region="GB", timezone="Europe/London")


def bodies_for(external_id: str) -> list[tuple[str, dict]]:
    """One request per endpoint that names a workspace, each valid only with B's settings (a UK number
    without its country code, a wall-clock time that does not exist in London) or not valid at all."""
    return [
        ("/api/schedule-sms", {**SMS, "workspaceId": external_id, "phoneNumber": "020 7946 0018"}),
        ("/api/schedule-sms", {**SMS, "workspaceId": external_id, "message": ""}),
        ("/api/schedule-email", {**EMAIL, "workspaceId": external_id, "scheduledFor": "2030-03-31T01:30:00"}),
        ("/api/schedule-email", {"workspaceId": external_id}),
        ("/api/ai-response", {**AI, "workspace_id": external_id, "phone_number": "020 7946 0018"}),
        ("/api/ai-response", {"workspace_id": external_id}),
    ]


def assert_refused_everywhere(api: ApiClient, external_id: str) -> None:
    message = f"This API key may not send for workspace {external_id!r}."
    for path, body in bodies_for(external_id):
        response = api.post(path, body)
        assert response.status_code == 403, (path, body, response.json())
        assert response.json() == {"success": False, "message": message}
    bulk = api.post(
        "/api/schedule-sms/bulk",
        {"messages": [body for path, body in bodies_for(external_id) if path == "/api/schedule-sms"]},
    )
    assert bulk.status_code == 400
    for result in bulk.json()["results"]:
        assert result["errors"] == {"workspaceId": [message]}


def test_deleting_the_only_workspace_of_a_limited_key_leaves_it_with_access_to_none(superuser, workspace_b):
    _, everything = api_key_create(name="all", all_workspaces=True)
    key, only_a = api_key_create(name="only-a", workspace_ids=["A"])
    scoped = ApiClient(only_a)
    in_b = ApiClient(everything).post("/api/schedule-sms", {**SMS, "workspaceId": "B", "delay": 60_000})
    assert scoped.post("/api/schedule-email", EMAIL).status_code == 202  # cached with its scope
    Message.objects.filter(workspace__external_id="A").delete()  # a workspace with messages is kept

    workspace_a = Workspace.objects.get(external_id="A")
    deleted = superuser.post(f"/admin/messaging/workspace/{workspace_a.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302
    assert not Workspace.objects.filter(external_id="A").exists()

    assert_refused_everywhere(scoped, "A")
    assert_refused_everywhere(scoped, "B")
    message_id = in_b.json()["id"]
    assert scoped.get(f"/api/messages/{message_id}").status_code == 404
    assert scoped.post(f"/api/messages/{message_id}/cancel", {}).status_code == 404
    assert Message.objects.get(pk=message_id).status == "scheduled"
    assert not Message.objects.filter(api_key=key).exists()
    key.refresh_from_db()
    assert (key.all_workspaces, list(key.workspaces.all())) == (False, [])


def test_a_limited_key_gets_403_before_any_field_of_another_workspace_is_validated(workspace_b):
    _, only_a = api_key_create(name="only-a", workspace_ids=["A"])
    assert_refused_everywhere(ApiClient(only_a), "B")
    assert Message.objects.count() == 0


def test_a_key_for_every_workspace_is_still_told_what_is_wrong_with_the_fields(workspace_b):
    _, everything = api_key_create(name="all", all_workspaces=True)
    api = ApiClient(everything)
    for path, body in bodies_for("B"):
        response = api.post(path, body)
        assert response.status_code in (202, 400), (path, response.json())
    # B's own settings apply: its region reads the UK number, its zone refuses London's skipped hour.
    assert api.post(*bodies_for("B")[0]).status_code == 202
    assert "scheduledFor" in api.post(*bodies_for("B")[2]).json()["errors"]


def test_queue_counts_are_refused_to_a_limited_key(db):
    _, everything = api_key_create(name="all", all_workspaces=True)
    _, only_a = api_key_create(name="only-a", workspace_ids=["A"])
    refused = ApiClient(only_a).get("/api/queues")
    assert refused.status_code == 403
    assert refused.json()["success"] is False
    assert "every workspace" in refused.json()["message"]
    assert ApiClient(everything).get("/api/queues").status_code == 200
    assert "403" in openapi.PATHS["/api/queues"]["get"]["responses"]


def test_removing_a_keys_workspaces_elsewhere_takes_effect_within_the_key_cache_time(db, monkeypatch):
    # Another process (or the database shell) changes the scope; this process learns it when its
    # cached key expires (API_KEY_CACHE_SECONDS, shortened here).
    monkeypatch.setattr(workspaces._api_keys, "ttl", 0.5)
    key, only_a = api_key_create(name="only-a", workspace_ids=["A"])
    api = ApiClient(only_a)
    assert api.post("/api/schedule-sms", SMS).status_code == 202
    key.workspaces.clear()
    time.sleep(0.6)
    assert api.post("/api/schedule-sms", SMS).status_code == 403
    assert api.post("/api/schedule-sms", {**SMS, "workspaceId": "C"}).status_code == 403
    ApiKey.objects.filter(pk=key.pk).update(all_workspaces=True)
    time.sleep(0.6)
    assert api.post("/api/schedule-sms", {**SMS, "workspaceId": "C"}).status_code == 202


def test_a_scope_changed_in_admin_takes_effect_at_once_in_that_process(superuser, workspace_b):
    key, only_a = api_key_create(name="only-a", workspace_ids=["A"])
    api = ApiClient(only_a)
    assert api.post("/api/schedule-sms", SMS).status_code == 202
    form = {"name": key.name, "workspaces": [workspace_b.pk], "revoked_at_0": "", "revoked_at_1": ""}
    changed = superuser.post(f"/admin/messaging/apikey/{key.pk}/change/", form)
    assert changed.status_code == 302, changed.content.decode()[:2000]
    assert api.post("/api/schedule-sms", SMS).status_code == 403
    assert api.post("/api/schedule-sms", {**SMS, "workspaceId": "B"}).status_code == 202


def test_admin_refuses_a_key_both_for_every_workspace_and_limited(superuser, workspace_b):
    key, _ = api_key_create(name="only-a", workspace_ids=["A"])
    form = {
        "name": key.name,
        "all_workspaces": "on",
        "workspaces": [workspace_b.pk],
        "revoked_at_0": "",
        "revoked_at_1": "",
    }
    page = superuser.post(f"/admin/messaging/apikey/{key.pk}/change/", form)
    assert page.status_code == 200
    assert "either every workspace or a list" in page.content.decode()
    key.refresh_from_db()
    assert key.all_workspaces is False


def test_create_api_key_needs_an_explicit_scope(db):
    with pytest.raises(CommandError, match="--all-workspaces or --workspace"):
        call_command("create_api_key", "crm", stdout=io.StringIO())
    with pytest.raises(CommandError, match="not both"):
        call_command("create_api_key", "crm", "--all-workspaces", "--workspace", "A", stdout=io.StringIO())
    assert ApiKey.objects.count() == 0
    with pytest.raises(ValueError):
        api_key_create(name="nothing")

    stdout = io.StringIO()
    call_command("create_api_key", "crm", "--all-workspaces", stdout=stdout)
    assert "for every workspace" in stdout.getvalue()
    stdout = io.StringIO()
    call_command("create_api_key", "shop", "--workspace", "A", stdout=stdout)
    assert "for workspaces A" in stdout.getvalue()
    assert dict(ApiKey.objects.values_list("name", "all_workspaces")) == {"crm": True, "shop": False}


@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_keys_without_workspaces_for_every_workspace_and_limited_keys_limited():
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = (
        [("messaging", "0002_dashboard_rollup_and_indexes")],
        [("messaging", "0003_apikey_all_workspaces")],
    )
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    OldKey, OldWorkspace = old.get_model("messaging", "ApiKey"), old.get_model("messaging", "Workspace")
    OldKey.objects.create(name="everything", prefix="0000aaaa", secret_hash="0" * 64)
    limited = OldKey.objects.create(name="limited", prefix="0000bbbb", secret_hash="0" * 64)
    limited.workspaces.add(OldWorkspace.objects.create(external_id="A"))

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(after)
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert dict(ApiKey.objects.values_list("name", "all_workspaces")) == {
        "everything": True,
        "limited": False,
    }
    Workspace.objects.filter(external_id="A").delete()
    assert ApiKey.objects.get(name="limited").all_workspaces is False

"""Django admin: records only the service writes are read-only; API keys are created there (the key
shown once, with an explicit scope) and revoked there."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from messaging.models import (
    ApiKey,
    DeliveryAttempt,
    IdempotencyRecord,
    MessageStat,
    MessageStatDay,
    MessageStatHour,
    SandboxReceipt,
    Workspace,
)
from messaging.reporting import rollup
from messaging.workspaces import api_key_create
from tests import factories
from tests.conftest import ApiClient

SMS = {"phoneNumber": "+14155550123", "message": "Hi", "contactId": "c-1", "workspaceId": "A"}
KEY_RE = re.compile(r'value="(mq_[0-9a-f]{8}_[A-Za-z0-9_-]{43})"')


@pytest.fixture
def system_rows(db):
    """One row of each model only the service writes: {model: (row, whether deleting is allowed)}."""
    ws = factories.workspace("A", "Admin Co")
    message = factories.message(ws, at=timezone.now() - timedelta(hours=50))
    rollup.stats_refresh()
    key, _ = api_key_create(name="idem", all_workspaces=True)
    return {
        DeliveryAttempt: (message.delivery_attempts.get(), False),
        IdempotencyRecord: (
            IdempotencyRecord.objects.create(
                api_key=key, key="k-1", request_hash="0" * 64, response_status=202
            ),
            False,
        ),
        SandboxReceipt: (
            SandboxReceipt.objects.create(
                endpoint="sms", path="/sandbox/send-sms", payload={}, response_status=200
            ),
            True,
        ),
        MessageStat: (MessageStat.objects.first(), False),
        MessageStatDay: (MessageStatDay.objects.first(), False),
        MessageStatHour: (MessageStatHour.objects.first(), False),
    }


def test_records_only_the_system_writes_can_be_seen_but_not_added_or_edited(superuser, system_rows):
    for model, (row, deletable) in system_rows.items():
        assert row is not None, model
        base = f"/admin/messaging/{model._meta.model_name}/"
        assert superuser.get(base).status_code == 200, model
        assert superuser.get(base + "add/").status_code == 403, model
        before = {f.attname: getattr(row, f.attname) for f in model._meta.concrete_fields}
        page = superuser.get(f"{base}{row.pk}/change/")
        assert page.status_code == 200, model
        assert 'name="_save"' not in page.content.decode(), model  # a view page, no form to save
        assert superuser.post(f"{base}{row.pk}/change/", {}).status_code == 403, model
        row.refresh_from_db()
        assert {f.attname: getattr(row, f.attname) for f in model._meta.concrete_fields} == before, model
        deleted = superuser.post(f"{base}{row.pk}/delete/", {"post": "yes"})
        assert deleted.status_code == (302 if deletable else 403), model
        assert model.objects.filter(pk=row.pk).exists() is not deletable, model


def test_an_api_key_created_in_admin_is_shown_once_and_works(superuser, db):
    response = superuser.post("/admin/messaging/apikey/add/", {"name": "crm", "all_workspaces": "on"})
    assert response.status_code == 200
    page = response.content.decode()
    full_key = KEY_RE.search(page).group(1)
    assert "shown this once" in page
    assert "no-store" in response["Cache-Control"]
    # Not kept anywhere the browser or the server could show it again.
    assert full_key not in str(response.cookies)
    assert full_key not in str(dict(superuser.session))
    key = ApiKey.objects.get()
    assert (key.name, key.all_workspaces, key.revoked_at) == ("crm", True, None)
    assert full_key.split("_")[2] not in str(ApiKey.objects.values().get())
    assert full_key not in superuser.get(f"/admin/messaging/apikey/{key.pk}/change/").content.decode()
    assert full_key not in superuser.get("/admin/messaging/apikey/").content.decode()
    assert ApiClient(full_key).post("/api/schedule-sms", SMS).status_code == 202


def test_an_api_key_created_in_admin_for_some_workspaces_is_limited_to_them(superuser, db):
    a, b = factories.workspace("A"), factories.workspace("B")
    response = superuser.post("/admin/messaging/apikey/add/", {"name": "shop", "workspaces": [a.pk]})
    full_key = KEY_RE.search(response.content.decode()).group(1)
    key = ApiKey.objects.get()
    assert (key.all_workspaces, list(key.workspaces.all())) == (False, [a])
    api = ApiClient(full_key)
    assert api.post("/api/schedule-sms", SMS).status_code == 202
    assert api.post("/api/schedule-sms", {**SMS, "workspaceId": b.external_id}).status_code == 403


@pytest.mark.parametrize(
    ("form", "reason"),
    [
        ({"name": "none"}, "Say which workspaces the key may use"),
        ({"name": "both", "all_workspaces": "on", "workspaces": ["WS"]}, "either every workspace or a list"),
    ],
)
def test_admin_creates_no_key_without_exactly_one_scope(superuser, db, form, reason):
    ws = factories.workspace("A")
    form = {**form, "workspaces": [ws.pk]} if "workspaces" in form else form
    response = superuser.post("/admin/messaging/apikey/add/", form)
    assert response.status_code == 200
    assert reason in response.content.decode()
    assert not KEY_RE.search(response.content.decode())
    assert not ApiKey.objects.exists()


def test_a_key_is_revoked_with_the_button_of_its_page_and_refused_at_once(superuser, db):
    key, full_key = api_key_create(name="old", all_workspaces=True)
    api = ApiClient(full_key)
    assert api.post("/api/schedule-sms", SMS).status_code == 202  # now cached in this process
    change = superuser.get(f"/admin/messaging/apikey/{key.pk}/change/").content.decode()
    revoke_url = f"/admin/messaging/apikey/{key.pk}/revoke/"
    assert f'href="{revoke_url}"' in change
    confirm = superuser.get(revoke_url)
    assert confirm.status_code == 200 and "Yes, revoke it" in confirm.content.decode()
    key.refresh_from_db()
    assert key.revoked_at is None  # a GET changes nothing
    assert superuser.post(revoke_url)["Location"] == f"/admin/messaging/apikey/{key.pk}/change/"
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert api.post("/api/schedule-sms", SMS).status_code == 401
    assert (
        f'href="{revoke_url}"'
        not in superuser.get(f"/admin/messaging/apikey/{key.pk}/change/").content.decode()
    )
    # The time of revocation is not editable: a revoked key stays revoked.
    superuser.post(
        f"/admin/messaging/apikey/{key.pk}/change/",
        {"name": "old", "all_workspaces": "on", "revoked_at_0": "", "revoked_at_1": ""},
    )
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_the_revoke_action_revokes_the_selected_keys(superuser, db):
    keep, keep_full = api_key_create(name="keep", all_workspaces=True)
    drop, drop_full = api_key_create(name="drop", all_workspaces=True)
    response = superuser.post(
        "/admin/messaging/apikey/", {"action": "revoke", "_selected_action": [drop.pk]}, follow=True
    )
    assert "Revoked 1 key(s)." in response.content.decode()
    assert ApiClient(drop_full).post("/api/schedule-sms", SMS).status_code == 401
    assert ApiClient(keep_full).post("/api/schedule-sms", SMS).status_code == 202


def test_a_revoke_page_of_an_unknown_key_is_404_and_anonymous_visitors_go_to_login(superuser, db):
    assert superuser.get("/admin/messaging/apikey/999999/revoke/").status_code == 404
    key, _ = api_key_create(name="x", all_workspaces=True)
    response = Client().post(f"/admin/messaging/apikey/{key.pk}/revoke/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    key.refresh_from_db()
    assert key.revoked_at is None


def workspace_form(**fields: str) -> dict[str, str]:
    """The admin's add-workspace form with an empty alias inline."""
    return {
        "external_id": "66338",
        "name": "",
        "timezone": "UTC",
        "default_phone_region": "",
        "ai_system_prompt": "",
        "aliases-TOTAL_FORMS": "1",
        "aliases-INITIAL_FORMS": "0",
        "aliases-MIN_NUM_FORMS": "0",
        "aliases-MAX_NUM_FORMS": "1000",
        **fields,
    }


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"external_id": "66\n338"}, "printable"),
        ({"external_id": "ws\u200b1"}, "printable"),
        ({"name": "Acme\x1b[31m"}, "printable"),
        ({"default_phone_region": "zz"}, "region"),
        ({"default_phone_region": "us"}, "region"),
        ({"aliases-0-alias": "ali\u202eas"}, "printable"),
    ],
)
def test_the_admin_refuses_a_workspace_the_api_could_not_be_sent(superuser, fields, reason):
    response = superuser.post("/admin/messaging/workspace/add/", workspace_form(**fields))
    assert response.status_code == 200  # the form again, with the error
    assert reason in response.content.decode()
    assert not Workspace.objects.exists()


def test_the_admin_keeps_a_workspace_the_api_can_be_sent(superuser):
    fields = {"external_id": "Équipe 7", "name": "Équipe ✓", "default_phone_region": "FR"}
    response = superuser.post(
        "/admin/messaging/workspace/add/", workspace_form(**fields, **{"aliases-0-alias": "team-7"})
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    workspace = Workspace.objects.get()
    assert (workspace.external_id, workspace.default_phone_region) == ("Équipe 7", "FR")
    assert list(workspace.aliases.values_list("alias", flat=True)) == ["team-7"]
    sms = {**SMS, "workspaceId": "team-7", "phoneNumber": "06 12 34 56 78"}  # FR without +33
    key, full_key = api_key_create(name="t", all_workspaces=True)
    assert ApiClient(full_key).post("/api/schedule-sms", sms).status_code == 202

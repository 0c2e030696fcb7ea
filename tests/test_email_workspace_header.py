"""The Email API's `X-Workspace-Id` header never crashes a delivery: a real worker process sends
email for workspaces whose ids are not ASCII (accepted by the API) or hold a line break (older
rows), with the header percent-encoded (messaging.providers.email.workspace_header)."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from pytest_httpserver import HTTPServer

from messaging import services
from messaging.models import Message, Workspace
from tests.process_control import wait_for
from tests.process_fixtures import all_final, statuses

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]

ENCODED = {
    "łódź": "%C5%82%C3%B3d%C5%BA",
    "工作区": "%E5%B7%A5%E4%BD%9C%E5%8C%BA",
    "bücher": "b%C3%BCcher",
    "66338": "66338",
    "old\r\nX-Injected: yes": "old%0D%0AX-Injected:%20yes",
    " padded ": "%20padded%20",
}
EMAIL = {"to": "r@example.com", "subject": "Hi", "html": "<p>x</p>", "contactId": "c-1"}


@pytest.fixture
def email_api():
    """A real local Email API recording each request's X-Workspace-Id header."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.expect_request("/api/email/send", method="POST").respond_with_json({"id": "em_1"})
    server.start()
    yield server
    server.clear()
    server.stop()


def test_a_worker_delivers_email_for_workspaces_whose_ids_are_not_ascii_or_hold_a_line_break(
    api, processes, email_api
):
    processes.worker(EMAIL_API_URL=email_api.url_for("").rstrip("/"))
    ids = {}
    for external_id in ("łódź", "工作区", "bücher", "66338"):
        response = api.post("/api/schedule-email", {**EMAIL, "workspaceId": external_id})
        assert response.status_code == 202, response.content
        ids[external_id] = response.json()["id"]
    # Rows written before the API refused line breaks and surrounding spaces.
    for external_id in ("old\r\nX-Injected: yes", " padded "):
        old = Workspace.objects.create(external_id=external_id)
        message = services.message_create(
            channel="email",
            workspace_external_id=external_id,
            workspace=old,
            contact_id="c-1",
            recipient="r@example.com",
            subject="Hi",
            body="<p>x</p>",
        )
        ids[external_id] = str(message.pk)

    wait_for(lambda: all_final(list(ids.values())), 30, what="the emails")

    assert set(statuses(list(ids.values())).values()) == {"sent"}
    received = {request.headers["Idempotency-Key"]: request.headers for request, _ in email_api.log}
    for external_id, message_id in ids.items():
        headers = received[message_id]
        assert headers["X-Workspace-Id"] == ENCODED[external_id]
        assert unquote(headers["X-Workspace-Id"]) == external_id
        assert "X-Injected" not in headers
    assert Message.objects.get(pk=ids["łódź"]).attempts == 1


def test_an_ascii_workspace_id_is_sent_unchanged_and_others_percent_encoded():
    from messaging.providers.email import workspace_header

    assert workspace_header("66338") == "66338"
    assert workspace_header("Team A/EU:1") == "Team A/EU:1"
    assert workspace_header("bücher") == "b%C3%BCcher"
    assert workspace_header("50% ü") == "50%25%20%C3%BC"
    assert workspace_header("a\nb") == "a%0Ab"
    assert workspace_header(" padded ") == "%20padded%20"

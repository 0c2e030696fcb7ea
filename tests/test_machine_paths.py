"""Machine endpoints (/api/..., /health, /metrics) take the lean middleware stack of config/wsgi.py;
pages for people keep the full one (sessions, CSRF, Content-Security-Policy, login lockout)."""

from __future__ import annotations

import json

import pytest
from django.test import RequestFactory

from config.wsgi import MachineHandler, application, is_machine_path
from messaging.models import Message
from messaging.workspaces import api_key_create


def call(environ: dict) -> tuple[int, dict[str, str], bytes]:
    """Run the WSGI application on `environ`; return (status, headers, body)."""
    answer: dict = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer["status"], answer["headers"] = int(status.split()[0]), dict(headers)

    body = b"".join(application(environ, start_response))
    return answer["status"], answer["headers"], body


@pytest.mark.parametrize(
    ("path", "machine"),
    [
        ("/api/schedule-sms", True),
        ("/api/", True),
        ("/api/messages/x/cancel", True),
        ("/health", True),
        ("/health/ready", True),
        ("/metrics", True),
        ("/", False),
        ("/healthz", False),
        ("/metricsx", False),
        ("/apix", False),
        ("/admin/login/", False),
        ("/sandbox/send-sms", False),
        ("/dashboard/", False),
    ],
)
def test_which_paths_are_machine_paths(path, machine):
    assert is_machine_path(path) is machine


def test_the_machine_stack_is_the_machine_middleware_only(settings):
    handler = MachineHandler()
    names = {type(m.__self__).__name__ for m in handler._view_middleware}
    # CSRF's process_view (and every other HTML middleware hook) is not on the machine stack.
    assert "CsrfViewMiddleware" not in names
    assert "CsrfViewMiddleware" in {type(m.__self__).__name__ for m in application.full._view_middleware}
    assert settings.MIDDLEWARE != settings.MACHINE_MIDDLEWARE


@pytest.mark.django_db(transaction=True)
def test_api_answers_without_html_middleware_and_stores_the_message():
    _, key = api_key_create(name="lean", all_workspaces=True)
    body = {"phoneNumber": "+14155550123", "message": "Hi", "contactId": "c-1", "workspaceId": "66338"}
    environ = (
        RequestFactory()
        .post(
            "/api/schedule-sms",
            json.dumps(body),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {key}",
        )
        .environ
    )
    status, headers, content = call(environ)
    assert status == 202, content
    assert Message.objects.filter(pk=json.loads(content)["id"]).exists()
    # No Content-Security-Policy, session cookie, Vary: Cookie or X-Frame-Options: none of the HTML stack ran.
    assert "Content-Security-Policy" not in headers
    assert "Set-Cookie" not in headers
    assert "Cookie" not in headers.get("Vary", "")
    assert "X-Frame-Options" not in headers
    # SecurityMiddleware still runs on the machine stack.
    assert headers.get("X-Content-Type-Options") == "nosniff"
    # Never cached, as Django's never_cache would mark it.
    assert headers["Cache-Control"] == "max-age=0, no-cache, no-store, must-revalidate, private"
    assert headers["Expires"].endswith(" GMT")


@pytest.mark.django_db
def test_health_on_the_machine_stack_and_a_page_on_the_full_one():
    status, headers, _ = call(RequestFactory().get("/health").environ)
    assert status == 200
    assert "Content-Security-Policy" not in headers
    status, headers, _ = call(RequestFactory().get("/admin/login/").environ)
    assert status == 200
    assert "Content-Security-Policy" in headers
    assert headers.get("X-Frame-Options") == "DENY"


@pytest.mark.django_db
def test_machine_paths_still_check_the_host_header():
    status, _, content = call(RequestFactory().get("/health", HTTP_HOST="evil.example").environ)
    assert status == 400, content

"""The real `manage.py rqworker` process: it logs its configuration at start (never secrets) and
delivers email and AI jobs with the project's worker class."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.db import connection

from messaging import services
from messaging.delivery.startup import public_url, startup_summary


def database_url() -> str:
    """DATABASE_URL of the database the tests use (so a subprocess sees the same rows)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def run_worker(env_extra: dict[str, str], *options: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DJANGO_ENV": "test",
        "TEST_REDIS_URL": django_settings.REDIS_URL,
        "DATABASE_URL": database_url(),
        **env_extra,
    }
    return subprocess.run(
        [sys.executable, "manage.py", "rqworker", "--burst", *options, "sms", "email", "ai"],
        cwd=django_settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_public_url_drops_credentials_query_and_fragment():
    assert (
        # pragma: allowlist nextline secret (generated or deliberately fake)
        public_url("https://user:pw@ai.example.test:8443/v1?key=abc#x") == "https://ai.example.test:8443/v1"
    )
    assert public_url("http://[::1]:9/x") == "http://[::1]:9/x"
    assert public_url("") == ""


def test_the_summary_names_queues_retry_policy_limits_and_providers(settings):
    settings.AI_API_URL = ""
    lines = "\n".join(startup_summary(["sms", "email", "ai"]))
    assert "Queues: sms, email, ai" in lines
    assert f"Retry policy: {settings.DELIVERY_MAX_ATTEMPTS} attempts per message" in lines
    assert "delivery sms 50/second, email 100/second, ai 10/second" in lines
    assert "per rate_limit_key 5/minute, per workspace 100/minute" in lines
    assert "AI simulated (AI_API_URL not set)" in lines


@pytest.mark.django_db(transaction=True)
def test_the_rqworker_command_logs_its_configuration_without_secrets_and_delivers(email_provider, settings):
    ai_key = "sk-" + secrets.token_urlsafe(24)
    url_password = secrets.token_urlsafe(12)
    signing = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    email_provider.expect_request("/api/email/send").respond_with_json({"id": "em_9"})
    message = services.message_create(
        channel="email",
        workspace_external_id="66338",
        recipient="a@example.com",
        subject="Hi",
        body="<p>x</p>",
    )

    process = run_worker(
        {
            "EMAIL_API_URL": settings.EMAIL_API_URL,
            "AI_API_URL": f"https://bot:{url_password}@ai.example.test/v1?api_key={url_password}",
            "AI_API_KEY": ai_key,
            "CALLBACK_SIGNING_SECRET": signing,
            "DELIVERY_RATE_SMS": "20/second",
        }
    )

    output = process.stdout + process.stderr
    assert process.returncode == 0, output
    assert "Queues: sms, email, ai" in output
    assert "Retry policy: 3 attempts per message" in output
    assert "delivery sms 20/second, email 100/second, ai 10/second" in output
    assert f"email {settings.EMAIL_API_URL}/api/email/send" in output
    assert "AI https://ai.example.test/v1/chat/completions" in output
    assert "AI API key set" in output
    assert "signing on (Standard Webhooks)" in output
    for secret in (ai_key, url_password, signing, signing.removeprefix("whsec_")):
        assert secret not in output
    message.refresh_from_db()
    assert message.status == "sent"
    assert message.provider_message_id == "em_9"


def test_a_malformed_signing_secret_or_rate_stops_the_process_at_start():
    for extra, expected in [
        # pragma: allowlist nextline secret (generated or deliberately fake)
        ({"CALLBACK_SIGNING_SECRET": "not base64!"}, "CALLBACK_SIGNING_SECRET"),
        # pragma: allowlist nextline secret (generated or deliberately fake)
        ({"CALLBACK_SIGNING_SECRET": "whsec_" + base64.b64encode(b"short").decode()}, "24 to 64"),
        ({"DELIVERY_RATE_SMS": "fast"}, "DELIVERY_RATE_SMS"),
    ]:
        env = {**os.environ, "DJANGO_ENV": "test", **extra}
        process = subprocess.run(
            [sys.executable, "manage.py", "check"],
            cwd=django_settings.BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert process.returncode != 0
        assert "ImproperlyConfigured" in process.stderr and expected in process.stderr, process.stderr


@pytest.mark.django_db(transaction=True)
def test_the_concurrency_option_sets_how_many_deliveries_a_worker_keeps_in_flight():
    process = run_worker({}, "--concurrency", "5")
    assert process.returncode == 0, process.stderr
    assert "up to 5 deliveries in flight" in process.stdout + process.stderr
    forking = run_worker({}, "--worker-class", "messaging.worker.ForkWorker", "--concurrency", "5")
    assert "runs one job at a time; --concurrency is ignored" in forking.stdout + forking.stderr
    assert "one job at a time" in forking.stdout + forking.stderr

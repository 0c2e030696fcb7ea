"""GET /metrics: Prometheus text with django-rq's numbers and message counts, behind a token."""

from __future__ import annotations

import secrets

import pytest
from prometheus_client.parser import text_string_to_metric_families

from messaging import queues

GOOD = {"phoneNumber": "+14155550123", "message": "Hello", "contactId": "c-1", "workspaceId": "66338"}


@pytest.fixture
def token(settings):
    settings.METRICS_TOKEN = secrets.token_urlsafe(24)
    return settings.METRICS_TOKEN


def samples(response) -> dict[tuple, float]:
    found = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_do_not_exist_without_a_token_configured(client, db, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404


def test_metrics_need_the_token(client, db, token):
    assert client.get("/metrics").status_code == 401
    last = "y" if token.endswith("x") else "x"  # a token that differs from the real one
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer " + token[:-1] + last)
    assert wrong.status_code == 401
    assert wrong["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db(transaction=True)
def test_metrics_export_message_counts_by_channel_and_status_and_rq_numbers(client, api, token):
    api.post("/api/schedule-sms", GOOD)
    api.post("/api/schedule-sms", GOOD)
    api.post("/api/schedule-sms", {**GOOD, "delay": 60_000})
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    found = samples(response)
    assert found[("queue_messages", (("channel", "sms"), ("status", "queued")))] == 2
    assert found[("queue_messages", (("channel", "sms"), ("status", "scheduled")))] == 1
    assert found[("queue_messages", (("channel", "email"), ("status", "sent")))] == 0
    assert found[("queue_redis_up", ())] == 1
    assert found[("rq_jobs", (("queue", "sms"), ("status", "queued")))] == 2


def test_metrics_still_answer_with_database_counts_when_redis_is_down(client, api, token, settings):
    api.post("/api/schedule-sms", GOOD)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.RQ_QUEUES = {name: {"URL": settings.REDIS_URL} for name in settings.RQ_QUEUES}
    queues.reset_connection()
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    found = samples(response)
    assert found[("queue_redis_up", ())] == 0
    assert found[("queue_messages", (("channel", "sms"), ("status", "queued")))] == 1
    assert not any(name.startswith("rq_") for name, _ in found)

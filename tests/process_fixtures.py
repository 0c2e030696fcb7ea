"""Fixtures and helpers for tests that run real worker and scheduler processes: a redis-server the
test owns (so it can stop and start it), a threaded local HTTP server as the SMS provider that records
every request, short timeouts, and the invariant every such test ends with."""

from __future__ import annotations

import json
import time

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from messaging import queues
from messaging.models import Message
from tests.process_control import ProviderLog, RedisServer, process_env, rqscheduler, rqworker, wait_for

GOOD = {"phoneNumber": "+14155550123", "message": "Hello", "contactId": "c-1", "workspaceId": "66338"}
FINAL = {"sent", "failed", "cancelled"}


@pytest.fixture
def redis_server(settings):
    server = RedisServer().start()
    settings.REDIS_URL = server.url
    settings.RQ_QUEUES = {name: {**config, "URL": server.url} for name, config in settings.RQ_QUEUES.items()}
    queues.reset_connection()
    yield server
    queues.reset_connection()
    server.close()


@pytest.fixture
def provider(settings):
    """Threaded fake SMS API. `provider.first_call_seconds` makes each message's first call that slow;
    `provider.delay_seconds` every call."""
    log = ProviderLog()
    log.first_call_seconds = 0.0
    log.delay_seconds = 0.0
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)

    def handler(request):
        key = request.headers.get("Idempotency-Key", "")
        first = key not in log.by_key()
        log.add(key)
        log.enter()
        try:
            if first and log.first_call_seconds:
                time.sleep(log.first_call_seconds)
            if log.delay_seconds:
                time.sleep(log.delay_seconds)
        finally:
            log.leave()
        return Response(json.dumps({"id": f"p-{key[:8]}"}), status=200, content_type="application/json")

    server.expect_request("/send-sms", method="POST").respond_with_handler(handler)
    server.start()
    settings.SMS_API_URL = server.url_for("").rstrip("/")
    yield log
    server.clear()
    server.stop()


@pytest.fixture
def timing(settings):
    """Short job timeout and sweep periods so recovery is observable within seconds."""
    settings.RQ_JOB_TIMEOUT = 8
    settings.PROVIDER_CONNECT_TIMEOUT = 1
    settings.PROVIDER_READ_TIMEOUT = 5
    settings.SWEEP_INTERVAL_SECONDS = 1
    settings.SWEEP_GRACE_SECONDS = 1
    settings.SWEEP_SENDING_GRACE_SECONDS = 2
    return settings


@pytest.fixture
def processes(transactional_db, redis_server, provider, timing):
    """Start worker/scheduler processes for a test; every one is killed (with its group) at the end."""
    started = []
    env = process_env(
        redis_server.url,
        SWEEP_INTERVAL_SECONDS=timing.SWEEP_INTERVAL_SECONDS,
        SWEEP_GRACE_SECONDS=timing.SWEEP_GRACE_SECONDS,
        SWEEP_SENDING_GRACE_SECONDS=timing.SWEEP_SENDING_GRACE_SECONDS,
        # An AI job (generation then callback) must fit in the short job timeout too.
        AI_READ_TIMEOUT=2,
        CALLBACK_CONNECT_TIMEOUT=1,
        CALLBACK_READ_TIMEOUT=2,
    )

    class Processes:
        def worker(self, worker_class: str = "", **extra: str):
            started.append(rqworker({**env, **extra}, worker_class=worker_class))
            wait_for(lambda: "Listening on" in started[-1].output(), 30, what="the worker to start")
            return started[-1]

        def scheduler(self):
            started.append(rqscheduler(env))
            wait_for(lambda: "Registering birth" in started[-1].output(), 30, what="the scheduler to start")
            return started[-1]

    yield Processes()
    for process in started:
        process.stop()


def statuses(ids) -> dict[str, str]:
    return {str(pk): status for pk, status in Message.objects.filter(pk__in=ids).values_list("pk", "status")}


def all_final(ids) -> bool:
    found = statuses(ids)
    return set(found.values()) <= FINAL and len(found) == len(ids)


def assert_invariant(ids: list[str], provider: ProviderLog) -> None:
    """Every accepted message is final, and was received at most `attempts` times by the provider."""
    received = provider.by_key()
    for message in Message.objects.filter(pk__in=ids):
        assert message.status in FINAL, (message.pk, message.status)
        assert received.get(str(message.pk), 0) <= message.attempts, (message.pk, received, message.attempts)
    assert Message.objects.filter(pk__in=ids).count() == len(ids)


def called_more_than_once(provider: ProviderLog) -> dict[str, list[tuple]]:
    """Messages the provider received more than once, with their attempts (number, outcome, error):
    the explanation a failing "each once" assertion prints."""
    from messaging.models import DeliveryAttempt

    again = [key for key, count in provider.by_key().items() if count > 1]
    found: dict[str, list[tuple]] = {key: [] for key in again}
    attempts = DeliveryAttempt.objects.filter(message_id__in=again).order_by("message_id", "number")
    for attempt in attempts.values_list(
        "message_id", "number", "outcome", "error_kind", "error", "started_at"
    ):
        found[str(attempt[0])].append(attempt[1:])
    for pk, count in Message.objects.filter(pk__in=again).values_list("pk", "attempts"):
        found[str(pk)].append(("attempts", count))
    for _, epoch, key in provider.arrivals:
        if key in found:
            found[key].append(("arrived", epoch))
    return found


def post(api, n: int = 1, **fields) -> list[str]:
    ids = []
    for i in range(n):
        response = api.post("/api/schedule-sms", {**GOOD, "contactId": f"c-{i}", **fields})
        assert response.status_code == 202, response.content
        ids.append(response.json()["id"])
    return ids


def in_flight(provider: ProviderLog, message_id: str) -> bool:
    return provider.by_key().get(message_id, 0) >= 1

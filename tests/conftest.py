"""Shared fixtures: real Redis (a test database that is flushed), real local HTTP providers."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.test import Client
from rq import SimpleWorker

from messaging import queues, services
from messaging.delivery import senders
from messaging.devtools import localredis
from messaging.devtools.supervisor import parent_death_signal
from messaging.models import Message
from messaging.providers.base import http_session_close
from messaging.workspaces import api_key_create

# Fixtures for tests that run real worker and scheduler processes (redis_server, provider, timing,
# processes).
pytest_plugins = ["tests.process_fixtures"]


@pytest.fixture(autouse=True)
def caches_clean():
    """Per-process caches (API keys, workspaces) start empty in every test."""
    from messaging.lib import ttlcache

    ttlcache.clear_all()
    yield
    ttlcache.clear_all()
    # Batch jobs run in the process's delivery threads; they must not keep test-database connections.
    senders.pool_shutdown()
    # A keep-alive connection to a live-server provider would keep its request thread, and that
    # thread's database connection, open after the test.
    http_session_close()
    # The group committer's thread holds a database session of its own; stopped, it closes it (the
    # next store starts a new thread), so the test database can be flushed and dropped.
    services._committer.stop()


@pytest.fixture(scope="session", autouse=True)
def redis_for_the_run():
    """A fresh machine: when no Redis answers at the test URL and it is local, start redis-server (installed
    from the system's packages if missing) for this run, and stop it at the end."""
    url = settings.REDIS_URL
    if localredis.redis_answers(url) or not localredis.is_local(url):
        yield
        return
    server = localredis.redis_server_install()
    assert server, f"no Redis answers at {url} and redis-server could not be installed"
    process = subprocess.Popen(
        localredis.redis_server_argv(server, url),
        stdout=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=parent_death_signal,  # stops with the test run, even a killed one
    )
    try:
        assert localredis.wait_until_answers(url), f"redis-server started for {url} does not answer"
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(autouse=True)
def redis_clean():
    """Every test starts with an empty test Redis database (TEST_REDIS_URL, db 15 by default)."""
    queues.reset_connection()
    connection = queues.get_connection()
    connection.flushdb()
    yield connection
    connection.flushdb()


@pytest.fixture(scope="session")
def make_httpserver():
    """pytest-httpserver's server, but threaded: real providers answer concurrent calls."""
    from pytest_httpserver import HTTPServer

    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


@pytest.fixture
def api_key(db) -> str:
    """A fresh, unscoped API key (the full secret)."""
    return api_key_create(name="tests", all_workspaces=True)[1]


class ApiClient:
    """Django test client that sends JSON with a Bearer key."""

    def __init__(self, key: str):
        self.client = Client()
        self.key = key

    def post(
        self, path: str, body=None, *, raw: bytes | None = None, content_type="application/json", headers=None
    ):
        data = raw if raw is not None else json.dumps(body)
        extra = {"HTTP_AUTHORIZATION": f"Bearer {self.key}"} if self.key else {}
        for name, value in (headers or {}).items():
            extra["HTTP_" + name.upper().replace("-", "_")] = value
        return self.client.post(path, data=data, content_type=content_type, **extra)

    def get(self, path: str):
        extra = {"HTTP_AUTHORIZATION": f"Bearer {self.key}"} if self.key else {}
        return self.client.get(path, **extra)


@pytest.fixture
def api(api_key) -> ApiClient:
    return ApiClient(api_key)


@pytest.fixture
def workspace_lookups(monkeypatch) -> list[str]:
    """Every workspace ID or alias looked up (workspaces.workspace_lookup) during the test, in order."""
    from messaging import workspaces

    looked_up: list[str] = []
    lookup = workspaces.workspace_lookup

    def counting(external_id: str):
        looked_up.append(external_id)
        return lookup(external_id)

    monkeypatch.setattr(workspaces, "workspace_lookup", counting)
    return looked_up


@pytest.fixture
def sms_provider(httpserver, settings):
    """A real local HTTP server acting as the SMS API; SMS_API_URL points at it."""
    settings.SMS_API_URL = httpserver.url_for("").rstrip("/")
    return httpserver


def run_jobs(until: Callable[[], bool] | None = None, timeout: float = 15.0) -> None:
    """Run the scheduler and a burst SimpleWorker on all queues until `until()` holds or nothing is left.

    Repeats: move due scheduled jobs onto their queues, then work the queues dry. Without `until`,
    stops once no job is queued or scheduled.
    """
    connection = queues.get_connection()
    scheduler = queues.get_scheduler()
    worker_queues = [queues.get_queue(name) for name in queues.QUEUE_NAMES]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        scheduler.enqueue_jobs()
        SimpleWorker(worker_queues, connection=connection).work(burst=True)
        if until is not None:
            if until():
                return
        elif not connection.zcard("rq:scheduler:scheduled_jobs") and not any(q.count for q in worker_queues):
            return
        time.sleep(0.05)
    raise AssertionError("jobs did not finish in time")


def message_status(message_id: str) -> str:
    return Message.objects.get(pk=message_id).status


@pytest.fixture
def fixtures_file():
    path = settings.BASE_DIR / "tests" / "fixtures" / "earlier-service-requests.json"
    return json.loads(path.read_text())


@pytest.fixture
def email_provider(httpserver, settings):
    """A real local HTTP server acting as the Email API; EMAIL_API_URL points at it."""
    settings.EMAIL_API_URL = httpserver.url_for("").rstrip("/")
    return httpserver


@pytest.fixture
def callback_server(httpserver, settings):
    """The local HTTP server as a callback target: its host:port is allow-listed past the SSRF guard."""
    settings.CALLBACK_ALLOWED_HOSTS = [urlsplit(httpserver.url_for("/")).netloc]
    return httpserver


@pytest.fixture
def signing_secret(settings) -> str:
    """A freshly generated Standard Webhooks secret, set as CALLBACK_SIGNING_SECRET."""
    # pragma: allowlist nextline secret (generated or deliberately fake)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    settings.CALLBACK_SIGNING_SECRET = secret
    return secret


@pytest.fixture
def staff(db) -> Client:
    """A test client logged in as a staff user (the dashboard's audience; not a superuser)."""
    from tests import factories

    client = Client()
    client.force_login(factories.user("staff-user"))
    return client


@pytest.fixture
def superuser(db) -> Client:
    """A test client logged in as a superuser: a refusal it gets comes from the code under test, not
    from a missing permission."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_superuser("root", password=secrets.token_hex(16))
    client = Client()
    client.force_login(user)
    return client

"""The callback SSRF guard (messaging.lib.netguard) against redirects, DNS answers that change, IPv6 forms
and non-http schemes, through the API and the worker. tests/test_netguard.py covers the guard's parts."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from pytest_httpserver import HTTPServer

from messaging.lib import netguard
from messaging.models import Message
from messaging.providers.base import ProviderError
from messaging.providers.callback import CallbackClient
from tests import factories
from tests.conftest import ApiClient, run_jobs

GOOD = {
    "workspace_id": "66338",
    "contact_id": "c-1",
    "message_id": "m-1",
    "message_text": "What are your opening hours?",
    "callback_url": "https://app.example.com/api/ai-response/callback",
    "rate_limit_key": "66338:c-1",
}


def ai_request(api: ApiClient, callback_url: str, n: int = 1) -> str:
    response = api.post(
        "/api/ai-response",
        {**GOOD, "callback_url": callback_url, "message_id": f"m-{n}", "rate_limit_key": f"k{n}"},
    )
    assert response.status_code == 202, response.json()
    return response.json()["id"]


def finished(*ids: str):
    return lambda: Message.objects.filter(pk__in=ids, status__in=("sent", "failed")).count() == len(ids)


@pytest.fixture
def internal_server():
    """Stands for a service on the private network: not allow-listed, must never be reached."""
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    server.expect_request("/admin").respond_with_json({"internal": "data only the private network may read"})
    yield server
    server.clear()
    server.stop()


# --- Redirects ------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_no_redirect_is_followed_to_an_internal_or_metadata_address(api, callback_server, internal_server):
    targets = {
        301: internal_server.url_for("/admin"),
        302: "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        303: internal_server.url_for("/admin"),
        307: "http://[::1]/admin",
        308: internal_server.url_for("/admin"),
    }
    ids = {}
    for n, (status, location) in enumerate(targets.items(), 1):
        callback_server.expect_request(f"/r{status}").respond_with_data(
            "", status=status, headers={"Location": location}
        )
        ids[status] = ai_request(api, callback_server.url_for(f"/r{status}"), n)

    run_jobs(until=finished(*ids.values()))

    for status, message_id in ids.items():
        message = Message.objects.get(pk=message_id)
        assert (message.status, message.attempts) == ("failed", 1), status  # permanent: not retried
        attempt = message.delivery_attempts.get(kind="callback")
        assert (attempt.http_status, attempt.outcome) == (status, "permanent")
        assert targets[status] in attempt.error
    assert internal_server.log == []
    assert len([r for r, _ in callback_server.log if r.path.startswith("/r")]) == len(targets)


# --- DNS answers at send time ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("host", ["localhost", "LOCALHOST"])
def test_a_name_that_resolves_to_loopback_at_send_time_is_refused_there(api, internal_server, settings, host):
    port = internal_server.port
    settings.CALLBACK_ALLOWED_HOSTS = [f"localhost:{port}"]  # accepted at the API while allow-listed
    message_id = ai_request(api, f"http://{host}:{port}/admin")
    settings.CALLBACK_ALLOWED_HOSTS = []

    run_jobs(until=finished(message_id))

    message = Message.objects.get(pk=message_id)
    assert (message.status, message.error_kind) == ("failed", "refused_url")
    assert "localhost resolves to 127.0.0.1, which is a loopback address" in message.last_error
    assert internal_server.log == []


class FakeResolver:
    """The outside world's DNS, answering `host` with the next address of `answers` (the last repeats).

    Other names go to the real resolver. Stands in for a DNS server that changes its answer between
    the API's check and the worker's call (DNS rebinding).
    """

    def __init__(self, host: str, answers: list[list[str]]):
        self.host, self.answers, self.calls = host, answers, 0
        self.real = socket.getaddrinfo

    def __call__(self, host, port, *args, **kwargs):
        if host != self.host:
            return self.real(host, port, *args, **kwargs)
        addresses = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, port or 80, 0, 0) if ":" in a else (a, port or 80),
            )
            for a in addresses
        ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("private", ["10.0.0.7", "169.254.169.254", "127.0.0.1", "::1", "fd00::7"])
def test_a_name_that_is_public_at_the_api_and_private_at_send_time_is_refused_at_send_time(
    api, monkeypatch, private
):
    resolver = FakeResolver("rebind.example.com", [["93.184.215.14"], [private]])
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    message_id = ai_request(api, "http://rebind.example.com/cb")
    assert resolver.calls == 1

    run_jobs(until=finished(message_id))

    message = Message.objects.get(pk=message_id)
    assert (message.status, message.error_kind) == ("failed", "refused_url")
    assert f"rebind.example.com resolves to {private}" in message.last_error
    assert resolver.calls == 2
    attempt = message.delivery_attempts.get(kind="callback")
    assert attempt.http_status is None  # refused before any connection


def test_a_name_with_any_private_address_among_its_answers_is_refused_at_the_api(api, monkeypatch):
    monkeypatch.setattr(
        socket, "getaddrinfo", FakeResolver("mixed.example.com", [["93.184.215.14", "10.1.2.3"]])
    )
    response = api.post("/api/ai-response", {**GOOD, "callback_url": "https://mixed.example.com/cb"})
    assert response.status_code == 400
    assert "resolves to 10.1.2.3, which is a private address" in response.json()["errors"]["callback_url"][0]


# --- IPv6 forms and schemes at the API ------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://[::]/cb", "unspecified"),
        ("http://[0:0:0:0:0:0:0:1]/cb", "loopback"),
        ("http://[0000::0001]:8080/cb", "loopback"),
        ("https://[::1]:443/cb", "loopback"),
        ("http://[::127.0.0.1]/cb", "IPv6 form of 127.0.0.1"),  # IPv4-compatible
        ("http://[::ffff:10.0.0.1]/cb", "IPv6 form of 10.0.0.1"),  # IPv4-mapped, dotted
        ("http://[2002:a9fe:a9fe::]/latest", "IPv6 form of 169.254.169.254"),  # 6to4
        ("http://[64:ff9b::a9fe:a9fe]/latest", "IPv6 form of 169.254.169.254"),  # NAT64
        ("http://[::ffff:0:7f00:1]/cb", "reserved"),  # IPv4-translated
        ("http://[fe80::1]/cb", "link-local"),
        ("http://[fe80::1%25eth0]/cb", "zone"),  # link-local with a zone id
        ("http://[fc00::1]/cb", "private"),
        ("http://[ff02::1]/cb", "multicast"),
        ("http://[2001:db8::1]/cb", "private"),  # documentation range
    ],
)
def test_ipv6_forms_of_internal_addresses_are_refused_at_the_api(api, url, reason):
    response = api.post("/api/ai-response", {**GOOD, "callback_url": url})
    assert response.status_code == 400, response.json()
    assert reason in response.json()["errors"]["callback_url"][0]
    assert Message.objects.count() == 0


@pytest.mark.parametrize(
    "url",
    [
        "gopher://app.example.com:70/_x",
        "dict://127.0.0.1:11211/stats",
        "ldap://app.example.com/",
        "ftp://app.example.com/cb",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "data:text/plain,hello",
        "jar:http://app.example.com/x.jar!/",
        "//app.example.com/cb",  # scheme-relative
        "http:/app.example.com/cb",
        "http:app.example.com/cb",
        "ws://app.example.com/cb",
    ],
)
def test_non_http_schemes_are_refused_at_the_api(api, url):
    response = api.post("/api/ai-response", {**GOOD, "callback_url": url})
    assert response.status_code == 400, response.json()
    assert list(response.json()["errors"]) == ["callback_url"]
    assert Message.objects.count() == 0


@pytest.mark.parametrize(
    "url",
    [
        "HTTP://127.0.0.1/cb",
        "http://127.0.0.1\\@app.example.com/cb",
        "http://app.example.com@127.0.0.1/cb",
        "http://127.0.0.1#@app.example.com/cb",
        "http://127.000.000.001/cb",
        "http://017700000001/cb",
        "http://0/cb",
        " http://127.0.0.1/cb",
    ],
)
def test_parser_confusions_do_not_smuggle_an_internal_host(api, url):
    response = api.post("/api/ai-response", {**GOOD, "callback_url": url})
    assert response.status_code == 400, response.json()
    assert Message.objects.count() == 0


# --- Slow DNS ---------------------------------------------------------------------------------------


class SlowResolver:
    """Answers `host` (with a public address) only after `seconds`, or once released: a hostile
    client's name server that takes its time. Other names go to the real resolver."""

    def __init__(self, host: str, seconds: float):
        self.host, self.seconds, self.real = host, seconds, socket.getaddrinfo
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, host, port, *args, **kwargs):
        if host != self.host:
            return self.real(host, port, *args, **kwargs)
        self.calls += 1
        self.release.wait(self.seconds)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port or 80))]


@pytest.fixture
def slow_dns(monkeypatch, settings):
    settings.CALLBACK_RESOLVE_TIMEOUT_SECONDS = 0.3
    resolver = SlowResolver("slow.example.com", 5.0)
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    yield resolver
    resolver.release.set()


def test_a_slow_name_server_holds_an_api_request_no_longer_than_the_resolve_timeout(api, slow_dns):
    started = time.monotonic()
    message_id = ai_request(api, "https://slow.example.com/cb")  # accepted; checked again at send
    assert time.monotonic() - started < 2.0
    assert slow_dns.calls == 1
    assert Message.objects.get(pk=message_id).callback_url == "https://slow.example.com/cb"


@pytest.mark.django_db
def test_a_slow_name_server_makes_a_callback_a_quick_transient_dns_error(slow_dns):
    message = factories.message(channel="ai", status="queued", callback_url="https://slow.example.com/cb")
    started = time.monotonic()
    with pytest.raises(ProviderError) as raised:
        CallbackClient().send(message)
    assert time.monotonic() - started < 2.0
    result = raised.value.result
    assert (result.transient, result.error_kind) == (True, "dns_error")
    assert "no answer within 0.3 s" in result.error


def test_lookups_stuck_at_a_slow_name_server_are_capped_and_the_next_one_fails_at_once(slow_dns, monkeypatch):
    monkeypatch.setattr(netguard, "_lookup_slots", threading.BoundedSemaphore(2))
    for _ in range(2):  # each gives up after 0.3 s, but its thread stays at the name server
        with pytest.raises(netguard.UnresolvableHost):
            netguard.resolve("slow.example.com", 443, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(netguard.UnresolvableHost, match="lookups in flight"):
        netguard.resolve("slow.example.com", 443, timeout=0.3)
    assert time.monotonic() - started < 0.2
    assert slow_dns.calls == 2
    slow_dns.release.set()  # the name server answers at last: the slots are free again
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            assert netguard.resolve("slow.example.com", 443, timeout=1.0)
            break
        except netguard.UnresolvableHost:
            time.sleep(0.05)
    else:
        pytest.fail("the lookup slots were not given back")

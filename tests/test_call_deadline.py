"""Every outbound call has a total deadline: a receiver that answers a byte at a time (in the status
line, the headers, the body, or a TLS handshake) is cut off when the deadline passes, however short
the gaps between bytes, and the call is a transient attempt of kind `deadline_exceeded`."""

from __future__ import annotations

import ipaddress
import ssl
import time

import pytest
import requests
import trustme

from messaging.lib import netguard
from messaging.lib.deadline import DeadlineAdapter
from messaging.providers.base import ProviderClient
from tests.drip import OK_HEAD, DripServer


@pytest.fixture
def drip_servers():
    made: list[DripServer] = []

    def make(*args, **kwargs) -> DripServer:
        made.append(DripServer(*args, **kwargs))
        return made[-1]

    yield make
    for server in made:
        server.close()


def call(url: str, *, deadline: float = 1.0, session=None, read_timeout: float = 5.0):
    client = ProviderClient(connect_timeout=2, read_timeout=read_timeout, deadline=deadline)
    started = time.monotonic()
    result = client.post_bytes(url, b"{}", headers={"Content-Type": "application/json"}, session=session)
    return result, time.monotonic() - started


def assert_cut_off_at(result, elapsed: float, deadline: float) -> None:
    assert (result.ok, result.transient, result.error_kind) == (False, True, "deadline_exceeded")
    assert f"No complete answer within {deadline:g} s (PROVIDER_DEADLINE_SECONDS" in result.error
    assert deadline - 0.05 <= elapsed < deadline + 1.0, elapsed
    assert deadline * 1000 - 50 <= result.duration_ms < (deadline + 1.0) * 1000


def test_a_status_line_sent_a_byte_at_a_time_is_cut_off_at_the_deadline(drip_servers):
    server = drip_servers([[(OK_HEAD + b"{}" * 50, 0.1)]])  # each gap far below the read timeout

    result, elapsed = call(f"http://127.0.0.1:{server.port}/send-sms", deadline=1.0)

    assert_cut_off_at(result, elapsed, 1.0)
    assert result.http_status is None


def test_a_body_sent_a_byte_at_a_time_is_cut_off_at_the_deadline(drip_servers):
    # The head arrives at once, then the body drips (requests' read timeout never triggers).
    server = drip_servers([[(OK_HEAD, 0), (b"{}" * 50, 0.1)]])

    result, elapsed = call(f"http://127.0.0.1:{server.port}/send-sms", deadline=1.0)

    assert_cut_off_at(result, elapsed, 1.0)


def test_a_kept_alive_connection_is_cut_off_on_its_next_call(drip_servers):
    fast = OK_HEAD.replace(b"100", b"2") + b"{}"
    server = drip_servers([[(fast, 0)], [(OK_HEAD + b"{}" * 50, 0.1)]])
    session = requests.Session()
    session.mount("http://", DeadlineAdapter())
    url = f"http://127.0.0.1:{server.port}/send-sms"

    first, _ = call(url, session=session)
    second, elapsed = call(url, deadline=1.0, session=session)

    assert first.ok and first.response_text == "{}"
    assert server.connections == 1 and server.requests == 2  # the same connection, reused
    assert_cut_off_at(second, elapsed, 1.0)
    session.close()


@pytest.fixture
def tls():
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("callback.test").configure_cert(context)
    with ca.cert_pem.tempfile() as ca_file:
        yield context, ca_file


def _pinned(port: int, scheme: str = "https"):
    target = netguard.Target(
        f"{scheme}://callback.test:{port}/cb",
        scheme,
        "callback.test",
        port,
        (ipaddress.ip_address("127.0.0.1"),),
    )
    return netguard.pinned_request(target)


def test_a_tls_answer_sent_a_byte_at_a_time_through_the_pinned_callback_session_is_cut_off(drip_servers, tls):
    context, ca_file = tls
    server = drip_servers([[(OK_HEAD + b"{}" * 50, 0.1)]], tls=context)
    session, url, _headers = _pinned(server.port)
    session.verify = ca_file

    result, elapsed = call(url, deadline=1.0, session=session)

    assert server.requests == 1  # the handshake succeeded, the answer dripped
    assert_cut_off_at(result, elapsed, 1.0)
    session.close()


def test_a_tls_handshake_sent_a_byte_at_a_time_is_cut_off_at_the_deadline(drip_servers, tls):
    _context, ca_file = tls
    server = drip_servers([], handshake_drip=True)
    session, url, _headers = _pinned(server.port)
    session.verify = ca_file

    result, elapsed = call(url, deadline=1.0, session=session)

    assert_cut_off_at(result, elapsed, 1.0)
    session.close()


def test_a_complete_answer_within_the_deadline_is_not_affected(drip_servers):
    server = drip_servers([[(OK_HEAD.replace(b"100", b"8") + b'{"id":1}', 0.01)]])

    result, elapsed = call(f"http://127.0.0.1:{server.port}/send-sms", deadline=5.0)

    assert (result.ok, result.http_status, result.response_text) == (True, 200, '{"id":1}')
    assert elapsed < 3


def test_a_silent_receiver_is_cut_off_at_the_deadline_when_it_is_shorter_than_the_read_timeout(drip_servers):
    server = drip_servers([[(b"", 10)]])

    result, elapsed = call(f"http://127.0.0.1:{server.port}/send-sms", deadline=1.0, read_timeout=30)

    assert_cut_off_at(result, elapsed, 1.0)

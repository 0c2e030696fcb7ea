"""The SSRF guard for callback URLs: which addresses are refused, the allow-list, and pinning."""

from __future__ import annotations

import ipaddress
import ssl

import pytest
import requests
import trustme
from pytest_httpserver import HTTPServer

from messaging.lib import netguard


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "private"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("100.100.100.200", "not a public address"),  # carrier-grade NAT; Alibaba's metadata service
        ("240.0.0.1", "address"),  # reserved (Python files it under private)
        ("::ffff:127.0.0.1", "IPv6 form of 127.0.0.1, a loopback"),
        ("::ffff:169.254.169.254", "IPv6 form of 169.254.169.254, a link-local"),
        ("::127.0.0.1", "IPv6 form of 127.0.0.1"),
        ("2002:7f00:1::", "IPv6 form of 127.0.0.1"),  # 6to4
        ("64:ff9b::a00:1", "IPv6 form of 10.0.0.1"),  # NAT64
    ],
)
def test_non_public_addresses_are_refused_with_a_reason(address, reason):
    assert reason in netguard.refusal_reason(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert netguard.refusal_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0177.0.0.1/",
        "http://127.1/",
        "http://localhost/",
        "http://LocalHost:80/",
        "http://[::ffff:7f00:1]/",
        "http://[0:0:0:0:0:ffff:127.0.0.1]/",
    ],
)
def test_other_spellings_of_loopback_are_refused(url):
    with pytest.raises(netguard.UnsafeUrl, match="loopback"):
        netguard.check_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("gopher://example.com/", "http or https"),
        ("javascript:alert(1)", "http or https"),
        ("http:///nohost", "no host"),
        ("http://a:b@example.com/", "user name or password"),
        ("http://example.com:99999/", "not a valid URL"),
    ],
)
def test_malformed_urls_are_refused(url, message):
    with pytest.raises(netguard.UnsafeUrl, match=message):
        netguard.check_url(url)


def test_an_unresolvable_host_is_its_own_error():
    with pytest.raises(netguard.UnresolvableHost):
        netguard.check_url("https://nothing-here.invalid/cb")


def test_the_allow_list_takes_a_host_or_a_host_and_port(settings):
    settings.CALLBACK_ALLOWED_HOSTS = ["localhost", "127.0.0.1:8000", "[::1]:9000"]
    assert netguard.check_url("http://localhost:1234/cb").allow_listed
    assert netguard.check_url("http://127.0.0.1:8000/cb").allow_listed
    assert netguard.check_url("http://[::1]:9000/cb").allow_listed
    for url in ("http://127.0.0.1:8001/cb", "http://[::1]:9001/cb"):
        with pytest.raises(netguard.UnsafeUrl):
            netguard.check_url(url)


def test_a_pinned_request_goes_to_the_checked_address_whatever_the_name_now_resolves_to(httpserver):
    httpserver.expect_request("/cb").respond_with_json({"ok": True})
    port = httpserver.port
    # The name does not resolve at all, so the request can only arrive through the pinned address.
    target = netguard.Target(
        f"http://pinned.invalid:{port}/cb?x=1",
        "http",
        "pinned.invalid",
        port,
        (ipaddress.ip_address("127.0.0.1"),),
    )
    session, url, headers = netguard.pinned_request(target)
    with session:
        response = session.post(url, json={"a": 1}, headers=headers, timeout=5)
    assert response.status_code == 200
    (request, _) = httpserver.log[0]
    assert request.headers["Host"] == f"pinned.invalid:{port}"
    assert request.query_string == b"x=1"


@pytest.fixture
def tls_server():
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("callback.test").configure_cert(context)
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=context)
    server.start()
    server.expect_request("/cb").respond_with_json({"ok": True})
    with ca.cert_pem.tempfile() as ca_file:
        yield server, ca_file
    server.stop()


def _tls_target(server: HTTPServer, hostname: str) -> netguard.Target:
    return netguard.Target(
        f"https://{hostname}:{server.port}/cb",
        "https",
        hostname,
        server.port,
        (ipaddress.ip_address("127.0.0.1"),),
    )


def test_a_pinned_https_request_still_verifies_the_certificate_for_the_host_name(tls_server):
    server, ca_file = tls_server
    session, url, headers = netguard.pinned_request(_tls_target(server, "callback.test"))
    with session:
        response = session.post(url, json={}, headers=headers, timeout=5, verify=ca_file)
    assert response.status_code == 200
    assert server.log[0][0].headers["Host"] == f"callback.test:{server.port}"


def test_a_pinned_https_request_to_a_host_the_certificate_does_not_name_fails(tls_server):
    server, ca_file = tls_server
    session, url, headers = netguard.pinned_request(_tls_target(server, "other.test"))
    with session, pytest.raises(requests.exceptions.SSLError):
        session.post(url, json={}, headers=headers, timeout=5, verify=ca_file)
    assert server.log == []


def test_an_internationalised_host_is_checked_in_its_idna_form():
    with pytest.raises(netguard.UnresolvableHost, match="xn--bcher-kva.invalid"):
        netguard.check_url("https://bücher.invalid/cb")
    with pytest.raises(netguard.UnsafeUrl, match="invalid host name"):
        netguard.check_url("https://a..b/cb")

"""Guard for outbound calls to client-supplied URLs (callbacks): no loopback, private or metadata targets.

A callback URL comes from a client, so without a guard it could make the worker call the service's own
network: loopback, private ranges, link-local (cloud metadata at 169.254.169.254), and the many ways of
spelling them (`http://2130706433/`, `http://[::ffff:127.0.0.1]/`, a DNS name that resolves to
127.0.0.1). The guard resolves the host the way the operating system will, refuses the URL when ANY
resolved address is not a public unicast address, and `pinned_session` then connects to exactly the
address that was checked, so a DNS answer that changes between the check and the call (DNS rebinding)
cannot redirect it. Hosts listed in CALLBACK_ALLOWED_HOSTS ("host" or "host:port") skip the address
check (the sandbox in development, a local test server in tests).

Sources: OWASP SSRF Prevention Cheat Sheet; IANA special-purpose address registries (via `ipaddress`).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import idna
import requests
from django.conf import settings

from messaging.lib.deadline import DeadlineAdapter

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class UnsafeUrl(ValueError):
    """The URL may not be called: bad scheme, no host, or a refused address. `str()` says why."""


class UnresolvableHost(UnsafeUrl):
    """The host name does not resolve (now). At send time this is worth a retry; at the API a 400."""


@dataclass(frozen=True)
class Target:
    """A checked URL: where it points and the addresses it may be connected to.

    `addresses` are the resolved IPs in resolver order (all checked unless `allow_listed`).
    """

    url: str
    scheme: str
    hostname: str
    port: int
    addresses: tuple[IpAddress, ...] = field(default_factory=tuple)
    allow_listed: bool = False


def refusal_reason(address: IpAddress) -> str | None:
    """Return why `address` may not be called ("a loopback address", ...), or None when it is public.

    IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), 6to4 (2002::/16) and NAT64
    (64:ff9b::/96) IPv6 forms are judged by the IPv4 address they carry.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is None and int(address) >> 32 == 0 and int(address) > 1:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            reason = refusal_reason(embedded)
            return f"an IPv6 form of {embedded}, {reason}" if reason else None
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (where cloud metadata services live)"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "not a public address"
    return None


def _allow_listed(hostname: str, port: int) -> bool:
    allowed = settings.CALLBACK_ALLOWED_HOSTS
    host = hostname.lower()
    bracketed = f"[{host}]" if ":" in host else host
    return host in allowed or f"{bracketed}:{port}" in allowed


def _ip_literal(hostname: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(hostname)
    except ValueError:
        return None


# Lookups a process may have waiting at name servers at once (each holds a thread; see resolve).
MAX_LOOKUPS_IN_FLIGHT = 32
_lookup_slots = threading.BoundedSemaphore(MAX_LOOKUPS_IN_FLIGHT)


def _getaddrinfo_bounded(hostname: str, port: int, timeout: float) -> list:
    """socket.getaddrinfo on a daemon thread, waited for at most `timeout` seconds.

    The OS resolver takes no timeout (glibc retries each name server for seconds, see resolv.conf(5)),
    and the host name comes from a client, whose name server may answer as slowly as it likes. A
    lookup that is not answered in time leaves its thread at the name server until the resolver gives
    up; at most MAX_LOOKUPS_IN_FLIGHT such threads exist per process, and a lookup beyond that fails
    at once. Raises UnresolvableHost on timeout or when every slot is taken; OSError / UnicodeError as
    getaddrinfo does.
    """
    slots = _lookup_slots
    if not slots.acquire(blocking=False):
        raise UnresolvableHost(f"host {hostname!r} not looked up: too many DNS lookups in flight already")
    answer: dict[str, Any] = {}
    done = threading.Event()

    def lookup() -> None:
        try:
            answer["infos"] = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            answer["error"] = exc
        finally:
            slots.release()
            done.set()

    try:
        threading.Thread(target=lookup, name="dns-lookup", daemon=True).start()
    except BaseException:
        slots.release()
        raise
    if not done.wait(timeout):
        raise UnresolvableHost(f"host {hostname!r}: no answer within {timeout:g} s from its name server")
    if "error" in answer:
        raise answer["error"]
    return answer["infos"]


def resolve(hostname: str, port: int, *, timeout: float | None = None) -> tuple[IpAddress, ...]:
    """Return the addresses `hostname` resolves to (as the OS resolver answers, so `2130706433` and
    `0x7f.1` come back as 127.0.0.1). An IP literal is returned as it is, without a lookup.

    `timeout`: seconds to wait for the name server (default CALLBACK_RESOLVE_TIMEOUT_SECONDS); see
    _getaddrinfo_bounded. Raises UnresolvableHost when the name does not resolve, or not in time.
    """
    literal = _ip_literal(hostname)
    if literal is not None:
        return (literal,)
    if timeout is None:
        timeout = settings.CALLBACK_RESOLVE_TIMEOUT_SECONDS
    try:
        infos = _getaddrinfo_bounded(hostname, port, timeout)
    except (UnicodeError, OSError) as exc:
        raise UnresolvableHost(f"host {hostname!r} does not resolve ({exc})") from exc
    addresses: list[IpAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnresolvableHost(f"host {hostname!r} has no addresses")
    return tuple(addresses)


def check_url(url: str, *, resolve_timeout: float | None = None) -> Target:
    """Check a client-supplied URL and return its Target; raise UnsafeUrl (or UnresolvableHost) if refused.

    Refused: schemes other than http/https, URLs without a host or with credentials, and hosts that
    resolve to any loopback, private, link-local, multicast, reserved or otherwise non-public address,
    unless "host" or "host:port" is in CALLBACK_ALLOWED_HOSTS. `resolve_timeout`: seconds the DNS
    lookup may take (default CALLBACK_RESOLVE_TIMEOUT_SECONDS), after which UnresolvableHost.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"is not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeUrl("must use http or https")
    if not parts.hostname:
        raise UnsafeUrl("has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("must not contain a user name or password")
    hostname = parts.hostname
    if "%" in hostname:
        # An IPv6 literal with a zone id ("[fe80::1%25eth0]"): only link-local addresses have one, and
        # the resolver does not take the URL-encoded form, so it would pass as "does not resolve".
        raise UnsafeUrl("has an IPv6 zone id (%...), which only link-local addresses use")
    if _ip_literal(hostname) is None:
        try:
            # The ASCII (IDNA) form is what DNS, the Host header and TLS use.
            hostname = idna.encode(hostname.rstrip("."), uts46=True).decode() + (
                "." if hostname.endswith(".") else ""
            )
        except idna.IDNAError as exc:
            raise UnsafeUrl(f"has an invalid host name ({exc})") from exc
    port = port or (443 if scheme == "https" else 80)
    allow_listed = _allow_listed(hostname, port)
    addresses = resolve(hostname, port, timeout=resolve_timeout)
    if not allow_listed:
        literal = _ip_literal(hostname)
        for address in addresses:
            reason = refusal_reason(address)
            if reason:
                what = (
                    f"{hostname} is" if literal == address else f"{hostname} resolves to {address}, which is"
                )
                raise UnsafeUrl(f"{what} {reason}; callbacks may only go to public hosts")
    return Target(url, scheme, hostname, port, addresses, allow_listed)


class _PinnedAdapter(DeadlineAdapter):
    """Connects to a fixed IP while TLS still verifies (and sends SNI for) the URL's host name; its
    connections honour the calling thread's Deadline (messaging.lib.deadline)."""

    def __init__(self, hostname: str):
        self._hostname = hostname
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs):
        # urllib3 drops these two for plain http pools; for https they make SNI and certificate
        # checks use the real host name although the connection goes to the pinned IP.
        kwargs["server_hostname"] = self._hostname
        kwargs["assert_hostname"] = self._hostname
        super().init_poolmanager(*args, **kwargs)


def pinned_request(target: Target) -> tuple[requests.Session, str, dict[str, str]]:
    """Return (session, URL, headers) that reach `target` at its first checked address only.

    The URL has the IP in place of the host name; the `Host` header carries the name. The session
    ignores proxy and netrc settings from the environment (a proxy would defeat the pin). Close the
    session after use.
    """
    address = target.addresses[0]
    ip_host = f"[{address}]" if address.version == 6 else str(address)
    parts = urlsplit(target.url)
    netloc = f"{ip_host}:{target.port}"
    pinned_url = urlunsplit((target.scheme, netloc, parts.path or "/", parts.query, ""))
    default_port = 443 if target.scheme == "https" else 80
    host_name = f"[{target.hostname}]" if ":" in target.hostname else target.hostname
    host_header = host_name if target.port == default_port else f"{host_name}:{target.port}"
    session = requests.Session()
    session.trust_env = False
    session.mount(f"{target.scheme}://", _PinnedAdapter(target.hostname))
    return session, pinned_url, {"Host": host_header}

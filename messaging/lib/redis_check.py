"""Diagnose a Redis URL in plain words: can we reach it, and is it fit to hold queues?

Used by `manage.py check_redis`. Failures are named by what an operator can act on: host not found,
connection refused, timeout, authentication failed, TLS error. On success it reports the server
version, round-trip latency, `maxmemory-policy` (anything but `noeviction` lets Redis silently drop
queued jobs under memory pressure) and persistence (none means a restart empties every queue).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import statistics
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import redis


@dataclass
class Diagnosis:
    """Outcome for one URL: `ok`, a one-line `verdict`, `details` lines and `warnings` lines."""

    url: str
    ok: bool
    verdict: str
    details: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def redact_url(url: str) -> str:
    """Return `url` with any password replaced by ****."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:****@{host}"))


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def classify_failure(exc: BaseException, url: str, timeout: float) -> str:
    """Turn a connection failure into a plain-words verdict naming its cause."""
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or 6379}"
    chain = _chain(exc)
    text = " ".join(str(e) for e in chain)
    if any(isinstance(e, redis.exceptions.AuthenticationError) for e in chain) or any(
        marker in text for marker in ("WRONGPASS", "NOAUTH", "invalid password", "invalid username-password")
    ):
        return (
            f"authentication failed at {where}: the server rejected the user name or password in the URL, "
            "or needs one and the URL has none."
        )
    if "without any password configured" in text or isinstance(
        exc, redis.exceptions.AuthenticationWrongNumberOfArgsError
    ):
        return f"authentication failed at {where}: the URL has a password but the server has none configured."
    if any(isinstance(e, ssl.SSLError | ssl.CertificateError) for e in chain) or "_ssl.c" in text:
        hint = (
            "the server does not speak TLS on this port (use redis:// instead of rediss://, or the TLS port)"
            if "handshake" in text or "WRONG_VERSION" in text or "wrong version" in text
            else "the certificate or TLS settings were refused"
        )
        return f"TLS error at {where}: {hint}. ({chain[-1]})"
    if any(isinstance(e, socket.gaierror) for e in chain):
        return (
            f"host not found: the name {parts.hostname!r} does not resolve. Check the host name; a PaaS's "
            "internal Redis host name only resolves inside that platform's network."
        )
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return f"connection refused at {where}: nothing is listening there (wrong port, or Redis is not running)."
    if any(isinstance(e, redis.exceptions.TimeoutError | socket.timeout | TimeoutError) for e in chain):
        return (
            f"timeout: no answer from {where} within {timeout:g}s (a firewall dropping packets, a wrong host, "
            "or a server too busy to answer)."
        )
    return f"connection failed at {where}: {chain[-1]}"


def _config_value(client: redis.Redis, name: str, info_section: str, info_key: str) -> str | None:
    try:
        value = client.config_get(name).get(name)
        if value is not None:
            return str(value)
    except redis.exceptions.ResponseError:
        pass  # managed services often disable CONFIG
    value = client.info(info_section).get(info_key)
    return None if value is None else str(value)


def diagnose(url: str, *, timeout: float = 3.0, pings: int = 5) -> Diagnosis:
    """Connect to `url` with `timeout` seconds for connect and each call; return a Diagnosis."""
    shown = redact_url(url)
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    except ValueError as exc:
        return Diagnosis(shown, False, f"invalid URL: {exc}")
    try:
        latencies = []
        for _ in range(pings):
            started = time.perf_counter()
            client.ping()
            latencies.append((time.perf_counter() - started) * 1000)
        server = client.info("server")
        policy = _config_value(client, "maxmemory-policy", "memory", "maxmemory_policy")
        save = None
        with contextlib.suppress(redis.exceptions.ResponseError):  # managed services often disable CONFIG
            save = client.config_get("save").get("save")
        aof = client.info("persistence").get("aof_enabled")
    except (redis.exceptions.RedisError, OSError) as exc:
        return Diagnosis(shown, False, classify_failure(exc, url, timeout))
    finally:
        client.close()
    latency = statistics.median(latencies)
    diagnosis = Diagnosis(
        shown,
        True,
        f"OK: Redis {server.get('redis_version', '?')} answers, latency {latency:.2f} ms (median of {pings} PINGs).",
    )
    diagnosis.details.append(f"maxmemory-policy: {policy or 'unknown'}")
    if policy != "noeviction":
        diagnosis.warnings.append(
            f"maxmemory-policy is {policy or 'unknown'}, not noeviction: under memory pressure Redis may "
            "evict queued jobs. Set maxmemory-policy noeviction (the sweep re-enqueues lost jobs, later)."
        )
    rdb = None if save is None else bool(str(save).strip())
    persistence = []
    if rdb:
        persistence.append(f"RDB snapshots ({save})")
    if str(aof) == "1":
        persistence.append("AOF")
    if persistence:
        diagnosis.details.append("persistence: " + " + ".join(persistence))
    elif rdb is None and str(aof) != "1":
        diagnosis.details.append("persistence: RDB unknown (CONFIG is disabled), AOF off")
        diagnosis.warnings.append("persistence could not be confirmed; a restart may empty the queues.")
    else:
        diagnosis.details.append("persistence: none")
        diagnosis.warnings.append(
            "persistence is off (no RDB snapshots, no AOF): a restart empties every queue and schedule. "
            "Nothing is lost (the database keeps every message and the sweep re-enqueues), but "
            "deliveries wait for the sweep."
        )
    return diagnosis

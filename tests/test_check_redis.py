"""`manage.py check_redis`: a plain-words verdict per failure, details and warnings on success."""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys

import pytest

from tests.process_control import ROOT, RedisServer, free_port, process_env

# Resolving fails locally (a name over 253 characters), so no DNS query leaves the machine.
UNRESOLVABLE = ".".join(["x" * 63] * 5)


def check_redis(*urls: str, timeout: float = 1.0) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "manage.py", "check_redis", *urls, "--timeout", str(timeout)],
        cwd=ROOT,
        env=process_env("redis://127.0.0.1:1/0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.fixture(scope="module")
def protected_redis():
    password = secrets.token_urlsafe(16)
    server = RedisServer("--requirepass", password).start()
    yield server, password
    server.close()


def test_a_closed_port_a_wrong_password_and_a_good_server_get_three_different_verdicts(db, protected_redis):
    server, password = protected_redis
    closed = free_port()
    code, out = check_redis(f"redis://127.0.0.1:{closed}/0")
    assert code == 1
    assert f"FAILED: connection refused at 127.0.0.1:{closed}" in out

    code, out = check_redis(f"redis://:wrong-{secrets.token_hex(4)}@127.0.0.1:{server.port}/0")
    assert code == 1
    assert "FAILED: authentication failed" in out
    assert ":****@" in out  # the password is never printed

    code, out = check_redis(f"redis://:{password}@127.0.0.1:{server.port}/0")
    assert code == 0, out
    assert "OK: Redis 7" in out or "OK: Redis " in out
    assert "latency" in out
    assert password not in out
    assert "maxmemory-policy: noeviction" in out
    assert "persistence: none" in out
    assert "WARNING: persistence is off" in out


def test_a_missing_password_is_an_authentication_failure(db, protected_redis):
    server, _ = protected_redis
    code, out = check_redis(f"redis://127.0.0.1:{server.port}/0")
    assert (code, "FAILED: authentication failed" in out) == (1, True)


def test_an_unknown_host_is_host_not_found(db):
    code, out = check_redis(f"redis://{UNRESOLVABLE}:6379/0")
    assert code == 1
    assert "FAILED: host not found" in out


def test_a_server_that_never_answers_is_a_timeout(db):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        code, out = check_redis(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", timeout=0.5)
    assert code == 1
    assert "FAILED: timeout: no answer" in out


def test_tls_to_a_port_that_does_not_speak_tls_is_a_tls_error(db, httpserver):
    code, out = check_redis(f"rediss://127.0.0.1:{httpserver.port}/0")
    assert code == 1
    assert "FAILED: TLS error" in out


def test_an_eviction_policy_and_snapshots_are_reported(db):
    server = RedisServer("--maxmemory-policy", "allkeys-lru", "--save", "3600 1").start()
    try:
        code, out = check_redis(server.url)
    finally:
        server.close()
    assert code == 0
    assert "WARNING: maxmemory-policy is allkeys-lru, not noeviction" in out
    assert "persistence: RDB snapshots (3600 1)" in out
    assert "persistence is off" not in out


def test_every_url_is_checked_and_any_failure_fails_the_command(db, protected_redis):
    server, password = protected_redis
    code, out = check_redis(
        f"redis://:{password}@127.0.0.1:{server.port}/0", f"redis://127.0.0.1:{free_port()}/0"
    )
    assert code == 1
    assert "OK: Redis" in out and "connection refused" in out

"""The per-API-key ingress limit spent from per-process leases of hits (ratelimit.IngressLeases):
several real OS processes on one key and a real Redis. The tolerance under test, for a limit of N per
window of W seconds, leases of k hits and P processes: at most N + P*k admitted in any W seconds, and
a refusal only after at least N - (P-1)*k admitted in the W seconds before it."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pytest
from django.conf import settings
from redis.commands.core import Script

from messaging import ratelimit
from messaging.models import ApiKey

BASE_DIR = str(settings.BASE_DIR)


def hammer(processes: int, **options) -> list[dict]:
    """Run `processes` tests.ingress_hammer children at once; return their reports."""
    options = {"key": 4242, "threads": 1, "pause": 0, **options}
    env = {**os.environ, "DJANGO_ENV": "test", "TEST_REDIS_URL": settings.REDIS_URL}
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.ingress_hammer", json.dumps(options)],
            cwd=BASE_DIR,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    for child in children:
        assert child.stdout.readline() == "ready\n"
    start = time.time() + 0.2
    reports = []
    for child in children:
        child.stdin.write(f"{start}\n")
        child.stdin.flush()
    for child in children:
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0
        reports.append(json.loads(out))
    return reports


def admitted_in(events: list, start: float, end: float, *, superset: bool) -> int:
    """Admitted events whose admission lay in [start, end): `superset` counts every one that may have
    (its [before, after] meets the interval), otherwise only those that surely did."""
    if superset:
        return sum(1 for before, after, ok, _ in events if ok and after >= start and before < end)
    return sum(1 for before, after, ok, _ in events if ok and before >= start and after < end)


def test_several_processes_hammering_one_key_stay_within_the_limit_plus_one_lease_per_process():
    limit, window, processes, share = 50, 1.0, 3, 0.1
    lease = max(1, int(limit / window * share))  # 5 hits
    reports = hammer(processes, limit=f"{limit}/second", share=share, threads=3, seconds=3.0)
    events = sorted(event for report in reports for event in report["events"])
    admitted = [event for event in events if event[2]]
    refused = [event for event in events if not event[2]]
    assert len(refused) > 10 * len(admitted)  # the key really was hammered far over its limit

    # Over: no window of W seconds surely holds more than N + P*k admissions.
    worst = max(admitted_in(admitted, before, before + window, superset=False) for before, *_ in admitted)
    assert limit <= worst <= limit + processes * lease, worst
    # The whole run: about N per W, not more than N + P*k per started window.
    span = admitted[-1][1] - admitted[0][0]
    assert len(admitted) <= (math.floor(span / window) + 1) * (limit + processes * lease)

    # Under: every refusal comes after at least N - (P-1)*k admissions in the W + W/10 seconds before
    # it (the window is read in slots of a tenth of it).
    for before, after, _, retry_after in refused:
        counted_from = before - window * 1.1
        assert admitted_in(admitted, counted_from, after, superset=True) >= limit - (processes - 1) * lease
        assert retry_after in (1, 2)  # a one-second window frees a slot within 1.1 s

    # Far fewer Redis calls than requests in each process.
    for report in reports:
        assert report["redis_calls"] * 20 < len(report["events"]), (
            report["redis_calls"],
            len(report["events"]),
        )


def test_a_key_under_its_limit_minus_one_lease_per_process_is_never_refused():
    # 3 processes at 10 requests/s each (a call, then 0.1 s of sleep): at most 33 in any second, under
    # N - P*k = 50 - 15 = 35. A lease of 5 is mostly unspent at this pace: its unspent hits must go back.
    reports = hammer(3, limit="50/second", share=0.1, seconds=3.0, pause=0.1)
    events = [event for report in reports for event in report["events"]]
    assert len(events) >= 3 * 15, len(events)  # the children did run (a loaded machine runs fewer)
    assert all(admitted for _, _, admitted, _ in events), [e for e in events if not e[2]][:5]


@pytest.fixture
def redis_calls(monkeypatch):
    calls = []
    original = Script.__call__

    def counted(self, *args, **kwargs):
        calls.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Script, "__call__", counted)
    return calls


def test_retry_after_is_the_time_until_the_oldest_hit_leaves_the_window_and_costs_no_redis_call(
    settings, monkeypatch, redis_calls
):
    settings.API_RATE_LIMIT_PER_KEY = "10/2 seconds"
    monkeypatch.setattr(ratelimit, "INGRESS_LEASE_SHARE", 0.5)  # leases of 2 hits
    key = ApiKey(pk=77)
    started = time.time()
    for _ in range(10):
        ratelimit.api_key_ingress(key)
    assert len(redis_calls) == 5
    time.sleep(1.2)

    result = ratelimit.ingress_leases.take(settings.API_RATE_LIMIT_PER_KEY, ("api-key", "77"))
    assert not result.allowed
    expected = started + 2.0 - time.time()
    # The window is read in slots of a tenth of it: a slot frees up to 0.2 s after its first hit leaves.
    assert expected - 0.1 <= result.retry_after <= expected + 0.22
    with pytest.raises(ratelimit.RateLimited) as refused:
        ratelimit.api_key_ingress(key)
    assert refused.value.retry_after_seconds == 1  # 0.8 s, rounded up
    assert len(redis_calls) == 6  # refused again from memory, without asking Redis

    time.sleep(max(0.0, started + 2.25 - time.time()))
    ratelimit.api_key_ingress(key)  # the first hits have left the window
    assert len(redis_calls) == 7


def test_ten_thousand_admitted_requests_in_one_process_take_a_few_redis_calls(settings, redis_calls):
    settings.API_RATE_LIMIT_PER_KEY = "1000000/second"  # leases of 20,000 hits
    key = ApiKey(pk=78)
    for _ in range(10_000):
        ratelimit.api_key_ingress(key)
    assert 1 <= len(redis_calls) <= 100, len(redis_calls)


def test_unspent_hits_of_an_expired_lease_go_back_to_the_window(settings, monkeypatch, redis_clean):
    settings.API_RATE_LIMIT_PER_KEY = "100/second"  # leases of 2 hits
    key = ApiKey(pk=79)
    ratelimit.api_key_ingress(key)

    def counted() -> int:
        return sum(int(redis_clean.get(name)) for name in redis_clean.keys("qs-limits:lease:*"))

    assert counted() == 2  # one spent, one leased
    time.sleep(ratelimit.INGRESS_LEASE_SECONDS + 0.01)
    ratelimit.api_key_ingress(key)
    assert counted() == 3  # the unspent one went back, a new lease of 2 came

"""Micro-benchmark of the per-API-key ingress limit: 10,000 calls of ratelimit.api_key_ingress on one
thread, against a real Redis (TEST_REDIS_URL, flushed before and after).

Usage: DJANGO_ENV=test TEST_REDIS_URL=redis://127.0.0.1:6379/5 python bench/ingress_limit.py [LIMIT ...]
Prints, per limit (default "1000000/second", every call admitted, and "100/second", most refused):
calls, admitted, refused, total seconds and microseconds per call.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DJANGO_ENV", "test")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

from messaging import queues, ratelimit  # noqa: E402
from messaging.models import ApiKey  # noqa: E402

CALLS = 10_000


def run(limit: str) -> None:
    settings.API_RATE_LIMIT_PER_KEY = limit
    queues.reset_connection()
    queues.get_connection().flushdb()
    key = ApiKey(pk=987654321)  # never saved: the limit only reads the primary key
    admitted = refused = 0
    started = time.perf_counter()
    for _ in range(CALLS):
        try:
            ratelimit.api_key_ingress(key)
            admitted += 1
        except ratelimit.RateLimited:
            refused += 1
    elapsed = time.perf_counter() - started
    queues.get_connection().flushdb()
    print(
        f"{limit:>16}: {CALLS} calls, {admitted} admitted, {refused} refused, {elapsed:.3f} s, "
        f"{elapsed / CALLS * 1e6:.1f} us/call"
    )


if __name__ == "__main__":
    for limit in sys.argv[1:] or ["1000000/second", "100/second"]:
        run(limit)

"""Child process for tests/test_ingress_leases.py: one web process's share of the traffic on one API
key, through the real ratelimit.api_key_ingress, against the test Redis database.

Usage: python -m tests.ingress_hammer '<json>' with keys limit ("50/second"), share
(ratelimit.INGRESS_LEASE_SHARE), key (an API key's primary key), threads, seconds (how long), pause
(seconds each thread sleeps after each call; 0: none). Once set up it prints "ready" and reads the
time.time() at which to start from standard input (so that every child starts together).
Then prints one JSON object: events, a list of [before, after, admitted, retry_after_seconds] (time.time(),
seconds), and redis_calls, the Lua script calls this process made to Redis.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DJANGO_ENV", "test")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from redis.commands.core import Script  # noqa: E402

from messaging import ratelimit  # noqa: E402
from messaging.models import ApiKey  # noqa: E402

redis_calls = 0
_count_lock = threading.Lock()
_script_call = Script.__call__


def _counted(self, *args, **kwargs):
    global redis_calls
    with _count_lock:
        redis_calls += 1
    return _script_call(self, *args, **kwargs)


def main() -> None:
    options = json.loads(sys.argv[1])
    settings.API_RATE_LIMIT_PER_KEY = options["limit"]
    ratelimit.INGRESS_LEASE_SHARE = options["share"]
    Script.__call__ = _counted
    key = ApiKey(pk=options["key"])  # never saved: the limit only reads the primary key
    events: list[list] = []
    print("ready", flush=True)
    start = float(sys.stdin.readline())
    end = start + options["seconds"]

    def run() -> None:
        mine = []
        while (before := time.time()) < end:
            try:
                ratelimit.api_key_ingress(key)
                mine.append([before, time.time(), True, 0])
            except ratelimit.RateLimited as exc:
                mine.append([before, time.time(), False, exc.retry_after_seconds])
            if options["pause"]:
                time.sleep(options["pause"])
        events.extend(mine)

    time.sleep(max(0.0, start - time.time()))
    threads = [threading.Thread(target=run) for _ in range(options["threads"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"events": events, "redis_calls": redis_calls}))


if __name__ == "__main__":
    main()

"""A delivery rate holds at the provider across real worker processes: at DELIVERY_RATE_SMS=20/second
no one-second window sees more than 20 calls, nothing goes out before its time, each message once.

The provider is a process of its own (bench/provider.py, asyncio) that writes down each request's
arrival as soon as it reads it, so what is measured is when calls reach the provider, not when a busy
test process got round to looking at them."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from messaging.models import Message
from tests.process_control import free_port, wait_for
from tests.process_fixtures import all_final, post

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]


def busiest_second(times: list[float]) -> int:
    """The most arrivals in any window [t, t + 1 s) that starts at an arrival."""
    times = sorted(times)
    most, end = 0, 0
    for start, t in enumerate(times):
        while end < len(times) and times[end] < t + 1.0:
            end += 1
        most = max(most, end - start)
    return most


@pytest.fixture
def recording_provider():
    """An SMS provider in a process of its own; yields (base URL, function returning the arrivals as
    (time.monotonic(), Idempotency-Key) pairs)."""
    port = free_port()
    record = Path(tempfile.mkstemp(prefix="qs-arrivals-", suffix=".log")[1])
    process = subprocess.Popen(
        [sys.executable, "bench/provider.py", "--port", str(port), "--record", str(record)],
        cwd=django_settings.BASE_DIR,
    )

    def arrivals() -> list[tuple[float, str]]:
        lines = record.read_text().splitlines()
        return [(float(at), key) for at, key in (line.split(" ", 1) for line in lines if " " in line)]

    try:
        yield f"http://127.0.0.1:{port}", arrivals
    finally:
        process.terminate()
        process.wait(10)
        record.unlink(missing_ok=True)


def test_1000_sms_at_20_per_second_from_two_workers_never_exceed_20_in_a_second(
    api, processes, recording_provider, settings
):
    url, arrivals = recording_provider
    settings.API_RATE_LIMIT_PER_KEY = "100000/second"  # the client posts as fast as it can
    env = {"DELIVERY_RATE_SMS": "20/second", "RQ_JOB_TIMEOUT": "30", "SMS_API_URL": url}
    processes.worker(**env)
    processes.worker(**env)
    processes.scheduler()
    now = post(api, 800)
    later = post(api, 200, delay=10_000)
    ids = now + later
    wait_for(lambda: all_final(ids), 150, interval=1, what="1,000 messages at 20/s")

    seen = arrivals()
    assert busiest_second([at for at, _ in seen]) <= 20
    assert Counter(key for _, key in seen) == Counter(ids)  # each once
    started = time.monotonic() - time.time()  # monotonic minus wall clock, to compare with scheduled_for
    arrived_at = {key: at - started for at, key in seen}
    for message in Message.objects.filter(pk__in=later):
        assert arrived_at[str(message.pk)] >= message.scheduled_for.timestamp(), "sent before its time"
    messages = Message.objects.filter(pk__in=ids)
    assert set(messages.values_list("status", flat=True)) == {"sent"}
    assert set(messages.values_list("attempts", flat=True)) == {1}  # waiting for a slot used no attempt
    spread = max(arrived_at.values()) - min(arrived_at.values())
    assert spread >= (1000 - 20) / 20  # the limit was what paced them

"""A delivery rate holds at the provider across real worker processes: at DELIVERY_RATE_SMS=20/second
no one-second window sees more than 20 calls, nothing goes out before its time, each message once."""

from __future__ import annotations

import pytest

from messaging.models import Message
from tests.process_control import wait_for
from tests.process_fixtures import all_final, assert_invariant, post

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


def test_1000_sms_at_20_per_second_from_two_workers_never_exceed_20_in_a_second(
    api, processes, provider, settings
):
    settings.API_RATE_LIMIT_PER_KEY = "100000/second"  # the client posts as fast as it can
    env = {"DELIVERY_RATE_SMS": "20/second", "RQ_JOB_TIMEOUT": "30"}
    processes.worker(**env)
    processes.worker(**env)
    processes.scheduler()
    now = post(api, 800)
    later = post(api, 200, delay=10_000)
    ids = now + later
    wait_for(lambda: all_final(ids), 150, interval=1, what="1,000 messages at 20/s")

    assert busiest_second([arrived for arrived, _, _ in provider.arrivals]) <= 20
    assert provider.by_key() == {pk: 1 for pk in ids}  # each once
    arrived_at = {key: wall for _, wall, key in provider.arrivals}
    for message in Message.objects.filter(pk__in=later):
        assert arrived_at[str(message.pk)] >= message.scheduled_for.timestamp(), "sent before its time"
    messages = Message.objects.filter(pk__in=ids)
    assert set(messages.values_list("status", flat=True)) == {"sent"}
    assert set(messages.values_list("attempts", flat=True)) == {1}  # waiting for a slot used no attempt
    spread = max(arrived_at.values()) - min(arrived_at.values())
    assert spread >= (1000 - 20) / 20  # the limit was what paced them
    assert_invariant(ids, provider)

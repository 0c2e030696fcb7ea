"""Delivery rates per channel, enforced in the workers: over the limit a job is deferred, not failed."""

from __future__ import annotations

import time

import pytest
from rq import SimpleWorker

from messaging import queues, services
from messaging.models import Message, Workspace
from tests.conftest import run_jobs


def _queue_sms(count: int, workspace: str = "66338") -> list[str]:
    return [
        str(
            services.message_create(
                channel="sms", workspace_external_id=workspace, recipient="+14155550123", body=f"n{i}"
            ).id
        )
        for i in range(count)
    ]


@pytest.mark.django_db(transaction=True)
def test_120_sms_at_50_per_second_take_at_least_2_seconds_and_none_fails(sms_provider, settings):
    settings.DELIVERY_RATE_LIMITS = {**settings.DELIVERY_RATE_LIMITS, "sms": "50/second"}
    arrivals: list[float] = []

    def handler(request):
        arrivals.append(time.monotonic())
        from werkzeug import Response

        return Response('{"id": "x"}', status=200, content_type="application/json")

    sms_provider.expect_request("/send-sms").respond_with_handler(handler)
    ids = _queue_sms(120)
    queued_at = time.monotonic()

    run_jobs(until=lambda: Message.objects.filter(pk__in=ids, status="sent").count() == 120, timeout=30)

    assert len(arrivals) == 120
    assert arrivals[-1] - queued_at >= 2.0, arrivals[-1] - queued_at
    # No 0.8 s stretch at the provider holds more than 50 (less than 1 s allows for the time between
    # the limiter's decision and the request arriving on a busy machine).
    assert max(sum(1 for t in arrivals if start <= t < start + 0.8) for start in arrivals) <= 50
    messages = Message.objects.filter(pk__in=ids)
    assert set(messages.values_list("status", flat=True)) == {"sent"}
    assert set(messages.values_list("attempts", flat=True)) == {1}  # deferring used no attempt
    assert {request.headers["Idempotency-Key"] for request, _ in sms_provider.log} == set(ids)


def burst_once() -> None:
    """Work every queue dry once; jobs deferred meanwhile stay on the scheduler."""
    SimpleWorker(
        [queues.get_queue(name) for name in queues.QUEUE_NAMES], connection=queues.get_connection()
    ).work(burst=True)


def _arrivals(sms_provider) -> dict[str, float]:
    """Record when each message (by Idempotency-Key) reaches the fake provider (time.monotonic())."""
    from werkzeug import Response

    seen: dict[str, float] = {}

    def handler(request):
        seen[request.headers["Idempotency-Key"]] = time.monotonic()
        return Response('{"id": "x"}', status=200, content_type="application/json")

    sms_provider.expect_request("/send-sms").respond_with_handler(handler)
    return seen


@pytest.mark.django_db(transaction=True)
def test_a_workspace_rate_slows_only_that_workspace(sms_provider):
    arrivals = _arrivals(sms_provider)
    Workspace.objects.create(external_id="slow", sms_per_second=2)
    slow = _queue_sms(4, workspace="slow")
    fast = _queue_sms(4, workspace="fast")

    burst_once()  # the slow workspace's third and fourth SMS wait in the worker for their slots

    assert Message.objects.filter(pk__in=fast + slow, status="sent").count() == 8
    slow_times = sorted(arrivals[pk] for pk in slow)
    # The third slot of a 2/second window frees a second (plus the guard) after the first.
    assert slow_times[2] - slow_times[0] >= 1.0
    assert max(arrivals[pk] for pk in fast) - min(arrivals[pk] for pk in fast) < 1.0
    assert set(Message.objects.filter(pk__in=slow).values_list("attempts", flat=True)) == {1}


@pytest.mark.django_db(transaction=True)
def test_a_message_whose_slot_is_far_ahead_is_deferred_to_it_without_using_an_attempt(sms_provider, settings):
    from limits import parse

    from messaging.delivery import gate
    from messaging.ratelimit import reserve_slots

    arrivals = _arrivals(sms_provider)
    settings.DELIVERY_RATE_LIMITS = {**settings.DELIVERY_RATE_LIMITS, "sms": "2/second"}
    # Other workers hold the next few seconds' slots.
    reserve_slots(
        [([("qs:rate:sms", parse("2/second"))], f"other:{n}") for n in range(6)], horizon=60, guard=0.05
    )
    (message_id,) = _queue_sms(1)
    started = time.monotonic()

    burst_once()

    message = Message.objects.get(pk=message_id)
    assert (message.status, message.attempts) == ("queued", 0)
    # Its job comes back SLOT_LEAD_SECONDS before the slot it keeps, which was too far to wait for.
    slot_in = (message.next_attempt_at - message.accepted_at).total_seconds() + gate.SLOT_LEAD_SECONDS
    assert slot_in > gate.EARLY_WAIT_MAX_SECONDS
    run_jobs(until=lambda: Message.objects.get(pk=message_id).status == "sent")
    assert arrivals[message_id] - started >= 3.0  # the fourth window of 2/second
    assert Message.objects.get(pk=message_id).attempts == 1


@pytest.mark.django_db(transaction=True)
def test_an_empty_rate_turns_the_limit_off(sms_provider, settings, redis_clean):
    arrivals = _arrivals(sms_provider)
    settings.DELIVERY_RATE_LIMITS = {**settings.DELIVERY_RATE_LIMITS, "sms": "10/second"}
    limited = _queue_sms(15)
    burst_once()
    assert Message.objects.filter(pk__in=limited, status="sent").count() == 15
    assert max(arrivals.values()) - min(arrivals.values()) >= 1.0  # the 11th waited for the next window
    assert redis_clean.exists("qs:rate:sms")

    settings.DELIVERY_RATE_LIMITS = {**settings.DELIVERY_RATE_LIMITS, "sms": ""}
    redis_clean.delete("qs:rate:sms")
    unlimited = _queue_sms(60)
    burst_once()
    assert Message.objects.filter(pk__in=unlimited, status="sent").count() == 60
    assert not redis_clean.exists("qs:rate:sms")  # no slot was reserved

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


@pytest.mark.django_db(transaction=True)
def test_a_workspace_rate_slows_only_that_workspace(sms_provider):
    sms_provider.expect_request("/send-sms").respond_with_json({"id": "x"})
    Workspace.objects.create(external_id="slow", sms_per_second=2)
    slow = _queue_sms(4, workspace="slow")
    fast = _queue_sms(4, workspace="fast")
    started = time.monotonic()

    burst_once()

    assert Message.objects.filter(pk__in=fast, status="sent").count() == 4
    assert Message.objects.filter(pk__in=slow, status="sent").count() == 2
    assert Message.objects.filter(pk__in=slow, status="queued", attempts=0).count() == 2
    run_jobs(until=lambda: Message.objects.filter(pk__in=slow, status="sent").count() == 4)
    assert time.monotonic() - started >= 1.0  # the third slot of a 2/second window frees after 1 s
    assert set(Message.objects.filter(pk__in=slow).values_list("attempts", flat=True)) == {1}


@pytest.mark.django_db(transaction=True)
def test_an_empty_rate_turns_the_limit_off(sms_provider, settings):
    sms_provider.expect_request("/send-sms").respond_with_json({"id": "x"})
    settings.DELIVERY_RATE_LIMITS = {**settings.DELIVERY_RATE_LIMITS, "sms": "10/second"}
    limited = _queue_sms(15)
    burst_once()
    assert Message.objects.filter(pk__in=limited, status="sent").count() == 10

    settings.DELIVERY_RATE_LIMITS = {**settings.DELIVERY_RATE_LIMITS, "sms": ""}
    unlimited = _queue_sms(60)
    burst_once()
    assert Message.objects.filter(pk__in=unlimited, status="sent").count() == 60

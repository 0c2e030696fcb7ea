"""The delivery engine's grouped writes: one claim per message, whatever jobs point at it."""

from __future__ import annotations

import time

import pytest

from messaging.delivery import rows
from messaging.delivery.engine import Delivery, Engine
from messaging.models import Message
from messaging.workspaces import workspace_get

GOOD = {"phoneNumber": "+14155550123", "message": "Hello", "contactId": "c-1", "workspaceId": "66338"}
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def provider(sms_provider):
    sms_provider.expect_request("/send-sms", method="POST").respond_with_json({"id": "prov-1"})
    return sms_provider


def test_two_deliveries_of_one_message_ready_in_one_write_make_one_call(api, provider):
    # A worker holds a delivery for the message's old job (loaded before a sweep gave the message a
    # new job) and one for the new job; both reach the same grouped claim.
    pk = api.post("/api/schedule-sms", GOOD).json()["id"]
    stale = Message.objects.get(pk=pk)
    moved = rows.move([(Message.objects.get(pk=pk), "new-job", None)])
    assert moved == {pk}
    fresh = Message.objects.get(pk=pk)
    results = []

    def done(delivery, result, error):
        results.append((delivery.job_id, result))

    stale.workspace = fresh.workspace = workspace_get(fresh.workspace_id)  # as the engine's load does
    old = Delivery(pk, stale.rq_job_id, done, message=stale)
    new = Delivery(pk, "new-job", done, message=fresh)
    engine = Engine(capacity=2)
    for delivery in (old, new):
        delivery.send_at = delivery.deadline = time.monotonic()
    engine._ready = [old, new]
    engine._open = 2
    for _ in range(10):
        engine.step()
        if not engine.open:
            break
    assert len(provider.log) == 1
    assert sorted(results) == sorted(
        [(stale.rq_job_id, "skipped: claimed elsewhere or not due"), ("new-job", "sent")]
    )
    assert Message.objects.get(pk=pk).attempts == 1


def test_a_conditional_update_refuses_one_message_twice(api):
    pk = api.post("/api/schedule-sms", GOOD).json()["id"]
    with pytest.raises(ValueError, match="twice"):
        rows.claim(
            [Message.objects.get(pk=pk), Message.objects.get(pk=pk)], Message.objects.get(pk=pk).accepted_at
        )


def test_a_record_that_raises_fails_its_own_job_and_the_others_are_recorded(api, provider, monkeypatch):
    from messaging.delivery import engine as engine_module

    ids = [api.post("/api/schedule-sms", {**GOOD, "contactId": f"c-{i}"}).json()["id"] for i in range(3)]
    bad = ids[1]
    real_record = engine_module.outcomes.record

    def record(pairs):
        if any(str(message.pk) == bad for message, _ in pairs):
            raise TypeError("an answer this code cannot store")
        return real_record(pairs)

    monkeypatch.setattr(engine_module.outcomes, "record", record)
    results = {}

    def done(delivery, result, error):
        results[delivery.message_id] = (result, type(error).__name__ if error else None)

    engine = Engine(capacity=3)
    messages = {str(m.pk): m for m in Message.objects.filter(pk__in=ids)}
    engine.submit([Delivery(pk, messages[pk].rq_job_id, done) for pk in ids])
    for _ in range(50):  # bounded: without the one-by-one fallback the engine retries its write forever
        engine.step()
        if not engine.open:
            break
        engine.wait(0.1)
    assert results.get(bad) == ("error", "TypeError")
    assert {pk: results[pk][0] for pk in ids if pk != bad} == {pk: "sent" for pk in ids if pk != bad}
    assert Message.objects.get(pk=bad).status == "sending"  # left for the sweep to settle as interrupted


def test_one_workspaces_slow_calls_leave_delivery_threads_for_other_workspaces(api, provider, monkeypatch):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from messaging.delivery import senders

    real_send, release, started = senders.send, threading.Event(), []

    def send(message, send_at, deadline):
        started.append(message.workspace_id)
        if message.workspace.external_id == "66338":
            release.wait(10)  # a callback receiver answering at its deadline
        return real_send(message, send_at, deadline)

    monkeypatch.setattr(senders, "send", send)
    slow = [api.post("/api/schedule-sms", {**GOOD, "contactId": f"c-{i}"}).json()["id"] for i in range(8)]
    other = api.post("/api/schedule-sms", {**GOOD, "workspaceId": "70001"}).json()["id"]
    messages = {str(m.pk): m for m in Message.objects.filter(pk__in=[*slow, other])}
    results = {}

    def done(delivery, result, error):
        results[delivery.message_id] = result

    pool = ThreadPoolExecutor(8)
    engine = Engine(pool=pool, capacity=8)
    engine.submit([Delivery(pk, messages[pk].rq_job_id, done) for pk in [*slow, other]])
    deadline = time.monotonic() + 5
    while other not in results and time.monotonic() < deadline:
        engine.step()
        engine.wait(0.05)
    slow_in_calls = sum(1 for pk in slow if pk not in results)
    other_before_release = results.get(other)
    release.set()
    while engine.open and time.monotonic() < deadline + 10:
        engine.step()
        engine.wait(0.05)
    pool.shutdown()
    assert other_before_release == "sent", "the other workspace waited behind the slow one"
    assert slow_in_calls == 8  # none of the slow calls had returned meanwhile
    assert [results[pk] for pk in slow] == ["sent"] * 8

"""Bulk endpoints: per-item validation, bulk insert, batch jobs with concurrent provider calls."""

from __future__ import annotations

import json
import threading
import time

import pytest
from werkzeug import Response

from messaging import queues
from messaging.models import DeliveryAttempt, Message
from tests.conftest import run_jobs

pytestmark = pytest.mark.django_db(transaction=True)


def sms(n: int, **extra) -> dict:
    return {
        "phoneNumber": f"+1415555{n:04d}",
        "message": f"Hi {n}",
        "contactId": f"c-{n}",
        "workspaceId": 66338,
        **extra,
    }


def test_a_thousand_messages_in_one_request_are_all_delivered_once(api, sms_provider):
    sms_provider.expect_request("/send-sms").respond_with_json({"ok": True})
    response = api.post("/api/schedule-sms/bulk", {"messages": [sms(n) for n in range(1000)]})
    assert response.status_code == 202, response.content[:500]
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1000, 0)
    assert all(item["status"] == "queued" for item in body["results"])
    assert queues.get_queue("sms").count == 10  # batch jobs of 100
    run_jobs(timeout=120)
    assert Message.objects.filter(status="sent").count() == 1000
    assert DeliveryAttempt.objects.count() == 1000
    received = [json.loads(request.data)["to"] for request, _ in sms_provider.log]
    assert len(received) == 1000
    assert len(set(received)) == 1000


def test_valid_items_are_accepted_when_others_fail(api):
    items = [sms(1), {**sms(2), "phoneNumber": "12"}, "not an object", {**sms(3), "message": ""}, sms(4)]
    response = api.post("/api/schedule-sms/bulk", {"messages": items})
    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 3)
    results = body["results"]
    assert [r["success"] for r in results] == [True, False, False, False, True]
    assert "phoneNumber" in results[1]["errors"]
    assert "message" in results[3]["errors"]
    assert Message.objects.count() == 2
    assert {str(m.id) for m in Message.objects.all()} == {results[0]["id"], results[4]["id"]}


def test_a_request_with_no_valid_item_is_a_400(api):
    response = api.post("/api/schedule-sms/bulk", {"messages": [{**sms(1), "phoneNumber": ""}]})
    assert response.status_code == 400
    assert response.json()["accepted"] == 0


@pytest.mark.parametrize("messages", [None, [], {"a": 1}, "x"])
def test_the_messages_array_is_required(api, messages):
    response = api.post("/api/schedule-sms/bulk", {"messages": messages})
    assert response.status_code == 400
    assert "messages" in response.json()["errors"]


def test_more_than_the_limit_is_refused(api, settings):
    settings.BULK_MAX_ITEMS = 5
    response = api.post("/api/schedule-sms/bulk", {"messages": [sms(n) for n in range(6)]})
    assert response.status_code == 400
    assert Message.objects.count() == 0


def test_cancelling_one_message_of_a_batch_leaves_the_others(api, sms_provider):
    sms_provider.expect_request("/send-sms").respond_with_json({"ok": True})
    body = api.post("/api/schedule-sms/bulk", {"messages": [sms(n, delay=60_000) for n in range(3)]}).json()
    ids = [r["id"] for r in body["results"]]
    assert len({r["jobId"] for r in body["results"]}) == 1
    assert api.post(f"/api/messages/{ids[0]}/cancel", {}).status_code == 200
    # Bring the shared job forward instead of waiting a minute.
    Message.objects.filter(pk__in=ids[1:]).update(next_attempt_at=None)
    job_id = body["results"][0]["jobId"]
    scheduler = queues.get_scheduler()
    scheduler.enqueue_job(scheduler.job_class.fetch(job_id, connection=queues.get_connection()))
    run_jobs()
    assert Message.objects.get(pk=ids[0]).status == "cancelled"
    assert Message.objects.filter(pk__in=ids[1:], status="sent").count() == 2
    assert len(sms_provider.log) == 2


def test_a_batch_keeps_many_provider_calls_in_flight(api, sms_provider, settings):
    settings.WORKER_CONCURRENCY = 10
    in_flight = 0
    peak = 0
    lock = threading.Lock()

    def slow(request):
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.2)
        with lock:
            in_flight -= 1
        return Response("{}", status=200, content_type="application/json")

    sms_provider.expect_request("/send-sms").respond_with_handler(slow)
    api.post("/api/schedule-sms/bulk", {"messages": [sms(n) for n in range(40)]})
    started = time.monotonic()
    run_jobs()
    elapsed = time.monotonic() - started
    assert Message.objects.filter(status="sent").count() == 40
    assert peak >= 5, f"at most {peak} calls were in flight"
    assert elapsed < 40 * 0.2 / 2, f"took {elapsed:.1f}s: calls were not concurrent"


def test_bulk_scheduled_messages_go_out_at_their_time(api, sms_provider):
    sms_provider.expect_request("/send-sms").respond_with_json({"ok": True})
    body = api.post("/api/schedule-sms/bulk", {"messages": [sms(n, delay=1500) for n in range(20)]}).json()
    assert {r["status"] for r in body["results"]} == {"scheduled"}
    run_jobs(until=lambda: Message.objects.filter(status="sent").count() == 20)
    for message in Message.objects.all():
        first = message.delivery_attempts.get()
        assert first.started_at >= message.scheduled_for


def test_in_a_batch_a_failed_call_is_retried_on_its_own_and_the_rest_are_sent(api, sms_provider):
    calls: dict[str, int] = {}

    def flaky(request):
        to = json.loads(request.data)["to"]
        calls[to] = calls.get(to, 0) + 1
        if to.endswith("0003") and calls[to] == 1:
            return Response('{"error": "busy"}', status=503, content_type="application/json")
        return Response('{"id": "p"}', status=200, content_type="application/json")

    sms_provider.expect_request("/send-sms").respond_with_handler(flaky)
    api.post("/api/schedule-sms/bulk", {"messages": [sms(n) for n in range(10)]})
    run_jobs(until=lambda: Message.objects.filter(status="sent").count() == 10, timeout=30)
    retried = Message.objects.get(recipient="+14155550003")
    assert retried.attempts == 2
    assert list(retried.delivery_attempts.order_by("number").values_list("number", "outcome")) == [
        (1, "transient"),
        (2, "success"),
    ]
    assert set(Message.objects.exclude(pk=retried.pk).values_list("attempts", flat=True)) == {1}
    assert DeliveryAttempt.objects.count() == 11


def test_a_batch_over_the_delivery_rate_defers_the_rest_without_using_attempts(api, sms_provider, settings):
    settings.DELIVERY_RATE_LIMITS = {**settings.DELIVERY_RATE_LIMITS, "sms": "4/second"}
    sms_provider.expect_request("/send-sms").respond_with_json({"id": "p"})
    api.post("/api/schedule-sms/bulk", {"messages": [sms(n) for n in range(10)]})
    started = time.monotonic()
    run_jobs(until=lambda: Message.objects.filter(status="sent").count() == 10, timeout=30)
    assert time.monotonic() - started >= 1.0  # 10 messages at 4 per second need at least two more seconds
    assert set(Message.objects.values_list("attempts", flat=True)) == {1}
    starts = sorted(DeliveryAttempt.objects.values_list("started_at", flat=True))
    for i in range(len(starts) - 4):
        assert (starts[i + 4] - starts[i]).total_seconds() >= 0.9, "more than 4 calls within a second"


def test_a_batch_that_would_wait_long_for_the_rate_hands_the_rest_to_one_later_batch_job(
    api, sms_provider, settings
):
    settings.DELIVERY_RATE_LIMITS = {**settings.DELIVERY_RATE_LIMITS, "sms": "2/minute"}
    sms_provider.expect_request("/send-sms").respond_with_json({"id": "p"})
    body = api.post("/api/schedule-sms/bulk", {"messages": [sms(n) for n in range(5)]}).json()
    first_job = body["results"][0]["jobId"]
    # 2/minute paces calls 30 s apart: one goes now; the next slot is further than a batch waits
    # (20 s), so the other four move to one later batch job, which waits in rq-scheduler.
    run_jobs(
        until=lambda: (
            Message.objects.filter(status="sent").count() == 1
            and Message.objects.exclude(status="sent").exclude(rq_job_id=first_job).count() == 4
        )
    )
    assert Message.objects.filter(status="sent").count() == 1
    waiting = Message.objects.exclude(status="sent")
    assert set(waiting.values_list("status", "attempts")) == {("queued", 0)}  # no attempt used
    [later_job] = set(waiting.values_list("rq_job_id", flat=True))
    assert later_job.startswith("batch-") and later_job != first_job
    connection = queues.get_connection()
    due = connection.zscore(queues.SCHEDULED_JOBS_KEY, later_job)
    assert due is not None and due - time.time() > 20  # when the rate frees the next slot
    assert len(sms_provider.log) == 1


def test_messages_are_accepted_and_queued_at_the_same_instant(api):
    api.post("/api/schedule-sms/bulk", {"messages": [sms(n) for n in range(3)]})
    api.post("/api/schedule-sms", sms(9))
    times = list(Message.objects.values_list("accepted_at", "queued_at"))
    assert len(times) == 4
    assert all(accepted == queued for accepted, queued in times)


def test_each_distinct_workspace_is_looked_up_once_per_request(api, workspace_lookups):
    items = [sms(1), sms(2, workspaceId="other"), sms(3), sms(4, workspaceId="other"), sms(5)]
    body = api.post("/api/schedule-sms/bulk", {"messages": items}).json()
    assert body["accepted"] == 5
    # Once each by the API; once more each by the service, which creates them (they were new).
    assert sorted(workspace_lookups) == ["66338", "66338", "other", "other"]
    workspace_lookups.clear()
    assert api.post("/api/schedule-sms/bulk", {"messages": items}).json()["accepted"] == 5
    assert sorted(workspace_lookups) == ["66338", "other"]  # known now: the API's lookup is the only one


def test_a_repeated_recipient_is_parsed_once_per_request_and_each_item_gets_its_own_result(api, monkeypatch):
    import phonenumbers

    parsed: list[str] = []
    parse = phonenumbers.parse

    def counting(number, region=None, *args, **kwargs):
        parsed.append(number)
        return parse(number, region, *args, **kwargs)

    monkeypatch.setattr(phonenumbers, "parse", counting)
    items = [sms(1), sms(1), {**sms(2), "phoneNumber": "+1 555"}, sms(1), {**sms(3), "phoneNumber": "+1 555"}]
    body = api.post("/api/schedule-sms/bulk", {"messages": items}).json()
    assert [r["success"] for r in body["results"]] == [True, True, False, True, False]
    assert (
        body["results"][2]["errors"]
        == body["results"][4]["errors"]
        == {"phoneNumber": ["Is not a valid phone number."]}
    )
    assert len({r["id"] for r in body["results"] if r["success"]}) == 3
    assert sorted(Message.objects.values_list("recipient", flat=True)) == ["+14155550001"] * 3
    assert sorted(parsed) == ["+1 555", "+14155550001"]
    # The next request parses again: nothing is kept across requests.
    api.post("/api/schedule-sms/bulk", {"messages": [sms(1)]})
    assert parsed.count("+14155550001") == 2


def test_one_number_is_read_in_each_workspace_default_region(api):
    from messaging.models import Workspace

    Workspace.objects.create(external_id="uk", default_phone_region="GB")
    Workspace.objects.create(external_id="us", default_phone_region="US")
    items = [
        sms(1, workspaceId="uk", phoneNumber="07400 123456"),
        sms(2, workspaceId="us", phoneNumber="07400 123456"),
    ]
    body = api.post("/api/schedule-sms/bulk", {"messages": items}).json()
    assert [r["success"] for r in body["results"]] == [True, False]
    assert "phoneNumber" in body["results"][1]["errors"]
    assert list(Message.objects.values_list("recipient", flat=True)) == ["+447400123456"]

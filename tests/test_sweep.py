"""The outbox sweep: nothing the API accepted is lost when Redis is down, restarted or loses jobs."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from rq import SimpleWorker

from messaging import queues
from messaging.delivery.sweep import messages_sweep
from messaging.models import DeliveryAttempt, Message
from tests.conftest import message_status, run_jobs

GOOD = {"phoneNumber": "+14155550123", "message": "Hello", "contactId": "c-1", "workspaceId": "66338"}
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def provider(sms_provider):
    sms_provider.expect_request("/send-sms", method="POST").respond_with_json({"id": "prov-1"})
    return sms_provider


def receipts(httpserver) -> Counter:
    return Counter(request.headers.get("Idempotency-Key") for request, _ in httpserver.log)


def past(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


@pytest.fixture
def redis_down(settings):
    """Point the app at a closed port (connection refused), then back at the real test Redis."""
    real = settings.REDIS_URL
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    queues.reset_connection()

    def restore():
        settings.REDIS_URL = real
        queues.reset_connection()

    yield restore
    restore()


def test_with_redis_down_the_api_answers_202_accepted_quickly_and_the_sweep_delivers_later(
    api, provider, redis_down, client
):
    started = time.monotonic()
    responses = [api.post("/api/schedule-sms", {**GOOD, "contactId": f"c-{i}"}) for i in range(5)]
    elapsed = time.monotonic() - started
    assert [r.status_code for r in responses] == [202] * 5
    assert {r.json()["status"] for r in responses} == {"accepted"}
    assert "as soon as the queue backend is reachable" in responses[0].json()["message"]
    assert elapsed < 2.0, elapsed
    assert set(Message.objects.values_list("status", flat=True)) == {"accepted"}
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"].startswith("down")

    assert messages_sweep(now=timezone.now() + timedelta(minutes=1)) == {"redis_unavailable": 1}
    assert set(Message.objects.values_list("status", flat=True)) == {"accepted"}

    redis_down()  # Redis is back
    assert messages_sweep(now=timezone.now() + timedelta(minutes=1)) == {"enqueued_accepted": 5}
    assert set(Message.objects.values_list("status", flat=True)) == {"queued"}
    run_jobs()
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}
    assert sorted(receipts(provider).values()) == [1] * 5


def test_a_scheduled_message_accepted_while_redis_was_down_keeps_its_time(api, provider, redis_down):
    response = api.post("/api/schedule-sms", {**GOOD, "delay": 3_600_000})
    assert response.json()["status"] == "accepted"
    redis_down()
    messages_sweep(now=timezone.now() + timedelta(minutes=1))
    message = Message.objects.get(pk=response.json()["id"])
    assert message.status == "scheduled"
    score = queues.get_connection().zscore(queues.SCHEDULED_JOBS_KEY, message.rq_job_id)
    # Released a second before the second it is due in (queues.scheduler_time).
    assert score == pytest.approx(message.scheduled_for.timestamp() - 1, abs=1.0)


def test_the_sweep_leaves_fresh_accepted_messages_alone_for_the_grace_period(api, redis_down):
    api.post("/api/schedule-sms", GOOD)
    redis_down()
    assert messages_sweep() == {}
    assert message_status(Message.objects.get().pk) == "accepted"


def test_queued_messages_whose_jobs_vanished_in_a_redis_restart_are_sent_once(api, provider, redis_clean):
    ids = [api.post("/api/schedule-sms", {**GOOD, "contactId": f"c-{i}"}).json()["id"] for i in range(3)]
    redis_clean.flushdb()  # what a restart without persistence does
    Message.objects.update(queued_at=past(60))
    counts = messages_sweep()
    assert counts == {"requeued_job_missing": 3}
    assert messages_sweep() == {}  # a second sweep finds every job in place
    run_jobs()
    assert [message_status(i) for i in ids] == ["sent"] * 3
    assert receipts(provider) == Counter(ids)


def test_a_scheduled_message_whose_job_vanished_is_scheduled_again_for_its_time(api, redis_clean):
    response = api.post("/api/schedule-sms", {**GOOD, "delay": 600_000})
    redis_clean.flushdb()
    Message.objects.update(queued_at=past(60))
    assert messages_sweep() == {"requeued_job_missing": 1}
    message = Message.objects.get(pk=response.json()["id"])
    assert message.status == "scheduled"
    assert message.rq_job_id != response.json()["jobId"]
    assert redis_clean.zscore(queues.SCHEDULED_JOBS_KEY, message.rq_job_id) == pytest.approx(
        message.scheduled_for.timestamp() - 1, abs=1.0
    )


def test_a_scheduled_message_far_ahead_is_left_for_later_sweeps(api, redis_clean):
    api.post("/api/schedule-sms", {**GOOD, "delay": 2 * 3_600_000})
    redis_clean.flushdb()
    Message.objects.update(queued_at=past(60))
    assert messages_sweep() == {}


def test_an_overdue_job_still_in_the_scheduler_is_queued_directly(api, provider):
    response = api.post("/api/schedule-sms", {**GOOD, "delay": 5_000})
    old_job = response.json()["jobId"]
    # No scheduler ran: 40 s later the job still sits in rq-scheduler's set.
    later = timezone.now() + timedelta(seconds=40)
    Message.objects.update(queued_at=past(60))
    assert messages_sweep(now=later) == {"requeued_overdue": 1}
    connection = queues.get_connection()
    assert connection.zscore(queues.SCHEDULED_JOBS_KEY, old_job) is None
    assert queues.get_queue("sms").count == 1
    time.sleep(max(0.0, (Message.objects.get().next_attempt_at - timezone.now()).total_seconds()))
    SimpleWorker([queues.get_queue("sms")], connection=connection).work(burst=True)
    assert message_status(response.json()["id"]) == "sent"
    assert len(provider.log) == 1


def test_a_job_that_the_message_no_longer_points_at_sends_nothing(api, provider):
    response = api.post("/api/schedule-sms", GOOD)
    stale = response.json()["jobId"]
    Message.objects.update(queued_at=past(60))
    queues.get_connection().delete(f"rq:job:{stale}")
    messages_sweep()  # gives the message a new job; the old one is pushed again below
    queues.get_queue("sms").enqueue(queues.DELIVER_JOB, response.json()["id"], job_id=stale, at_front=True)
    run_jobs()
    assert message_status(response.json()["id"]) == "sent"
    assert len(provider.log) == 1
    assert queues.get_queue("sms").fetch_job(stale).return_value() == "skipped: superseded by another job"


def test_two_sweeps_over_the_same_rows_enqueue_each_message_once(api, redis_clean):
    from messaging.delivery import sweep

    api.post("/api/schedule-sms", GOOD)
    redis_clean.flushdb()
    Message.objects.update(queued_at=past(60))
    now = timezone.now()
    row = Message.objects.values(*sweep.FIELDS).get()  # both sweeps read the row before either moves it
    first = sweep.requeue([dict(row)], now=now, from_statuses=("queued",))
    second = sweep.requeue([dict(row)], now=now, from_statuses=("queued",))
    assert (first, second) == (1, 0)
    assert queues.get_queue("sms").count == 1


def _stuck_in_sending(api, *, attempts: int, started_ago: float, job_status: str | None) -> Message:
    """A message as a killed worker leaves it: claimed (attempt counted), no outcome recorded."""
    message = Message.objects.get(pk=api.post("/api/schedule-sms", GOOD).json()["id"])
    connection = queues.get_connection()
    connection.delete(f"rq:job:{message.rq_job_id}")
    connection.delete("rq:queue:sms")
    if job_status:
        connection.hset(f"rq:job:{message.rq_job_id}", "status", job_status)
    Message.objects.filter(pk=message.pk).update(
        status="sending", attempts=attempts, sending_started_at=past(started_ago)
    )
    return message


def test_a_message_whose_work_horse_died_is_retried_at_once(api, provider):
    message = _stuck_in_sending(api, attempts=1, started_ago=2, job_status="failed")
    assert messages_sweep() == {"resolved_sending": 1}
    message.refresh_from_db()
    assert message.status == "queued"
    assert message.error_kind == "interrupted"
    attempt = DeliveryAttempt.objects.get(message=message)
    assert (attempt.number, attempt.outcome, attempt.error_kind) == (1, "transient", "interrupted")
    run_jobs()
    message.refresh_from_db()
    assert (message.status, message.attempts) == ("sent", 2)
    assert receipts(provider) == {str(message.pk): 1}


def test_a_sending_message_whose_job_still_looks_started_waits_for_the_job_timeout(api, provider, settings):
    message = _stuck_in_sending(api, attempts=1, started_ago=5, job_status="started")
    assert messages_sweep() == {}
    limit = settings.RQ_JOB_TIMEOUT + settings.SWEEP_SENDING_GRACE_SECONDS
    Message.objects.filter(pk=message.pk).update(sending_started_at=past(limit + 1))
    assert messages_sweep() == {"resolved_sending": 1}
    assert message_status(message.pk) == "queued"


def test_a_message_interrupted_on_its_last_attempt_fails_with_the_reason(api, provider, settings):
    message = _stuck_in_sending(api, attempts=settings.DELIVERY_MAX_ATTEMPTS, started_ago=2, job_status=None)
    Message.objects.filter(pk=message.pk).update(sending_started_at=past(settings.RQ_JOB_TIMEOUT + 31))
    assert messages_sweep() == {"resolved_sending": 1}
    message.refresh_from_db()
    assert message.status == "failed"
    assert message.failed_at is not None
    assert "interrupted" in message.last_error
    assert "provider may have received it" in message.last_error


def test_sweep_messages_command_prints_counts_and_fails_without_redis(api, redis_down, capsys):
    api.post("/api/schedule-sms", GOOD)
    Message.objects.update(accepted_at=past(60))
    with pytest.raises(CommandError, match="Redis is unavailable"):
        call_command("sweep_messages")
    redis_down()
    call_command("sweep_messages")
    assert '"enqueued_accepted": 1' in capsys.readouterr().out


def _bulk(n: int) -> dict:
    return {
        "messages": [{**GOOD, "phoneNumber": f"+1415555{i:04d}", "contactId": f"c-{i}"} for i in range(n)]
    }


def test_bulk_messages_whose_batch_job_vanished_are_each_sent_once(api, provider, redis_clean):
    response = api.post("/api/schedule-sms/bulk", _bulk(30))
    assert response.status_code == 202
    redis_clean.flushdb()  # the batch jobs are lost
    Message.objects.update(queued_at=past(60))
    assert messages_sweep() == {"requeued_job_missing": 30}
    run_jobs()
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}
    assert sorted(receipts(provider).values()) == [1] * 30


def test_a_batch_job_skips_messages_the_sweep_gave_a_job_of_their_own(api, provider, redis_clean):
    api.post("/api/schedule-sms/bulk", _bulk(5))
    [batch_id] = queues.get_queue("sms").job_ids
    redis_clean.hset(f"rq:job:{batch_id}", "status", "failed")  # as if its horse had died
    Message.objects.update(queued_at=past(60))
    assert messages_sweep() == {"requeued_job_missing": 5}
    queues.get_queue("sms").enqueue(
        queues.DELIVER_BATCH_JOB,
        [str(pk) for pk in Message.objects.values_list("pk", flat=True)],
        job_id=batch_id,
        at_front=True,
    )
    run_jobs()
    assert queues.get_queue("sms").fetch_job(batch_id).return_value() == "skipped=5"
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}
    assert sorted(receipts(provider).values()) == [1] * 5


def test_bulk_posted_while_redis_is_down_is_accepted_and_swept_later(api, provider, redis_down):
    response = api.post("/api/schedule-sms/bulk", _bulk(10), headers={"Idempotency-Key": "bulk-1"})
    assert response.status_code == 202
    assert {item["status"] for item in response.json()["results"]} == {"accepted"}
    again = api.post("/api/schedule-sms/bulk", _bulk(10), headers={"Idempotency-Key": "bulk-1"})
    assert again.json() == response.json()
    assert Message.objects.count() == 10
    redis_down()
    assert messages_sweep(now=timezone.now() + timedelta(minutes=1)) == {"enqueued_accepted": 10}
    run_jobs()
    assert sorted(receipts(provider).values()) == [1] * 10


def test_a_job_taken_off_its_queue_by_a_worker_killed_before_starting_it_is_requeued(
    api, provider, redis_clean
):
    message_id = api.post("/api/schedule-sms", GOOD).json()["id"]
    # What RQ's dequeue does (LMOVE to the intermediate list) before a worker dies without starting it.
    redis_clean.lmove("rq:queue:sms", "rq:queue:sms:intermediate", "RIGHT", "LEFT")
    assert messages_sweep() == {}  # a message queued moments ago may simply be starting
    Message.objects.update(queued_at=past(60))
    assert messages_sweep() == {"requeued_job_orphaned": 1}
    run_jobs()
    assert message_status(message_id) == "sent"
    assert receipts(provider) == {message_id: 1}


def test_a_long_backlog_on_its_queue_is_left_alone(api, redis_clean):
    for i in range(3):
        api.post("/api/schedule-sms", {**GOOD, "contactId": f"c-{i}"})
    Message.objects.update(queued_at=past(600))
    assert messages_sweep() == {}
    assert queues.get_queue("sms").count == 3


def test_email_and_ai_requests_are_also_accepted_while_redis_is_down(api, redis_down):
    email = {
        "to": "a@example.com",
        "subject": "Hi",
        "html": "<p>Hi</p>",
        "contactId": "c-1",
        "workspaceId": "66338",
    }
    ai = {
        "workspace_id": "66338",
        "contact_id": "c-1",
        "message_id": "m-1",
        "message_text": "Opening hours?",
        "callback_url": "https://app.example.com/api/ai-response/callback",
        "rate_limit_key": "66338:c-1",
    }
    for path, body in (("/api/schedule-email", email), ("/api/ai-response", ai)):
        response = api.post(path, body)
        assert response.status_code == 202, (path, response.content)
        assert response.json()["status"] == "accepted"
    assert sorted(Message.objects.values_list("channel", "status")) == [
        ("ai", "accepted"),
        ("email", "accepted"),
    ]


def test_a_message_whose_job_started_but_whose_worker_died_before_the_claim_is_requeued(
    api, provider, redis_clean, settings
):
    message_id = api.post("/api/schedule-sms", GOOD).json()["id"]
    job_id = Message.objects.get().rq_job_id
    # What RQ records when a work horse starts a job; then worker and horse are SIGKILLed.
    redis_clean.lrem("rq:queue:sms", 0, job_id)
    redis_clean.hset(
        f"rq:job:{job_id}", mapping={"status": "started", "started_at": "2020-01-01T00:00:00.000000Z"}
    )
    Message.objects.update(queued_at=past(60))
    assert messages_sweep() == {"requeued_job_stalled": 1}
    run_jobs()
    assert message_status(message_id) == "sent"
    assert receipts(provider) == {message_id: 1}


def test_a_job_that_started_moments_ago_is_left_to_claim_its_message(api, redis_clean):
    from rq.utils import utcformat

    api.post("/api/schedule-sms", GOOD)
    job_id = Message.objects.get().rq_job_id
    redis_clean.lrem("rq:queue:sms", 0, job_id)
    redis_clean.hset(
        f"rq:job:{job_id}", mapping={"status": "started", "started_at": utcformat(timezone.now())}
    )
    Message.objects.update(queued_at=past(600))
    assert messages_sweep() == {}

"""Retention: RQ keeps results 7 days and failures 30 days; old message contents are cleared."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from rq import SimpleWorker
from rq.registry import FailedJobRegistry, FinishedJobRegistry

from messaging import jobs, queues
from messaging.models import DeliveryAttempt, Message, Workspace
from messaging.retention import finished_jobs_trim, messages_redact

DAY = 86_400


def test_immediate_and_scheduled_delivery_jobs_keep_results_7_days_and_failures_30_days(redis_clean):
    queues.enqueue_delivery("m-1", "sms", job_id="now-job")
    queues.enqueue_delivery("m-2", "sms", job_id="later-job", at=timezone.now() + timedelta(hours=1))
    for job_id in ("now-job", "later-job"):
        job = queues.RetainedJob.fetch(job_id, connection=redis_clean)
        assert (job.result_ttl, job.failure_ttl) == (7 * DAY, 30 * DAY), job_id


def test_any_job_enqueued_without_ttls_gets_the_retention_defaults(redis_clean):
    job = queues.get_queue("email").enqueue("builtins.len", [1])
    assert (job.result_ttl, job.failure_ttl) == (7 * DAY, 30 * DAY)
    explicit = queues.get_queue("email").enqueue("builtins.len", [1], result_ttl=60, failure_ttl=120)
    assert (explicit.result_ttl, explicit.failure_ttl) == (60, 120)


def test_a_failed_job_is_kept_30_days_not_a_year(redis_clean):
    queue = queues.get_queue("sms")
    job = queue.enqueue("builtins.int", "not a number")
    SimpleWorker([queue], connection=redis_clean).work(burst=True)
    registry = FailedJobRegistry(queue=queue)
    assert job.id in registry.get_job_ids()
    expires = redis_clean.zscore(registry.key, job.id)
    assert expires == pytest.approx(timezone.now().timestamp() + 30 * DAY, abs=60)
    assert redis_clean.ttl(job.key) == pytest.approx(30 * DAY, abs=60)


def test_finished_jobs_are_capped_per_queue_oldest_first(redis_clean):
    queue = queues.get_queue("sms")
    ids = []
    for batch in range(2):  # registry scores are whole seconds: finish the batches a second apart
        if batch:
            time.sleep(1.1)
        ids += [queue.enqueue("builtins.len", [i]).id for i in range(3)]
        SimpleWorker([queue], connection=redis_clean).work(burst=True)
    registry = FinishedJobRegistry(queue=queue)
    assert registry.count == 6
    assert finished_jobs_trim(keep=3) == 3
    assert set(registry.get_job_ids()) == set(ids[3:])
    assert not redis_clean.exists(f"rq:job:{ids[0]}")
    assert finished_jobs_trim(keep=3) == 0


def _message(status: str, age_days: float, **fields) -> Message:
    workspace, _ = Workspace.objects.get_or_create(external_id="66338")
    message = Message.objects.create(
        channel="sms",
        workspace=workspace,
        contact_id="c-1",
        recipient="+14155550123",
        body="Secret text",
        metadata={"source": "crm"},
        status=status,
        segments=1,
        **fields,
    )
    Message.objects.filter(pk=message.pk).update(accepted_at=timezone.now() - timedelta(days=age_days))
    return message


def test_old_finished_messages_lose_recipient_and_content_but_keep_their_counts(db, settings):
    settings.MESSAGE_RETENTION_DAYS = 30
    old_sent = _message("sent", 31, provider_response='{"to": "+14155550123"}')
    old_failed = _message("failed", 40)
    old_waiting = _message("scheduled", 31)
    young = _message("sent", 29)
    DeliveryAttempt.objects.create(
        message=old_sent,
        number=1,
        started_at=timezone.now(),
        duration_ms=5,
        outcome="success",
        response_excerpt="echo",
    )
    counts_before = sorted(Message.objects.values_list("channel", "status"))

    assert messages_redact() == 2
    assert messages_redact() == 0

    for message in (old_sent, old_failed):
        message.refresh_from_db()
        assert (message.recipient, message.body, message.metadata, message.provider_response) == (
            "",
            "",
            {},
            "",
        )
        assert message.redacted_at is not None
        assert message.segments == 1
    assert DeliveryAttempt.objects.get(message=old_sent).response_excerpt == ""
    for message in (old_waiting, young):
        message.refresh_from_db()
        assert (message.recipient, message.body, message.redacted_at) == ("+14155550123", "Secret text", None)
    assert sorted(Message.objects.values_list("channel", "status")) == counts_before


def test_retention_zero_keeps_contents(db, settings):
    settings.MESSAGE_RETENTION_DAYS = 0
    _message("sent", 400)
    assert messages_redact() == 0


def test_the_periodic_retention_job_runs_all_three_clean_ups(db, settings, redis_clean):
    settings.MESSAGE_RETENTION_DAYS = 30
    _message("cancelled", 31)
    assert jobs.retention() == {"redacted": 1, "idempotency_keys_pruned": 0, "finished_jobs_trimmed": 0}

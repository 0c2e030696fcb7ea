"""Periodic jobs: one idempotent registration, run by the ordinary workers, restored after a flush."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from rq import SimpleWorker

from messaging import queues
from messaging.delivery import periodic
from messaging.models import Message

GOOD = {"phoneNumber": "+14155550123", "message": "Hello", "contactId": "c-1", "workspaceId": "66338"}


def scheduled_ids(connection) -> set[str]:
    return {raw.decode() for raw in connection.zrange(queues.SCHEDULED_JOBS_KEY, 0, -1)}


def test_registering_twice_keeps_one_copy_of_each_periodic_job(redis_clean, capsys):
    call_command("register_periodic_jobs")
    first = capsys.readouterr().out
    call_command("register_periodic_jobs")
    second = capsys.readouterr().out
    assert first.splitlines() == ["periodic-sweep: registered", "periodic-retention: registered"]
    assert second.splitlines() == ["periodic-sweep: kept", "periodic-retention: kept"]
    assert scheduled_ids(redis_clean) == {"periodic-sweep", "periodic-retention"}
    job = queues.RetainedJob.fetch("periodic-sweep", connection=redis_clean)
    assert (job.origin, job.meta["interval"], job.func_name) == ("sms", 5, "messaging.delivery.jobs.sweep")


def test_a_changed_interval_replaces_the_job_and_unknown_periodic_jobs_are_removed(redis_clean, settings):
    periodic.periodic_jobs_register()
    queues.get_scheduler("sms").schedule(
        timezone.now(), "messaging.jobs.sweep", interval=9, id="periodic-old"
    )
    settings.SWEEP_INTERVAL_SECONDS = 7
    done = periodic.periodic_jobs_register()
    assert done == {"periodic-sweep": "registered", "periodic-retention": "kept", "periodic-old": "removed"}
    assert scheduled_ids(redis_clean) == {"periodic-sweep", "periodic-retention"}
    assert queues.RetainedJob.fetch("periodic-sweep", connection=redis_clean).meta["interval"] == 7


@pytest.mark.django_db(transaction=True)
def test_the_scheduler_puts_the_sweep_at_the_front_of_the_sms_queue_and_a_worker_runs_it(
    api, sms_provider, redis_clean, settings
):
    sms_provider.expect_request("/send-sms").respond_with_json({"id": "p"})
    for i in range(3):
        api.post("/api/schedule-sms", {**GOOD, "contactId": f"c-{i}"})
    redis_clean.flushdb()  # the queued jobs are lost
    Message.objects.update(queued_at=timezone.now() - timedelta(minutes=1))
    periodic.periodic_jobs_register()
    scheduler = queues.get_scheduler()
    scheduler.enqueue_jobs()
    sms = queues.get_queue("sms")
    assert sms.job_ids[:2] == ["periodic-sweep", "periodic-retention"]
    SimpleWorker([sms, queues.get_queue("email"), queues.get_queue("ai")], connection=redis_clean).work(
        burst=True
    )
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}
    assert len(sms_provider.log) == 3
    # Both stay registered for their next run.
    assert scheduled_ids(redis_clean) == {"periodic-sweep", "periodic-retention"}


def test_the_scheduler_process_class_restores_periodic_jobs_after_redis_lost_them(redis_clean):
    scheduler = queues.get_scheduler()
    assert isinstance(scheduler, periodic.MaintainingScheduler)
    scheduler.heartbeat()
    assert scheduled_ids(redis_clean) == {"periodic-sweep", "periodic-retention"}
    redis_clean.flushdb()  # a Redis restart without persistence
    scheduler._last_ensure -= periodic.ENSURE_EVERY_SECONDS
    scheduler.heartbeat()
    assert scheduled_ids(redis_clean) == {"periodic-sweep", "periodic-retention"}

"""The concurrent worker (`manage.py rqworker`, messaging.delivery.worker.Worker) as a real process:
many calls in flight in one process, RQ's registries and heartbeats kept, job timeouts enforced
without signals, a failing job alone failing, SIGTERM finishing what is in flight, and `kill -9`
leaving nothing the sweep does not settle."""

from __future__ import annotations

import signal
import time

import pytest
from django.db import connection
from rq import Worker as RqWorker
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

from messaging import queues
from messaging.models import DeliveryAttempt, Message
from tests.process_control import wait_for
from tests.process_fixtures import all_final, assert_invariant, in_flight, post, statuses

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]


def test_one_process_keeps_many_calls_in_flight_and_rq_records_every_job(api, processes, provider):
    provider.delay_seconds = 0.5
    processes.worker(WORKER_CONCURRENCY="25")
    started = time.monotonic()
    ids = post(api, 75)
    wait_for(lambda: all_final(ids), 30, what="75 messages")
    elapsed = time.monotonic() - started
    assert provider.peak >= 20, f"at most {provider.peak} calls were in flight"
    assert elapsed < 75 * 0.5 / 5, f"{elapsed:.1f}s: calls were not concurrent"
    assert set(statuses(ids).values()) == {"sent"}
    queue = queues.get_queue("sms")
    wait_for(lambda: FinishedJobRegistry(queue=queue).count == 75, 10, what="RQ to record 75 finished jobs")
    assert StartedJobRegistry(queue=queue).count == 0
    assert FailedJobRegistry(queue=queue).count == 0
    job_ids = set(Message.objects.filter(pk__in=ids).values_list("rq_job_id", flat=True))
    jobs = queue.job_class.fetch_many(list(job_ids), connection=queue.connection)
    assert {job.return_value() for job in jobs} == {"sent"}
    [worker] = RqWorker.all(connection=queues.get_connection())
    assert worker.successful_job_count == 75
    assert_invariant(ids, provider)


def test_heartbeats_go_on_while_calls_take_long(api, processes, provider, settings):
    provider.delay_seconds = 6
    processes.worker(PROVIDER_READ_TIMEOUT="7", RQ_JOB_TIMEOUT="20")
    [message_id] = post(api)
    wait_for(lambda: in_flight(provider, message_id), 20, what="the call")
    connection = queues.get_connection()
    [worker] = RqWorker.all(connection=connection)
    first = worker.last_heartbeat
    time.sleep(5.5)  # the worker beats every 5 s
    worker.refresh()
    assert worker.last_heartbeat > first
    assert worker.get_state() == "busy"
    assert StartedJobRegistry(queue=queues.get_queue("sms")).count == 1
    wait_for(lambda: all_final([message_id]), 15, what="the slow call")


def test_a_job_over_its_timeout_is_failed_and_the_others_carry_on(api, processes, provider):
    worker = processes.worker()
    queue = queues.get_queue("sms")
    stuck = queue.enqueue("tests.jobs.block", 30, job_timeout=2)  # ignores the exception in its thread
    busy = queue.enqueue("tests.jobs.spin", 30, job_timeout=2)  # stopped by it
    broken = queue.enqueue("tests.jobs.boom")
    ids = post(api, 10)
    wait_for(lambda: all_final(ids), 20, what="the messages beside the stuck jobs")
    failed = FailedJobRegistry(queue=queue)
    wait_for(
        lambda: {stuck.id, busy.id, broken.id} <= set(failed.get_job_ids()), 20, what="three failed jobs"
    )
    stuck.refresh()
    busy.refresh()
    broken.refresh()
    assert "exceeded maximum timeout value (2 seconds)" in stuck.latest_result().exc_string
    assert "exceeded maximum timeout value (2 seconds)" in busy.latest_result().exc_string
    assert "this job fails on purpose" in broken.latest_result().exc_string
    assert set(statuses(ids).values()) == {"sent"}
    assert worker.process.poll() is None
    assert_invariant(ids, provider)


def test_sigterm_finishes_every_call_in_flight_and_exits_0(api, processes, provider):
    provider.delay_seconds = 2
    worker = processes.worker()
    ids = post(api, 10)
    wait_for(lambda: all(in_flight(provider, pk) for pk in ids), 20, what="ten calls in flight")
    worker.signal(signal.SIGTERM)
    assert worker.process.wait(20) == 0
    assert set(statuses(ids).values()) == {"sent"}
    assert set(Message.objects.filter(pk__in=ids).values_list("attempts", flat=True)) == {1}
    assert provider.by_key() == {pk: 1 for pk in ids}
    assert StartedJobRegistry(queue=queues.get_queue("sms")).count == 0
    assert_invariant(ids, provider)


def test_sigterm_hands_back_what_waits_for_a_rate_slot(api, processes, provider):
    worker = processes.worker(DELIVERY_RATE_SMS="2/second")
    ids = post(api, 6)  # two go now, the others wait for their slots
    wait_for(lambda: len(provider.keys) >= 2, 20, what="the first two calls")
    worker.signal(signal.SIGTERM)
    assert worker.process.wait(10) == 0
    waiting = [pk for pk, status in statuses(ids).items() if status != "sent"]
    assert waiting, "every message went out before the stop"
    assert set(Message.objects.filter(pk__in=waiting).values_list("attempts", flat=True)) == {0}
    processes.worker(DELIVERY_RATE_SMS="2/second")
    processes.scheduler()
    wait_for(lambda: all_final(ids), 30, what="the rest after a restart")
    assert provider.by_key() == {pk: 1 for pk in ids}
    assert_invariant(ids, provider)


def test_kill_9_with_25_calls_in_flight_leaves_nothing_the_sweep_does_not_settle(
    api, processes, provider, timing
):
    provider.first_call_seconds = 3
    # One workspace may hold 7/8 of the delivery threads: 28 of 32.
    worker = processes.worker(WORKER_CONCURRENCY="32")
    processes.scheduler()
    ids = post(api, 40)
    wait_for(lambda: provider.in_flight >= 25, 20, what="25 calls in flight")
    worker.kill_with_children()
    sending = [pk for pk, status in statuses(ids).items() if status == "sending"]
    assert len(sending) >= 25
    processes.worker()  # a platform would restart it
    wait_for(lambda: all_final(ids), 60, what="every message to be final")
    assert set(statuses(ids).values()) == {"sent"}
    for pk in sending:
        attempts = list(
            DeliveryAttempt.objects.filter(message_id=pk)
            .order_by("number")
            .values_list("number", "error_kind")
        )
        assert attempts == [(1, "interrupted"), (2, "")], (pk, attempts)
    assert_invariant(ids, provider)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="counts sessions in pg_stat_activity")
def test_a_worker_process_opens_few_database_connections_however_many_calls_are_in_flight(
    api, processes, provider, settings
):
    provider.delay_seconds = 1

    def sessions_of_others() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )
            return cursor.fetchone()[0]

    # Two workspaces: one alone holds at most 28 of the 32 delivery threads. Posted before the worker
    # starts, so that the sessions this test process holds besides its own (its group committer's) are
    # counted first and left out.
    ids = post(api, 32) + post(api, 32, workspaceId="70001")
    own = sessions_of_others()
    processes.worker(WORKER_CONCURRENCY="32")
    wait_for(lambda: provider.in_flight >= 30, 20, what="30 calls in flight")
    sessions = sessions_of_others() - own
    # The engine thread's one, at most one per job thread: never one per call in flight.
    assert 1 <= sessions <= 1 + settings.WORKER_JOB_THREADS
    wait_for(lambda: all_final(ids), 30, what="the 64 messages")

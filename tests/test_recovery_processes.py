"""Crash and restart recovery with real processes.

Each test runs real `rqworker` / `rqscheduler` processes against a redis-server it owns (so it can
stop and start it) and a threaded local HTTP server as the SMS provider that records the
Idempotency-Key of every request. Processes are killed with SIGKILL (worker, work horse, scheduler)
or stopped with SIGTERM. Each test ends by checking the invariant: every accepted message ends sent,
failed or cancelled, and the provider received each message at most as many times as it has
attempts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from messaging import queues
from messaging.models import DeliveryAttempt, Message
from tests.process_control import wait_for
from tests.process_fixtures import (
    all_final,
    assert_invariant,
    called_more_than_once,
    in_flight,
    post,
    statuses,
)

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]


# The forking worker (a work horse per job), for deployments that choose job isolation.
FORK_WORKER = "messaging.worker.ForkWorker"


def test_kill_9_of_the_work_horse_mid_call_is_retried_with_the_same_idempotency_key(api, processes, provider):
    provider.first_call_seconds = 4
    worker = processes.worker(FORK_WORKER)
    processes.scheduler()
    [message_id] = post(api)
    wait_for(lambda: in_flight(provider, message_id), 20, what="the provider call to start")
    horses = wait_for(worker.children, 5, what="the work horse")
    killed_at = time.monotonic()
    for pid in horses:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: Message.objects.get(pk=message_id).status != "sending", 15, what="leaving `sending`")
    left_sending_after = time.monotonic() - killed_at
    wait_for(lambda: all_final([message_id]), 20, what="the message to be final")
    message = Message.objects.get(pk=message_id)
    assert (message.status, message.attempts) == ("sent", 2)
    assert provider.keys == [message_id, message_id]  # the resend carried the same Idempotency-Key
    kinds = list(
        DeliveryAttempt.objects.filter(message=message).values_list("number", "error_kind", "outcome")
    )
    assert kinds == [(1, "interrupted", "transient"), (2, "", "success")]
    assert left_sending_after < 6, left_sending_after  # the worker reports the dead horse; the sweep acts
    assert worker.process.poll() is None  # the worker itself carried on
    assert_invariant([message_id], provider)


@pytest.mark.parametrize("worker_class", ["", FORK_WORKER], ids=["in-process worker", "fork worker"])
def test_kill_9_of_worker_and_work_horse_leaves_sending_for_at_most_the_job_timeout(
    api, processes, provider, timing, worker_class
):
    provider.first_call_seconds = 4
    worker = processes.worker(worker_class)
    processes.scheduler()
    ids = post(api, 3)
    wait_for(lambda: in_flight(provider, ids[0]), 20, what="the first provider call")
    killed_at = time.monotonic()
    wait_for(lambda: all(in_flight(provider, pk) for pk in ids) or worker_class, 20, what="all calls")
    children = worker.kill_with_children()  # SIGKILL to the worker and its work horse, if any
    assert bool(children) == (worker_class == FORK_WORKER)  # the default worker runs jobs itself
    sending = [pk for pk, status in statuses(ids).items() if status == "sending"]
    # The default worker has all three calls in flight at once; a forking worker one.
    assert len(sending) == (1 if worker_class else 3)
    processes.worker()  # a platform would restart it
    wait_for(lambda: all_final(ids), 40, what="every message to be final")
    bound = timing.RQ_JOB_TIMEOUT + timing.SWEEP_SENDING_GRACE_SECONDS + 5
    assert time.monotonic() - killed_at < bound + 10
    for pk in sending:
        message = Message.objects.get(pk=pk)
        assert (message.status, message.attempts) == ("sent", 2)
        interrupted = DeliveryAttempt.objects.get(message=message, number=1)
        assert interrupted.error_kind == "interrupted"
        # The interrupted attempt's duration is how long the message sat in `sending`: bounded by the
        # job timeout plus the grace plus a sweep period or two.
        assert interrupted.duration_ms / 1000 < bound
        assert provider.by_key()[str(message.pk)] == 2
    assert_invariant(ids, provider)


def test_kill_9_of_the_worker_alone_lets_the_work_horse_finish_its_send(api, processes, provider):
    provider.first_call_seconds = 2
    worker = processes.worker(FORK_WORKER)
    [message_id] = post(api)
    wait_for(lambda: in_flight(provider, message_id), 20, what="the provider call")
    worker.signal(signal.SIGKILL)
    wait_for(lambda: all_final([message_id]), 15, what="the orphaned work horse to finish")
    message = Message.objects.get(pk=message_id)
    assert (message.status, message.attempts) == ("sent", 1)
    assert provider.keys == [message_id]
    assert_invariant([message_id], provider)


def test_sigterm_lets_the_current_job_finish_and_the_worker_exit_cleanly(api, processes, provider):
    provider.first_call_seconds = 3
    worker = processes.worker(FORK_WORKER)  # one job at a time
    ids = post(api, 2)
    wait_for(lambda: in_flight(provider, ids[0]), 20, what="the first provider call")
    worker.signal(signal.SIGTERM)
    assert worker.process.wait(20) == 0
    assert "Warm shut down requested" in worker.output() or "warm shut down" in worker.output().lower()
    first = Message.objects.get(pk=ids[0])
    assert (first.status, first.attempts) == ("sent", 1)
    assert Message.objects.get(pk=ids[1]).status == "queued"  # not started; waits for the next worker
    processes.worker()
    wait_for(lambda: all_final(ids), 20, what="the second message")
    assert provider.by_key() == {ids[0]: 1, ids[1]: 1}
    assert_invariant(ids, provider)


def test_with_two_schedulers_each_scheduled_message_is_delivered_once(api, processes, provider):
    processes.worker()
    first = processes.scheduler()
    processes.scheduler()
    ids = post(api, 12, delay=2_000) + post(api, 12, delay=4_000)
    wait_for(lambda: Message.objects.filter(pk__in=ids, status="sent").count() >= 6, 30, what="half sent")
    first.stop()  # SIGKILL one scheduler midway; the other carries on
    wait_for(lambda: all_final(ids), 40, what="every scheduled message")
    for message in Message.objects.filter(pk__in=ids):
        assert (message.status, message.attempts) == ("sent", 1)
        assert message.sent_at >= message.scheduled_for
    assert provider.by_key() == {pk: 1 for pk in ids}
    assert_invariant(ids, provider)


def test_a_redis_restart_loses_no_message(api, client, processes, provider, redis_server):
    worker = processes.worker()
    scheduler = processes.scheduler()
    before = post(api, 5, delay=3_000)  # in rq-scheduler's set when Redis goes down
    redis_server.stop()
    started = time.monotonic()
    during = post(api, 5)
    assert time.monotonic() - started < 3
    assert set(statuses(during).values()) == {"accepted"}
    assert client.get("/health/ready").status_code == 503
    time.sleep(1)
    redis_server.start()  # empty: no persistence
    queues.reset_connection()
    after = post(api, 5)
    ids = before + during + after
    try:
        wait_for(lambda: all_final(ids), 60, what="every message after the restart")
    except AssertionError:
        print(statuses(ids), provider.by_key())
        print("WORKER", worker.output()[-5000:])
        print("SCHEDULER", scheduler.output()[-5000:])
        raise
    assert set(statuses(ids).values()) == {"sent"}
    assert provider.by_key() == {pk: 1 for pk in ids}
    assert worker.process.poll() is None and scheduler.process.poll() is None
    assert client.get("/health/ready").status_code == 200
    assert_invariant(ids, provider)


def test_a_redis_restart_during_a_provider_call_does_not_stop_the_worker(
    api, processes, provider, redis_server
):
    provider.first_call_seconds = 3
    worker = processes.worker()
    processes.scheduler()
    ids = post(api, 2)
    wait_for(lambda: in_flight(provider, ids[0]), 20, what="the first provider call")
    redis_server.stop()
    time.sleep(4)  # the call finishes while Redis is down
    redis_server.start()
    queues.reset_connection()
    ids += post(api, 2)
    wait_for(lambda: all_final(ids), 60, what="every message after the restart")
    assert worker.process.poll() is None, worker.output()[-3000:]
    assert set(statuses(ids).values()) == {"sent"}
    assert "Redis answers, working again" in worker.output()
    assert_invariant(ids, provider)


def test_2000_messages_accepted_while_redis_is_down_reach_the_provider_once_after_it_returns(
    api, processes, provider, redis_server
):
    from rq import Worker as RqWorker

    processes.worker()
    processes.worker()
    processes.scheduler()
    wait_for(lambda: len(RqWorker.all(connection=queues.get_connection())) == 2, 10, what="two workers")
    redis_server.stop()
    ids = post(api, 2000)
    assert set(statuses(ids).values()) == {"accepted"}
    redis_server.start()  # empty: no persistence
    queues.reset_connection()
    returned = time.monotonic()
    wait_for(
        lambda: len(RqWorker.all(connection=queues.get_connection())) == 2,
        10,
        interval=0.05,
        what="both workers listed again",
    )
    listed_after = time.monotonic() - returned
    wait_for(lambda: all_final(ids), 90, interval=0.5, what="2,000 messages after Redis returned")
    last_call = max(arrived for arrived, _, _ in provider.arrivals) - returned
    print(
        f"workers listed again after {listed_after:.1f} s; last call {last_call:.1f} s after Redis returned"
    )
    assert listed_after < 3, f"workers were listed again {listed_after:.1f}s after Redis returned"
    assert last_call < 60, f"the last message reached the provider {last_call:.1f}s after Redis returned"
    assert set(statuses(ids).values()) == {"sent"}
    assert not called_more_than_once(provider)
    assert provider.by_key() == {pk: 1 for pk in ids}
    assert_invariant(ids, provider)


@pytest.mark.parametrize("when", ["as Redis stops", "while Redis is down"])
def test_sigterm_stops_scheduler_and_worker_when_redis_is_gone(processes, redis_server, when):
    # `make run` stops Redis and the other processes together; a stop must not wait for Redis.
    scheduler, worker = processes.scheduler(), processes.worker()
    redis_server.stop()
    if when == "while Redis is down":
        wait_for(
            lambda: "Redis unavailable" in scheduler.output(), 10, what="the scheduler to see the outage"
        )
    scheduler.signal(signal.SIGTERM)
    worker.signal(signal.SIGTERM)
    for process in (scheduler, worker):
        try:
            process.process.wait(10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 10 s after SIGTERM:\n{process.output()}")
        assert process.process.returncode == 0, process.output()

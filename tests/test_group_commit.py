"""The group committer (messaging.lib.groupcommit) on a real database: requests of many threads share
one transaction, each is answered only after its commit, and a bad item fails only its own request."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import IntegrityError, connection

from messaging import queues
from messaging.lib.groupcommit import CommitTimeout, GroupCommitter
from messaging.models import Message, Workspace

pytestmark = pytest.mark.django_db(transaction=True)

_committers: list[GroupCommitter] = []


@pytest.fixture(autouse=True)
def stop_committers():
    """Each committer a test builds is stopped after it (its thread would hold a database session)."""
    yield
    while _committers:
        _committers.pop().stop()


def new_committer(*args, **kwargs) -> GroupCommitter:
    made = GroupCommitter(*args, **kwargs)
    _committers.append(made)
    return made


def run_threads(count: int, target) -> None:
    threads = [threading.Thread(target=target, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)


def test_requests_that_arrive_while_a_group_commits_share_the_next_transaction():
    writes: list[list[str]] = []
    first_started = threading.Event()

    def write(items: list[str]) -> None:
        writes.append(list(items))
        Workspace.objects.bulk_create([Workspace(external_id=i) for i in items])
        if len(writes) == 1:
            first_started.set()
            time.sleep(0.3)  # a slow first commit: the other requests pile up meanwhile

    committer = new_committer(write)
    results: dict[int, str] = {}

    def request(n: int) -> None:
        if n:
            first_started.wait(10)
        committer.store([f"w-{n}"], timeout=10)
        # Answered only after the commit: the row is visible to this thread's own connection.
        results[n] = "stored" if Workspace.objects.filter(external_id=f"w-{n}").exists() else "missing"
        connection.close()

    run_threads(20, request)
    assert results == {n: "stored" for n in range(20)}
    assert len(writes) == 2, [len(w) for w in writes]
    assert sorted(writes[1]) == sorted(f"w-{n}" for n in range(1, 20))


def test_a_bad_item_fails_only_its_own_request():
    Workspace.objects.create(external_id="taken")
    gate = threading.Event()
    calls = []

    def write(items: list[str]) -> None:
        calls.append(len(items))
        if not gate.is_set():
            gate.set()
            time.sleep(0.3)
        Workspace.objects.bulk_create([Workspace(external_id=i) for i in items])

    committer = new_committer(write)
    outcomes: dict[int, str] = {}

    def request(n: int) -> None:
        if n:
            gate.wait(10)
        name = "taken" if n == 5 else f"ok-{n}"
        try:
            committer.store([name], timeout=10)
        except IntegrityError:
            outcomes[n] = "refused"
        else:
            outcomes[n] = "stored"
        connection.close()

    run_threads(10, request)
    assert outcomes == {n: ("refused" if n == 5 else "stored") for n in range(10)}
    assert set(Workspace.objects.values_list("external_id", flat=True)) == {"taken"} | {
        f"ok-{n}" for n in range(10) if n != 5
    }
    # The group of nine failed as a whole, then each of its requests was written alone.
    assert 9 in calls and calls.count(1) >= 9


def test_after_commit_runs_before_the_answer_and_its_failure_is_not_the_requests():
    seen_in_after_commit = []

    def after_commit(items: list[str]) -> None:
        seen_in_after_commit.extend(items)
        raise RuntimeError("Redis said no")

    committer = new_committer(
        lambda items: Workspace.objects.bulk_create([Workspace(external_id=i) for i in items]),
        after_commit=after_commit,
    )
    committer.store(["a", "b"], timeout=10)
    assert seen_in_after_commit == ["a", "b"]
    assert Workspace.objects.filter(external_id__in=["a", "b"]).count() == 2


def test_no_answer_in_time_is_a_commit_timeout():
    committer = new_committer(lambda items: time.sleep(1))
    with pytest.raises(CommitTimeout):
        committer.store(["slow"], timeout=0.1)


def test_a_request_stored_while_redis_is_down_answers_accepted_and_is_left_for_the_sweep(settings, api):
    settings.GROUP_COMMIT = True
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    queues.reset_connection()
    try:
        body = {"phoneNumber": "+14155550123", "message": "Hi", "contactId": "c-1", "workspaceId": "66338"}
        response = api.post("/api/schedule-sms", body)
    finally:
        queues.reset_connection()
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "accepted"
    assert Message.objects.get(pk=response.json()["id"]).status == "accepted"


def test_requests_of_many_threads_are_stored_in_fewer_transactions_and_share_batch_jobs(
    settings, redis_clean
):
    settings.GROUP_COMMIT = True
    from messaging import services

    monkey_committer = new_committer(
        services._insert, after_commit=services._enqueue_stored, max_wait=0.05, name="test-committer"
    )
    original, services._committer = services._committer, monkey_committer
    ids: list[str] = []
    try:

        def request(n: int) -> None:
            message = services.message_create(
                channel="sms",
                workspace_external_id="66338",
                contact_id=f"c-{n}",
                recipient="+14155550123",
                body="x",
            )
            ids.append(str(message.pk))
            connection.close()

        run_threads(10, request)
    finally:
        services._committer = original
    stored = Message.objects.filter(pk__in=ids)
    assert stored.count() == 10
    job_ids = set(stored.values_list("rq_job_id", flat=True))
    assert len(job_ids) < 10 and all(job_id.startswith(queues.BATCH_JOB_PREFIX) for job_id in job_ids)
    assert set(stored.values_list("status", flat=True)) == {"queued"}
    assert queues.get_queue("sms").count == len(job_ids)


def test_a_stopped_committer_closes_its_session_and_the_next_store_starts_a_new_thread():
    sessions: list[object] = []

    def write(items: list[str]) -> None:
        sessions.append(connection.connection)  # the committer thread's own database session
        Workspace.objects.bulk_create([Workspace(external_id=i) for i in items])

    committer = new_committer(write)
    committer.store(["before"], timeout=10)
    committer.stop()
    assert not any(t.name == "group-commit" and t.is_alive() for t in threading.enumerate())
    with pytest.raises(Exception, match="(?i)closed"):  # sqlite3 and psycopg both say so
        sessions[0].cursor().execute("SELECT 1")
    committer.store(["after"], timeout=10)
    assert set(Workspace.objects.values_list("external_id", flat=True)) >= {"before", "after"}

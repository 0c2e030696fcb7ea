"""A web worker killed with SIGKILL in the middle of a load run loses nothing it answered 202 for.

gunicorn runs with the production settings (config/gunicorn.py: threaded workers whose requests are
stored by a group committer). While client threads post single SMS requests, one web worker is killed
with SIGKILL; its requests in flight get no answer. Then every request answered 202 must have its
row, and once a worker and the scheduler (with its sweep) run, every stored row, including rows
committed but not yet enqueued when the worker died, must be sent.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest
import requests

from messaging.models import Message
from messaging.workspaces import api_key_create
from tests.process_control import child_pids, wait_for
from tests.process_fixtures import FINAL, GOOD, called_more_than_once
from tests.processes import running_services

pytestmark = pytest.mark.django_db(transaction=True)

CLIENTS = 8


def test_sigkill_of_a_web_worker_during_load_loses_no_accepted_message(processes, provider, tmp_path):
    _, key = api_key_create(name="load", all_workspaces=True)
    headers = {"Authorization": f"Bearer {key}"}
    answered: list[str] = []  # ids of 202 answers
    refused: list[int] = []  # other statuses
    no_answer: list[str] = []  # connection errors (the killed worker's requests)
    stop = threading.Event()
    lock = threading.Lock()

    def client(number: int) -> None:
        session = requests.Session()
        sent = 0
        while not stop.is_set():
            sent += 1
            body = {**GOOD, "contactId": f"c-{number}-{sent}", "workspaceId": str(66338 + number % 3)}
            try:
                response = session.post(f"{base}/api/schedule-sms", json=body, headers=headers, timeout=30)
            except requests.RequestException as exc:
                with lock:
                    no_answer.append(type(exc).__name__)
                session = requests.Session()
                continue
            with lock:
                if response.status_code == 202:
                    answered.append(response.json()["id"])
                else:
                    refused.append(response.status_code)

    with running_services(
        tmp_path, worker=False, scheduler=False, web_config=True, API_RATE_LIMIT_PER_KEY="100000/second"
    ) as services:
        base = services.base_url
        master = services.processes["web"].pid
        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(answered) >= 200, 60, what="200 answers before the kill")
        victim = child_pids(master)[0]
        answered_before_kill = len(answered)
        os.kill(victim, signal.SIGKILL)
        # Load goes on through the other worker and the one gunicorn starts in the victim's place.
        wait_for(lambda: len(answered) >= answered_before_kill + 300, 60, what="300 answers after the kill")
        stop.set()
        for thread in threads:
            thread.join(60)
        assert victim not in child_pids(master)
        web_log = services.output("web")

    assert not refused, (refused[:10], web_log[-3000:])
    assert len(set(answered)) == len(answered)
    # Every 202 has its row.
    stored = set(map(str, Message.objects.values_list("pk", flat=True)))
    missing = set(answered) - stored
    assert not missing, f"{len(missing)} messages answered 202 were not stored"
    # Every stored row is delivered, those committed but not enqueued when the worker died included
    # (the sweep puts them on the queue).
    processes.worker()
    processes.scheduler()
    wait_for(
        lambda: not Message.objects.exclude(status__in=FINAL).exists(),
        120,
        what="every stored message to be final",
    )
    assert set(Message.objects.values_list("status", flat=True)) == {"sent"}
    assert not called_more_than_once(provider)
    # Stored rows without a 202 can only be requests whose answer the kill cut off.
    assert len(stored) - len(answered) <= len(no_answer)

"""`manage.py seed_demo` and the offer of it in `make run` (run_dev)."""

from __future__ import annotations

import io
import sys

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from messaging.models import DeliveryAttempt, Message, Workspace
from messaging.reporting import rollup
from tests import factories


@pytest.mark.django_db(transaction=True)
def test_seed_demo_creates_named_workspaces_and_a_realistic_week(redis_clean):
    out = io.StringIO()
    call_command("seed_demo", "--messages", "3000", "--workspaces", "6", "--seed", "3", stdout=out)
    assert "Created 3040 messages" in out.getvalue()
    workspaces = list(Workspace.objects.all())
    assert len(workspaces) == 6
    assert all(w.external_id.isdigit() and len(w.external_id) == 5 for w in workspaces)
    assert sum(1 for w in workspaces if w.name) == 5  # one left unnamed to show the raw-ID fallback
    assert set(Message.objects.values_list("channel", flat=True)) == {"sms", "email", "ai"}
    assert set(Message.objects.values_list("status", flat=True)) >= {
        "sent",
        "failed",
        "cancelled",
        "scheduled",
    }
    kinds = set(Message.objects.filter(status="failed").values_list("error_kind", flat=True))
    assert len(kinds) >= 6 and {"http_400", "http_503", "ConnectTimeout"} <= kinds
    oldest = Message.objects.order_by("accepted_at").first().accepted_at
    assert 6 <= (timezone.now() - oldest).days <= 7
    assert Message.objects.filter(status="scheduled", scheduled_for__gt=timezone.now()).count() == 40
    assert DeliveryAttempt.objects.count() > 3000
    # Scheduled messages of every channel that has a sender were handed to rq-scheduler.
    from messaging.delivery.channels import CHANNELS as SENDERS

    handed = Message.objects.filter(status="scheduled", channel__in=list(SENDERS)).count()
    assert handed > 0
    assert redis_clean.zcard("rq:scheduler:scheduled_jobs") == handed
    assert rollup.stats_refresh() == 0
    client = Client()
    client.force_login(factories.user())
    for url in (
        "/",
        "/?window=7d",
        "/failures/",
        "/messages/",
        "/scheduled/",
        f"/workspaces/{workspaces[0].external_id}/",
    ):
        assert client.get(url).status_code == 200


def test_run_dev_prints_the_seed_hint_on_an_empty_database(db, monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    out = io.StringIO()
    call_command("run_dev", "--no-start", "--state-dir", str(tmp_path), stdout=out)
    assert "python manage.py seed_demo" in out.getvalue()
    assert Message.objects.count() == 0


def test_run_dev_asks_on_a_terminal_and_seeds_when_told_yes(db, monkeypatch, tmp_path):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdin", Terminal("y\n"))
    out = io.StringIO()
    call_command("run_dev", "--no-start", "--state-dir", str(tmp_path), stdout=out)
    assert "Created" in out.getvalue()
    assert Message.objects.count() > 1000

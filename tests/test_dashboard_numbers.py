"""Dashboard numbers that agree: a failure group's count opens exactly its messages, every panel of a
workspace page follows the window, "last 24 hours" is exact, queue cards show failed messages, no link
to an RQ job page that answers 404, no unused queue, test-send hints that match their fields."""

from __future__ import annotations

import html as html_lib
import re
import time
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone
from rq.job import Job

from messaging import queues
from messaging.models import Message, Status
from messaging.reporting import rollup
from tests import factories


def listed_ids(client: Client, url: str) -> set:
    """The ids of the messages the messages page lists at `url` (one page is enough here)."""
    page = client.get(url).content.decode()
    assert 'rel="next"' not in page
    return {m.pk for m in Message.objects.all() if f"/messages/{m.pk}/" in page}


def failed(ws, kind: str, *, channel: str = "sms", at=None) -> Message:
    message = factories.message(ws, channel=channel, status=Status.FAILED, error_kind=kind or "x", at=at)
    if not kind:  # a failure without an error kind: the "Unknown" group
        Message.objects.filter(pk=message.pk).update(error_kind="")
    return message


def group_links(page: str) -> list[tuple[str, str]]:
    """(count, href) of each failure group's count link (the linked number in the count column)."""
    return [
        (count, html_lib.unescape(href))
        for href, count in re.findall(r'<td class="num bad"><a href="([^"]*)"[^>]*>([^<]*)</a>', page)
    ]


def test_the_count_of_a_failure_group_opens_exactly_the_messages_of_that_group(staff):
    a, b = factories.workspace("801", "A"), factories.workspace("802", "B")
    groups = {
        ("sms", "http_503"): [failed(a, "http_503"), failed(a, "http_503"), failed(b, "http_503")],
        ("sms", "http_400"): [failed(a, "http_400"), failed(b, "http_400")],
        ("email", "http_503"): [failed(a, "http_503", channel="email")],
        ("sms", ""): [failed(b, "")],
    }
    factories.message(a)  # sent: in no group
    links = group_links(staff.get("/failures/").content.decode())
    assert len(links) == len(groups)
    opened = []
    for count, href in links:
        ids = listed_ids(staff, href)
        assert len(ids) == int(count), href
        opened.append(ids)
    assert sorted(map(sorted, opened)) == sorted(sorted(m.pk for m in ms) for ms in groups.values())


def test_the_errors_of_a_workspace_page_follow_the_window_and_open_their_messages(staff):
    ws, other = factories.workspace("803", "Errors Co"), factories.workspace("804", "Other")
    now = timezone.now()
    recent = failed(ws, "http_503", at=now - timedelta(minutes=10))
    today = failed(ws, "http_503", at=now - timedelta(hours=3))
    old = failed(ws, "http_400", at=now - timedelta(days=3))
    failed(other, "http_503", at=now - timedelta(minutes=5))  # same group, another workspace
    expected = {
        "1h": {"http_503": {recent.pk}},
        "24h": {"http_503": {recent.pk, today.pk}},
        "7d": {"http_503": {recent.pk, today.pk}, "http_400": {old.pk}},
        "all": {"http_503": {recent.pk, today.pk}, "http_400": {old.pk}},
    }
    for window, groups in expected.items():
        page = staff.get(f"/workspaces/803/?window={window}").content.decode()
        links = group_links(page)
        assert len(links) == len(groups), window
        for count, href in links:
            ids = listed_ids(staff, href)
            kind = re.search(r"error_kind=([^&]+)", href).group(1)
            assert ids == groups[kind] and int(count) == len(ids), (window, href)


def panel_numbers(page: str) -> dict:
    """The SMS numbers of a workspace page: card sent, chart sent, recent messages listed."""
    card = re.search(r"<h2>SMS <span[^>]*>[^<]*</span></h2>\s*<dl>.*?</dl>", page, re.S).group(0)
    chart = re.search(r"<strong>SMS</strong>.*?</i>([^<]*) sent", page, re.S).group(1)
    recent = re.search(r"<h2>Recent messages.*?</section>", page, re.S).group(0)
    return {
        "card": re.search(r"<dt>Sent</dt><dd[^>]*>([^<]*)</dd>", card).group(1),
        "chart": chart,
        "recent": str(recent.count("/messages/")),
    }


@pytest.mark.parametrize(
    ("window", "label", "expected"),
    [
        ("1h", "last hour", "1"),
        ("24h", "last 24 hours", "2"),
        ("7d", "last 7 days", "3"),
        ("all", "all time", "4"),
    ],
)
def test_every_panel_of_a_workspace_page_follows_the_window_and_names_it(staff, window, label, expected):
    ws = factories.workspace("805", "Panels")
    now = timezone.now()
    for ago in (timedelta(minutes=10), timedelta(hours=3), timedelta(days=3), timedelta(days=30)):
        factories.message(ws, at=now - ago)
    rollup.stats_refresh()  # closed hours come from the rollup, as in production
    page = staff.get(f"/workspaces/805/?window={window}").content.decode()
    assert panel_numbers(page) == {"card": expected, "chart": expected, "recent": expected}
    for heading in ("SMS", "Sent and failed per", "Most frequent errors", "Recent messages"):
        section = re.search(rf"<h2>{heading}.*?</h2>", page, re.S).group(0)
        assert label in section, (heading, section)


def test_last_24_hours_means_the_last_24_hours_not_since_a_whole_hour(staff):
    # Just before the window, in the same UTC hour as its start (unless the clock is at the very start
    # of an hour, which would put both in the window even when flooring).
    while (timezone.now() - timedelta(hours=24)).minute == 0 and timezone.now().second < 5:
        time.sleep(1)
    ws = factories.workspace("806", "Exact Window")
    now = timezone.now()
    factories.message(ws, at=now - timedelta(hours=24, seconds=2))
    factories.message(ws, at=now - timedelta(hours=23, minutes=59))
    rollup.stats_refresh()
    overview = staff.get("/?window=24h").content.decode()
    assert re.search(r'data-total="sent">([^<]*)<', overview).group(1) == "1"
    assert panel_numbers(staff.get("/workspaces/806/?window=24h").content.decode())["card"] == "1"
    since = re.search(r"since (\w+ \d+ [\d:]+) UTC", overview).group(1)
    assert since.count(":") == 2  # the start is named to the second


def test_queue_cards_show_failed_messages_and_label_job_counts(staff):
    ws = factories.workspace("807", "Queue Cards")
    for _ in range(3):
        failed(ws, "http_400")
    failed(ws, "http_503", channel="email")
    page = staff.get("/overview/live").content.decode()
    sms = re.search(r"sms</a> <span.*?</div>\s*</div>", page, re.S).group(0)
    assert re.search(
        r'<dt>Failed messages</dt><dd class="bad"><a href="/messages/\?status=failed&amp;channel=sms">3</a>',
        sms,
    )
    assert "<dt>Failed jobs (RQ)</dt><dd>0</dd>" in sms
    assert "<dt>Jobs waiting</dt>" in sms and "<dt>Jobs running</dt>" in sms
    assert listed_ids(staff, "/messages/?status=failed&channel=sms") == set(
        Message.objects.filter(channel="sms", status=Status.FAILED).values_list("pk", flat=True)
    )


def test_the_message_page_links_only_to_rq_jobs_that_still_exist(staff):
    ws = factories.workspace("808", "Jobs")
    kept, expired = factories.message(ws), factories.message(ws)
    Job.create(
        "messaging.delivery.jobs.deliver",
        args=[str(kept.pk)],
        id=kept.rq_job_id,
        connection=queues.get_connection(),
    ).save()
    page = staff.get(f"/messages/{kept.pk}/").content.decode()
    link = re.search(r'href="(/django-rq/queues/\d+/[^"]+/)"', page).group(1)
    assert staff.get(link).status_code == 200
    page = staff.get(f"/messages/{expired.pk}/").content.decode()
    assert "/django-rq/queues/" not in page
    assert expired.rq_job_id in page and "no longer kept" in page


def test_there_is_no_unused_default_queue(staff):
    from django_rq import get_scheduler

    from messaging.management.commands.rqscheduler import Command

    assert set(settings.RQ_QUEUES) == set(queues.QUEUE_NAMES)
    assert "default" not in staff.get("/django-rq/").content.decode()
    # `manage.py rqscheduler` without --queue runs on a queue that exists.
    options = Command().create_parser("manage.py", "rqscheduler").parse_args([])
    assert options.queue in queues.QUEUE_NAMES
    assert get_scheduler(name=options.queue).queue_name == options.queue


def test_the_send_at_hint_says_the_picker_takes_the_workspace_local_time(staff):
    ws = factories.workspace("809", "Berlin")
    ws.timezone = "Europe/Berlin"
    ws.save()
    page = staff.get("/test-send/?channel=sms").content.decode()
    field = re.search(r'<input type="datetime-local" name="scheduledFor".*?</small>', page, re.S).group(0)
    assert "workspace" in field and "time zone" in field
    assert "offset" not in field and "ISO 8601" not in field
    # What the picker sends, read as the hint says: wall-clock time in the workspace's zone.
    local = (
        (timezone.now() + timedelta(days=2))
        .astimezone(ZoneInfo("Europe/Berlin"))
        .replace(second=0, microsecond=0)
    )
    body = {
        "channel": "sms",
        "workspaceId": "809",
        "contactId": "c",
        "phoneNumber": "+14155550123",
        "message": "Later",
        "scheduledFor": local.strftime("%Y-%m-%dT%H:%M"),
    }
    assert staff.post("/test-send/", body).status_code == 302
    assert Message.objects.get(workspace=ws).scheduled_for == local


def test_the_ai_callback_field_offers_the_sandbox_receiver(staff, settings):
    settings.AI_API_URL = settings.SANDBOX_BASE_URL
    url = settings.SANDBOX_BASE_URL + "/callback/ai-reply"
    page = staff.get("/test-send/?channel=ai").content.decode()
    assert re.search(rf'name="callback_url" value="{re.escape(url)}"', page)
    body = {
        "channel": "ai",
        "workspace_id": "810",
        "contact_id": "c",
        "message_id": "m-1",
        "message_text": "Open on Saturday?",
        "callback_url": url,
        "rate_limit_key": "k",
    }
    response = staff.post("/test-send/", body)
    assert response.status_code == 302, response.content.decode()[-3000:]
    assert Message.objects.get(channel="ai").callback_url == url

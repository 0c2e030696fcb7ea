"""Dashboard pages: access control, content, actions (through the services), CSRF."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from django.utils.html import escape

from messaging.models import DeliveryAttempt, Message, SandboxReceipt, Status
from messaging.reporting import rollup
from tests import factories
from tests.conftest import run_jobs


@pytest.fixture
def sample(db):
    """A named and an unnamed workspace with a sent, a failed, a scheduled and an AI message."""
    named = factories.workspace("66338", "Cedar Dental")
    unnamed = factories.workspace("70001")
    sent = factories.message(named, body="Sent <b>hello</b>", at=timezone.now() - timedelta(minutes=5))
    failed = factories.message(
        named, status=Status.FAILED, error_kind="http_503", last_error="HTTP 503: down"
    )
    scheduled = factories.message(unnamed, status=Status.SCHEDULED, channel="email", subject="Later")
    ai = factories.message(
        named,
        channel="ai",
        body="Open on Saturday?",
        response_text="Yes, from 9 to 12.",
        recipient="crm.example.com",
    )
    return {
        "named": named,
        "unnamed": unnamed,
        "sent": sent,
        "failed": failed,
        "scheduled": scheduled,
        "ai": ai,
    }


def page_urls(sample) -> list[str]:
    return [
        "/",
        "/?window=1h",
        "/?window=7d",
        "/?window=all",
        "/overview/live?window=24h",
        "/workspaces/66338/",
        "/workspaces/70001/?window=7d",
        "/messages/",
        f"/messages/{sample['sent'].pk}/",
        f"/messages/{sample['ai'].pk}/",
        f"/messages/{sample['failed'].pk}/live",
        "/failures/",
        "/failures/retry?channel=sms&error_kind=http_503",
        "/scheduled/",
        "/test-send/",
        "/sandbox/received/",
        "/django-rq/",
        "/django-rq/queues/1/",
        "/django-rq/stats.json",
    ]


def test_anonymous_visitors_are_sent_to_the_admin_login(sample):
    client = Client()
    for url in page_urls(sample):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/?next="), url


def test_logged_in_users_who_are_not_staff_get_403_not_a_login_loop(sample):
    client = Client()
    client.force_login(factories.user("customer", staff=False))
    for url in page_urls(sample):
        response = client.get(url)
        assert response.status_code == 403, url
    assert b"Staff only" in client.get("/").content


def test_staff_get_every_page(staff, sample):
    for url in page_urls(sample):
        response = staff.get(url)
        assert response.status_code == 200, url


def test_actions_refuse_get_and_anonymous_posts(sample):
    failed = sample["failed"]
    assert Client().post(f"/messages/{failed.pk}/retry")["Location"].startswith("/admin/login/")
    client = Client()
    client.force_login(factories.user("op2"))
    assert client.get(f"/messages/{failed.pk}/retry").status_code == 405
    assert Message.objects.get(pk=failed.pk).status == Status.FAILED


def test_forms_need_a_csrf_token(sample):
    client = Client(enforce_csrf_checks=True)
    client.force_login(factories.user("op3"))
    failed = sample["failed"]
    assert client.post(f"/messages/{failed.pk}/retry").status_code == 403
    assert Message.objects.get(pk=failed.pk).status == Status.FAILED
    page = client.get(f"/messages/{failed.pk}/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert client.post(f"/messages/{failed.pk}/retry", {"csrfmiddlewaretoken": token}).status_code == 302
    assert Message.objects.get(pk=failed.pk).status == Status.QUEUED


def test_every_form_on_the_pages_carries_a_csrf_token(staff, sample):
    for url in page_urls(sample):
        html = staff.get(url).content.decode()
        for form in re.findall(r"<form[^>]*method=\"post\"[^>]*>.*?</form>", html, flags=re.S | re.I):
            assert "csrfmiddlewaretoken" in form, (url, form[:200])


def test_the_overview_shows_names_with_ids_counts_and_dashes(staff, sample):
    html = staff.get("/").content.decode()
    assert "Cedar Dental" in html and "66338" in html
    assert '<span class="ext-id raw">70001</span>' in html  # no name: the raw ID
    # Cedar Dental SMS: 1 sent, 1 failed (50 %); the unnamed workspace has no finished message: "–".
    row = re.search(r"Cedar Dental.*?</tr>", html, flags=re.S).group(0)
    cells = re.findall(r'<td class="num[^"]*">([^<]*)</td>', row)
    assert cells[:5] == ["1", "1", "0", "50.0 %", cells[4]]
    assert cells[4].endswith("ms")
    row = re.search(r"70001</span>.*?</tr>", html, flags=re.S).group(0)
    cells = re.findall(r'<td class="num[^"]*">([^<]*)</td>', row)
    assert cells[5:10] == ["0", "0", "1", "–", "–"]  # email: one scheduled message waiting
    assert 'data-live-url="/overview/live?window=24h"' in html
    assert "js/app.js" in html


def test_the_overview_counts_follow_the_window(staff, db):
    ws = factories.workspace("111", "Window Test")
    factories.message(ws, at=timezone.now() - timedelta(days=3))
    factories.message(ws, at=timezone.now() - timedelta(minutes=10))
    totals = {}
    for window in ("1h", "24h", "7d", "all"):
        html = staff.get(f"/?window={window}").content.decode()
        totals[window] = re.search(r'data-total="sent">([^<]*)<', html).group(1)
    assert totals == {"1h": "1", "24h": "1", "7d": "2", "all": "2"}


def test_the_overview_shows_dashes_for_queues_when_redis_is_down(staff, sample, settings):
    from messaging import queues

    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.REDIS_SOCKET_TIMEOUT = 0.2
    settings.RQ_QUEUES = {name: {"URL": settings.REDIS_URL} for name in ("sms", "email", "ai")}
    queues.reset_connection()
    try:
        response = staff.get("/overview/live")
        assert response.status_code == 200
        assert "–" in re.search(
            r'<section class="queues".*?</section>', response.content.decode(), re.S
        ).group(0)
    finally:
        queues.reset_connection()


def test_an_empty_database_shows_zeros_and_a_hint(staff):
    html = staff.get("/").content.decode()
    assert "seed_demo" in html
    assert re.search(r'data-total="sent">0<', html)


def test_the_workspace_page_draws_hourly_charts_and_lists_errors(staff, sample):
    html = staff.get("/workspaces/66338/").content.decode()
    assert html.count("<svg") >= 3
    assert 'class="bar-sent"' in html and 'class="bar-failed"' in html
    assert "HTTP 503" in html
    assert str(sample["sent"].pk) in html
    assert "style=" not in html


def test_messages_can_be_filtered(staff, sample):
    def ids(query):
        html = staff.get("/messages/?" + query).content.decode()
        return {m.pk for m in Message.objects.all() if f"/messages/{m.pk}/" in html}

    assert ids("status=failed") == {sample["failed"].pk}
    assert ids("channel=ai") == {sample["ai"].pk}
    assert ids("workspace=70001") == {sample["scheduled"].pk}
    assert ids("recipient=5550123") == {sample["sent"].pk, sample["failed"].pk}
    assert ids("error=503") == {sample["failed"].pk}
    today = timezone.now().date()
    assert len(ids(f"date_from={today}&date_to={today}")) == 4
    assert ids(f"date_to={today - timedelta(days=1)}") == set()
    assert "No workspace with ID" in staff.get("/messages/?workspace=nope").content.decode()


def test_the_message_list_pages_with_a_cursor_and_no_total_count(staff, db):
    ws = factories.workspace("222", "Pager")
    created = [factories.message(ws, at=timezone.now() - timedelta(minutes=i)) for i in range(60)]
    first = staff.get("/messages/").content.decode()
    next_link = re.search(r'href="\?([^"]*cursor=[^"]*)" rel="next"', first).group(1).replace("&amp;", "&")
    second = staff.get("/messages/?" + next_link).content.decode()
    on_first = {m.pk for m in created if f"/messages/{m.pk}/" in first}
    on_second = {m.pk for m in created if f"/messages/{m.pk}/" in second}
    assert len(on_first) == 50 and len(on_second) == 10 and not on_first & on_second
    assert 'rel="next"' not in second


def test_scheduled_messages_page_soonest_first_with_ties_broken_by_id(db):
    from messaging.reporting.selectors import scheduled_messages

    ws = factories.workspace("223", "Later")
    soon = timezone.now() + timedelta(hours=1)
    times = [
        soon,
        soon,
        soon + timedelta(minutes=1),
        soon + timedelta(minutes=2),
        soon + timedelta(minutes=3),
    ]
    created = [factories.message(ws, status=Status.SCHEDULED, scheduled_for=t) for t in times]
    expected = sorted(created, key=lambda m: (m.scheduled_for, m.pk))
    pages, cursor = [], ""
    while True:
        page = scheduled_messages(cursor=cursor, limit=2)
        pages.append([m.pk for m in page.items])
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == [[m.pk for m in expected[i : i + 2]] for i in range(0, 5, 2)]


def test_the_detail_page_shows_escaped_fields_attempts_and_the_job_link(staff, sample):
    from rq.job import Job

    from messaging import queues

    sent = sample["sent"]
    Message.objects.filter(pk=sent.pk).update(provider_response='{"id": "sbx_1"}', provider_status=200)
    # RQ still keeps the job: the page links to it.
    Job.create(
        "messaging.delivery.jobs.deliver",
        args=[str(sent.pk)],
        id=sent.rq_job_id,
        connection=queues.get_connection(),
    ).save()
    html = staff.get(f"/messages/{sent.pk}/").content.decode()
    assert "Sent &lt;b&gt;hello&lt;/b&gt;" in html and "<b>hello</b>" not in html
    assert "Delivery attempts" in html and "120 ms" in html
    from django_rq.settings import get_queues_map

    assert f"/django-rq/queues/{get_queues_map()['sms']}/{sent.rq_job_id}/" in html
    assert "{&quot;id&quot;: &quot;sbx_1&quot;}" in html
    ai_html = staff.get(f"/messages/{sample['ai'].pk}/").content.decode()
    assert "AI reply" in ai_html and "Yes, from 9 to 12." in ai_html


@pytest.mark.django_db(transaction=True)
def test_retry_from_the_detail_page_requeues_and_delivers(staff, sample, sms_provider):
    sms_provider.expect_request("/send-sms").respond_with_json({"id": "p-1"})
    failed = sample["failed"]
    response = staff.post(f"/messages/{failed.pk}/retry", follow=True)
    assert "Message queued again." in response.content.decode()
    run_jobs()
    failed.refresh_from_db()
    assert failed.status == Status.SENT
    assert len(sms_provider.log) == 1
    # A second retry of a message that is no longer failed is refused with a message, not a 500.
    response = staff.post(f"/messages/{failed.pk}/retry", follow=True)
    assert "Only failed messages can be retried" in response.content.decode()


def test_cancel_and_reschedule_from_the_pages(staff, sample):
    scheduled = sample["scheduled"]
    new_time = (timezone.now() + timedelta(days=2)).replace(second=0, microsecond=0)
    response = staff.post(
        f"/messages/{scheduled.pk}/reschedule",
        {"scheduled_for": new_time.strftime("%Y-%m-%dT%H:%M"), "next": "/scheduled/"},
    )
    assert response["Location"] == "/scheduled/"
    scheduled.refresh_from_db()
    assert scheduled.scheduled_for == new_time and scheduled.status == Status.SCHEDULED
    response = staff.post(f"/messages/{scheduled.pk}/cancel", {"next": "https://evil.example/"})
    assert response["Location"] == f"/messages/{scheduled.pk}/"
    scheduled.refresh_from_db()
    assert scheduled.status == Status.CANCELLED
    response = staff.post(f"/messages/{sample['sent'].pk}/cancel", follow=True)
    assert "can no longer be cancelled" in response.content.decode()


def test_the_scheduled_page_lists_upcoming_messages_soonest_first(staff, db):
    ws = factories.workspace("333", "Later Inc")
    now = timezone.now()
    late = factories.message(
        ws, status=Status.SCHEDULED, scheduled_for=now + timedelta(days=2), body="late one"
    )
    soon = factories.message(
        ws, status=Status.SCHEDULED, scheduled_for=now + timedelta(hours=1), body="soon one"
    )
    html = staff.get("/scheduled/").content.decode()
    assert html.index(str(soon.pk)) < html.index(str(late.pk))
    assert "Reschedule" in html and "Cancel" in html


def test_the_failures_page_groups_by_channel_and_error_kind(staff, db):
    ws = factories.workspace("444", "Failing Co")
    now = timezone.now()
    for i in range(3):
        factories.message(
            ws,
            status=Status.FAILED,
            error_kind="http_503",
            last_error="HTTP 503: x",
            at=now - timedelta(hours=i),
        )
    factories.message(
        ws, status=Status.FAILED, error_kind="ConnectTimeout", last_error="ConnectTimeout: slow"
    )
    factories.message(
        ws, channel="email", status=Status.FAILED, error_kind="http_503", last_error="HTTP 503: y"
    )
    html = staff.get("/failures/").content.decode()
    rows = re.findall(
        r"<tr>\s*<td>(\w+)</td>\s*<td><strong>([^<]+)</strong></td>\s*<td[^>]*><a[^>]*>(\d+)</a>", html
    )
    assert rows[0] == ("sms", "HTTP 503", "3")
    assert set(rows[1:]) == {("sms", "ConnectTimeout", "1"), ("email", "HTTP 503", "1")}
    confirm = staff.get("/failures/retry?channel=sms&error_kind=http_503").content.decode()
    assert "Retry 3 messages" in confirm


def test_retry_all_in_a_group_retries_only_that_group(staff, db):
    ws = factories.workspace("555", "Group Co")
    group = [factories.message(ws, status=Status.FAILED, error_kind="http_503") for _ in range(4)]
    other = factories.message(ws, status=Status.FAILED, error_kind="http_400")
    response = staff.post("/failures/retry", {"channel": "sms", "error_kind": "http_503"}, follow=True)
    assert "4 SMS message(s) queued again." in response.content.decode()
    assert set(Message.objects.filter(pk__in=[m.pk for m in group]).values_list("status", flat=True)) == {
        "queued"
    }
    assert Message.objects.get(pk=other.pk).status == Status.FAILED
    assert staff.post("/failures/retry", {"channel": "fax", "error_kind": "x"}).status_code == 404


def test_the_test_send_form_shows_field_errors_inline(staff, db):
    response = staff.post(
        "/test-send/",
        {
            "channel": "sms",
            "workspaceId": "66338",
            "contactId": "c",
            "phoneNumber": "12",
            "message": "",
            "metadata": "{",
        },
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "Is not valid JSON." in html
    assert Message.objects.count() == 0
    response = staff.post(
        "/test-send/",
        {"channel": "sms", "workspaceId": "66338", "contactId": "c", "phoneNumber": "12", "message": ""},
    )
    html = response.content.decode()
    assert html.count('class="field has-error"') == 2
    # The same reasons the API gives for the same body.
    from django.utils.html import escape

    from messaging.validation import RequestInvalid, clean_sms_request

    with pytest.raises(RequestInvalid) as api_errors:
        clean_sms_request({"workspaceId": "66338", "contactId": "c", "phoneNumber": "12"}, workspace=None)
    for field in ("phoneNumber", "message"):
        assert f'<small class="error">{escape(api_errors.value.errors[field][0])}</small>' in html


def test_the_test_send_form_refuses_metadata_that_cannot_be_stored_or_rewrites_the_call(staff, db):
    body = {"channel": "sms", "workspaceId": "66338", "contactId": "c", "phoneNumber": "+14155550123"}
    for metadata, reason in (
        ('{"score": NaN}', "Is not valid JSON."),
        ('{"note": "\\ud800"}', "Is not valid JSON."),
        ('{"bcc": "+14155550999"}', "Not allowed in metadata"),
    ):
        response = staff.post("/test-send/", {**body, "message": "Hi", "metadata": metadata})
        assert response.status_code == 200, metadata
        assert reason in response.content.decode(), metadata
    assert Message.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_the_test_send_form_sends_through_the_service_and_links_to_the_message(staff, db, sms_provider):
    sms_provider.expect_request("/send-sms").respond_with_json({"id": "p-2"})
    response = staff.post(
        "/test-send/",
        {
            "channel": "sms",
            "workspaceId": "66338",
            "contactId": "c-9",
            "phoneNumber": "+14155550199",
            "message": "Hi",
        },
    )
    assert response.status_code == 302
    message = Message.objects.get()
    assert response["Location"] == f"/test-send/?channel=sms&sent={message.pk}"
    assert (message.recipient, message.body, message.segments, message.status) == (
        "+14155550199",
        "Hi",
        1,
        "queued",
    )
    page = staff.get(response["Location"]).content.decode()
    assert f'href="/messages/{message.pk}/"' in page
    assert f'data-live-url="/messages/{message.pk}/live"' in page
    run_jobs()
    live = staff.get(f"/messages/{message.pk}/live").content.decode()
    assert 'data-final="true"' in live and "badge-sent" in live
    assert sms_provider.log[0][0].get_json()["to"] == "+14155550199"


def test_the_test_send_form_offers_only_channels_with_a_validator(staff, db):
    from messaging import services, validation

    html = staff.get("/test-send/").content.decode()
    assert "?channel=sms" in html
    has_email = hasattr(validation, "clean_email_request") and hasattr(services, "message_create")
    has_ai = hasattr(validation, "clean_ai_request") and hasattr(services, "ai_request_create")
    assert ("?channel=email" in html) == has_email
    assert ("?channel=ai" in html) == has_ai


def test_the_sandbox_page_lists_receipts_newest_first(staff, db, settings):
    first = SandboxReceipt.objects.create(
        endpoint="sms", path="/sandbox/send-sms", payload={"to": "+1 first"}, response_status=200
    )
    second = SandboxReceipt.objects.create(
        endpoint="sms", path="/sandbox/send-sms", payload={"to": "+1 second<"}, response_status=400
    )
    html = staff.get("/sandbox/received/").content.decode()
    assert html.index("+1 second&lt;") < html.index("+1 first")
    assert first.pk < second.pk
    settings.SANDBOX_ENABLED = False
    assert staff.get("/sandbox/received/").status_code == 404


def test_pages_need_no_inline_scripts_or_styles(staff, sample):
    for url in page_urls(sample):
        if url.startswith("/django-rq"):
            continue  # django-rq's own templates
        html = staff.get(url).content.decode()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), url
        assert " style=" not in html and "<style" not in html, url
        assert not re.search(r"\son[a-z]+=", html), url


def test_rollup_hours_are_recomputed_after_seed_like_writes(staff, db):
    ws = factories.workspace("666", "Backfill")
    old = timezone.now() - timedelta(days=2)
    factories.message(ws, at=old)
    assert re.search(r'data-total="sent">1<', staff.get("/?window=7d").content.decode())
    # A write into an hour that is already rolled up must mark it dirty (as seed_demo does).
    factories.message(ws, at=old)
    rollup.hours_mark_dirty([old])
    assert re.search(r'data-total="sent">2<', staff.get("/?window=7d").content.decode())
    assert DeliveryAttempt.objects.count() == 2


def test_lists_mask_recipients_and_the_detail_page_shows_them_in_full(staff, db):
    ws = factories.workspace("777", "Privacy Co")
    sent = factories.message(ws, recipient="+14155550123")
    failed = factories.message(
        ws,
        status=Status.FAILED,
        recipient="jane.doe@example.com",
        channel="email",
        error_kind="http_422",
        last_error="HTTP 422: jane.doe@example.com does not exist",
    )
    scheduled = factories.message(ws, status=Status.SCHEDULED, recipient="+14155550999")
    for url in ("/messages/", "/failures/", "/scheduled/", "/workspaces/777/"):
        html = staff.get(url).content.decode()
        for full in ("+14155550123", "jane.doe@example.com", "+14155550999"):
            assert full not in html, (url, full)
    assert "+14155550123" in staff.get(f"/messages/{sent.pk}/").content.decode()
    assert "jane.doe@example.com" in staff.get(f"/messages/{failed.pk}/").content.decode()
    assert scheduled.pk


@pytest.mark.django_db(transaction=True)
def test_the_email_test_send_form_sends_an_email(staff, email_provider):
    email_provider.expect_request("/api/email/send").respond_with_json({"id": "mail-1"})
    response = staff.post(
        "/test-send/",
        {
            "channel": "email",
            "workspaceId": "66338",
            "contactId": "c-1",
            "to": "ops@example.com",
            "subject": "Dashboard test",
            "html": "<p>Hi</p>",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    message = Message.objects.get()
    assert (message.channel, message.recipient, message.subject) == (
        "email",
        "ops@example.com",
        "Dashboard test",
    )
    run_jobs()
    assert Message.objects.get().status == Status.SENT
    assert email_provider.log[0][0].get_json()["subject"] == "Dashboard test"


def test_the_email_test_send_form_shows_the_api_field_errors(staff, db):
    response = staff.post(
        "/test-send/", {"channel": "email", "workspaceId": "66338", "contactId": "c", "to": "nope"}
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert html.count('class="field has-error"') == 3  # to, subject, html
    assert Message.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_the_ai_test_send_form_generates_a_reply_and_calls_back(staff, callback_server):
    callback_server.expect_request("/hooks/ai").respond_with_json({"ok": True})
    response = staff.post(
        "/test-send/",
        {
            "channel": "ai",
            "workspace_id": "66338",
            "contact_id": "c-2",
            "message_id": "m-1",
            "message_text": "Are you open on Sunday?",
            "callback_url": callback_server.url_for("/hooks/ai"),
            "rate_limit_key": "66338:c-2",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    message = Message.objects.get()
    assert message.channel == "ai"
    run_jobs(until=lambda: Message.objects.get(pk=message.pk).is_final)
    message.refresh_from_db()
    assert message.status == Status.SENT and message.response_text
    assert callback_server.log[0][0].get_json()["response_text"] == message.response_text
    detail = staff.get(f"/messages/{message.pk}/").content.decode()
    assert "AI reply" in detail and escape(message.response_text) in detail

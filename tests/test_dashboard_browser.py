"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright).

A live server serves the pages, the SMS provider is a local pytest-httpserver, and jobs run in a real
RQ worker (burst mode, in this process). Screenshots of every page go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone
from playwright.sync_api import expect

from messaging.devtools import demo
from messaging.models import Message, SandboxReceipt, Status
from tests import factories
from tests.conftest import run_jobs

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
SHOTS = Path(settings.BASE_DIR) / "test-artifacts" / "screenshots"


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.fail(f"No Chromium at {CHROMIUM}: run `make browser` (installs Debian's chromium).")
    # Playwright's sync API runs an event loop in this thread; the ORM calls the tests make are
    # still plain synchronous code.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, live_server):
    """A logged-in staff session in a fresh browser context."""
    password = secrets.token_urlsafe(16)
    factories.user("browser-op", password=password)
    context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=live_server.url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # A Content-Security-Policy violation (an inline script or style) is reported on the console.
    page.on(
        "console",
        lambda msg: (
            errors.append(f"{page.url}: {msg.text}") if "Content Security Policy" in msg.text else None
        ),
    )
    page.goto("/")
    assert "/admin/login/" in page.url
    page.fill("#id_username", "browser-op")
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/$"))
    yield page
    context.close()
    # django-rq's own stats page carries an inline style attribute (its template, not ours).
    assert [e for e in errors if "/django-rq/" not in e] == [], errors


def shoot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_a_test_sms_sent_through_the_form_shows_as_sent(page, sms_provider):
    sms_provider.expect_request("/send-sms").respond_with_json({"id": "prov-1", "status": "queued"})
    page.goto("/test-send/")
    page.fill("input[name=workspaceId]", "48151")
    page.fill("input[name=phoneNumber]", "not a number")
    page.fill("textarea[name=message]", "Hello from the browser test")
    page.click(".send-form button[type=submit]")
    assert page.locator(".field.has-error").count() == 1
    shoot(page, "07-test-send-errors")
    page.fill("input[name=phoneNumber]", "+14155550142")
    page.click(".send-form button[type=submit]")
    page.wait_for_selector("#sent-link")
    message = Message.objects.get()
    assert message.status == Status.QUEUED

    run_jobs(until=lambda: Message.objects.get(pk=message.pk).status == Status.SENT)
    # The result panel polls and turns to "sent" without a reload.
    page.wait_for_selector(".status-card[data-final=true] .badge-sent")
    shoot(page, "08-test-send-sent")
    assert sms_provider.log[0][0].get_json()["message"] == "Hello from the browser test"

    page.click("#sent-link")
    page.wait_for_selector(".status-big .badge-sent")
    assert page.locator("table.attempts tbody tr").count() == 1
    assert "prov-1" in page.content()
    shoot(page, "09-message-sent")

    page.goto("/?window=1h")
    row = page.locator("table.metrics tbody tr", has_text="48151")
    assert row.locator("td.num").first.inner_text() == "1"


def test_the_overview_numbers_refresh_without_a_reload(page):
    ws = factories.workspace("90210", "Live Refresh Co")
    page.goto("/?window=1h")
    sent_total = page.locator("[data-total=sent]")
    assert sent_total.inner_text() == "0"
    page.evaluate("window.__marker = 'same page'")
    factories.message(ws, at=timezone.now())
    # A locator wait (not wait_for_function, whose string predicate the page's CSP forbids to eval).
    expect(sent_total).to_have_text("1", timeout=12_000)
    assert page.evaluate("window.__marker") == "same page"


def test_a_failed_message_can_be_retried(page, sms_provider):
    sms_provider.expect_request("/send-sms").respond_with_json({"id": "prov-2"})
    failed = factories.message(
        factories.workspace("31337", "Retry Dental"),
        status=Status.FAILED,
        error_kind="http_503",
        last_error="HTTP 503: Temporarily unavailable",
    )
    page.goto(f"/messages/{failed.pk}/")
    assert page.locator(".error-box").inner_text().startswith("HTTP 503")
    shoot(page, "10-message-failed")
    page.click("button:has-text('Retry')")
    page.wait_for_selector(".flash-success")
    assert Message.objects.get(pk=failed.pk).status == Status.QUEUED
    run_jobs(until=lambda: Message.objects.get(pk=failed.pk).status == Status.SENT)
    page.wait_for_selector(".status-big .badge-sent")
    assert len(sms_provider.log) == 1


def test_a_scheduled_message_can_be_cancelled(page):
    ws = factories.workspace("27182", "Cancel Clinic")
    keep = factories.message(ws, status=Status.SCHEDULED, scheduled_for=timezone.now() + timedelta(hours=5))
    cancel = factories.message(ws, status=Status.SCHEDULED, scheduled_for=timezone.now() + timedelta(hours=1))
    page.goto("/scheduled/")
    shoot(page, "11-scheduled")
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
    row = page.locator("tr", has_text=str(cancel.scheduled_for.strftime("%H:%M")))
    page.locator(f"form[action='/messages/{cancel.pk}/cancel'] button").click()
    page.wait_for_selector(".flash-success")
    assert dialogs == ["Cancel this scheduled message?"]
    assert Message.objects.get(pk=cancel.pk).status == Status.CANCELLED
    assert Message.objects.get(pk=keep.pk).status == Status.SCHEDULED
    assert row.count() == 0 or str(cancel.pk) not in page.content()


def test_screenshots_of_every_page(page, live_server):
    workspaces = demo.ensure_workspaces(6, __import__("random").Random(5))
    demo.generate(workspaces=workspaces, messages=2500, scheduled=25, seed=5)
    SandboxReceipt.objects.create(
        endpoint="sms",
        path="/sandbox/send-sms",
        payload={"to": "+14155550100", "message": "Hi"},
        headers={"Idempotency-Key": "x"},
        idempotency_key="x",
        response_status=200,
    )
    named = workspaces[0]
    failed = Message.objects.filter(status=Status.FAILED).order_by("-failed_at").first()
    sent_ai = Message.objects.filter(status=Status.SENT, channel="ai").first()
    pages = [
        ("01-overview", "/"),
        ("02-overview-7d", "/?window=7d"),
        ("03-workspace", f"/workspaces/{named.external_id}/?window=7d"),
        ("04-messages", "/messages/"),
        ("05-failures", "/failures/"),
        ("06-test-send", "/test-send/"),
        ("06b-test-send-email", "/test-send/?channel=email"),
        ("06c-test-send-ai", "/test-send/?channel=ai"),
        ("12-message-failed-demo", f"/messages/{failed.pk}/"),
        ("13-message-ai", f"/messages/{sent_ai.pk}/"),
        ("14-failures-retry-confirm", f"/failures/retry?channel=sms&error_kind={failed.error_kind}"),
        ("15-messages-filtered", "/messages/?status=failed&channel=sms"),
        ("16-sandbox", "/sandbox/received/"),
        ("17-django-rq", "/django-rq/"),
        ("18-admin", "/admin/"),
        ("19-scheduled-demo", "/scheduled/"),
    ]
    for name, url in pages:
        response = page.goto(url)
        assert response.status == 200, url
        shoot(page, name)
    assert len(list(SHOTS.glob("*.png"))) >= len(pages)

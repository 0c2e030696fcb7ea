"""grep the logs of real web, worker and scheduler processes for phone numbers, addresses and bodies."""

from __future__ import annotations

import json
import re
import secrets
import time

import pytest
import requests
from werkzeug import Response

from tests.pii_log_check import find_full_values
from tests.processes import running_services

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.processes]

PHONE = "+14155550123"
OTHER_PHONE = "+447400123456"
EMAIL = "rita.lopez@example.com"
# Any of these in a log means a full value leaked (digits alone catch reformatted numbers too).
LEAKS = [re.escape(PHONE[1:]), re.escape(OTHER_PHONE[1:]), r"rita\.lopez(@|%40)", r"ita\.lopez"]


def wait_for_status(
    base_url: str, headers: dict, message_id: str, statuses: set[str], timeout: float = 20
) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = requests.get(f"{base_url}/api/messages/{message_id}", headers=headers, timeout=5).json()
        if body.get("status") in statuses:
            return body
        time.sleep(0.1)
    raise AssertionError(f"message stayed {body.get('status')}")


def test_logs_of_web_worker_and_scheduler_hold_no_full_number_address_or_body(api_key, httpserver, tmp_path):
    calls = []

    def provider(request):
        # A provider that echoes the request in its errors, as real ones do: first 503, then 400.
        payload = json.loads(request.data)
        calls.append(payload)
        status = 503 if len(calls) == 1 else 400
        return Response(json.dumps({"error": "rejected", "request": payload}), status=status)

    httpserver.expect_request("/send-sms", method="POST").respond_with_handler(provider)
    body_marker = f"BODY-{secrets.token_hex(8)}"
    with running_services(
        tmp_path,
        SMS_API_URL=httpserver.url_for("").rstrip("/"),
        LOG_LEVEL="DEBUG",
        GUNICORN_CMD_ARGS="--access-logfile - --log-level debug",
    ) as services:
        base, headers = services.base_url, {"Authorization": f"Bearer {api_key}"}
        sent = requests.post(
            f"{base}/api/schedule-sms",
            json={
                "phoneNumber": PHONE,
                "message": f"Your code is {body_marker}",
                "contactId": "c-1",
                "workspaceId": "66338",
                "metadata": {"email": EMAIL, "backup": OTHER_PHONE},
            },
            headers=headers,
            timeout=5,
        )
        assert sent.status_code == 202, sent.text
        message_id = sent.json()["id"]
        failed = wait_for_status(base, headers, message_id, {"failed"})
        assert failed["attempts"] == 2
        assert PHONE in failed["lastError"] or "HTTP 400" in failed["lastError"]

        # Personal data in URLs and in refused bodies (gunicorn's access log prints request lines).
        bad = requests.post(
            f"{base}/api/schedule-sms",
            json={
                "phoneNumber": PHONE + "99999",
                "message": body_marker,
                "contactId": EMAIL,
                "workspaceId": 1,
            },
            headers=headers,
            timeout=5,
        )
        assert bad.status_code == 400
        assert requests.get(f"{base}/api/messages/{PHONE}", headers=headers, timeout=5).status_code == 404
        assert (
            requests.get(
                f"{base}/api/messages/x", params={"to": PHONE, "email": EMAIL}, timeout=5
            ).status_code
            == 401
        )
        assert requests.get(f"{base}/?recipient={EMAIL}", allow_redirects=False, timeout=5).status_code == 302
        time.sleep(0.5)  # let the access log lines reach the file

    logs = {name: services.output(name) for name in ("web", "worker", "scheduler")}
    for name, text in logs.items():
        for pattern in LEAKS:
            found = re.search(pattern, text)
            assert found is None, (
                f"{name} log leaks {found.group(0)!r}: {text[max(0, found.start() - 200) : found.end() + 50]}"
            )
        assert body_marker not in text, f"{name} log contains a message body"

    # The values were logged, masked: the test would see them if masking broke.
    assert "%2B1415***0123" in logs["web"] or "+1415***0123" in logs["web"]
    assert "r***%40example.com" in logs["web"] or "r***@example.com" in logs["web"]
    # rq's job lines name the job function with the message id only.
    assert f"messaging.delivery.jobs.deliver('{message_id}')" in logs["worker"]
    assert len(calls) == 2 and calls[0]["to"] == PHONE  # the provider did get the full number


def spread(digits: str) -> str:
    """A pattern for `digits` however separated or percent-encoded (%2B1+415+555+0123, (415) 555-0123)."""
    return r"\D{0,9}".join(digits)


# The national digits of both numbers, whatever is between them: a full number in any spelling.
SPREAD_LEAKS = [spread("4155550123"), spread("7400123456")]


def test_numbers_in_paths_and_query_strings_are_masked_in_the_access_log_and_djangos_log(api_key, tmp_path):
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    staff = Client()
    staff.force_login(get_user_model().objects.create_superuser("log-check", password=None))
    with running_services(
        tmp_path,
        worker=False,
        scheduler=False,
        LOG_LEVEL="DEBUG",
        SECRET_KEY=settings.SECRET_KEY,  # the session made here with force_login must verify there
        # The project's own gunicorn settings (config/gunicorn.py), as the Procfile runs it, and an
        # access-log format that also prints the decoded path and the bare query string.
        GUNICORN_CMD_ARGS=(
            "-c config/gunicorn.py --access-logfile - --log-level debug --access-logformat "
            """'%(h)s "%(r)s" %(s)s %(b)s "%(f)s" path=%(U)s query=%(q)s'"""
        ),
    ) as services:
        base = services.base_url
        key = {"Authorization": f"Bearer {api_key}"}
        session = requests.Session()
        session.cookies.set("sessionid", staff.cookies["sessionid"].value)
        searches = [
            # Search forms as browsers submit them ("+" is a space), and as people type numbers.
            ("/messages/", {"recipient": "+1 415 555 0123"}),
            ("/messages/", {"recipient": "(415) 555-0123"}),
            ("/admin/messaging/message/", {"q": "+44 7400 123456"}),
            ("/admin/messaging/message/", {"q": "415.555.0123"}),
            ("/admin/messaging/message/", {"q": EMAIL}),
        ]
        for path, params in searches:
            response = session.get(f"{base}{path}", params=params, allow_redirects=False, timeout=10)
            assert response.status_code == 200, (path, response.status_code)
            # Anonymous: redirected to the login page, whose next= holds the search URL encoded again.
            login = requests.get(f"{base}{path}", params=params, timeout=10)
            assert login.status_code == 200 and "next=" in login.url
        for path in ("/api/messages/+1%20(415)%20555-0123", "/api/messages/%2B44%207400%20123456"):
            assert requests.get(f"{base}{path}", headers=key, timeout=5).status_code == 404
        # A dashboard page whose path holds a number: Django logs "Not Found: <decoded path>".
        assert session.get(f"{base}/messages/+1 415 555 0123/", timeout=5).status_code == 404
        referer = f"{base}/messages/?recipient=%2B1+415+555+0123"
        assert requests.get(f"{base}/health", headers={"Referer": referer}, timeout=5).status_code == 200
        time.sleep(0.5)  # let the access log lines reach the file

    web_log = services.output("web")
    assert web_log.count('"GET /admin/messaging/message/?q=') >= 3, web_log[-3000:]
    assert "path=/api/messages/" in web_log and "query=recipient=" in web_log
    assert "Not Found: /messages/" in web_log
    for pattern in [*LEAKS, *SPREAD_LEAKS]:
        found = re.search(pattern, web_log)
        assert found is None, (
            f"web log leaks {found.group(0)!r}: {web_log[max(0, found.start() - 200) : found.end() + 50]}"
        )
    assert find_full_values(web_log) == []

"""With DEBUG=False, collectstatic and gunicorn: every dashboard and admin page, and every static file
they reference (and the files those stylesheets reference), answers 200.

Runs `manage.py collectstatic` and `gunicorn config.wsgi` as subprocesses with production settings
against the test database, and talks to gunicorn over HTTP as a logged-in staff user.
"""

from __future__ import annotations

import os
import random
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from django.conf import settings
from django.contrib import admin
from django.db import connection
from django.test import Client
from django.urls import reverse

from messaging.devtools import demo
from messaging.models import Message, SandboxReceipt, Status
from tests import factories

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def gunicorn(tmp_path):
    env = {
        **os.environ,
        "DJANGO_ENV": "production",
        "DEBUG": "false",
        # The same key as this process: the session made here with force_login must verify there.
        "SECRET_KEY": settings.SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SMS_API_URL": "http://127.0.0.1:9",
        "SANDBOX_ENABLED": "true",
        "SECURE_SSL_REDIRECT": "false",
        "STATIC_ROOT": str(tmp_path / "static"),
        "LOG_LEVEL": "WARNING",
    }
    python = sys.executable
    subprocess.run(
        [python, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=settings.BASE_DIR,
        env=env,
        check=True,
        timeout=120,
    )
    assert (tmp_path / "static" / "staticfiles.json").exists()  # manifest storage
    port = free_port()
    log = open(tmp_path / "gunicorn.log", "w")  # noqa: SIM115
    process = subprocess.Popen(
        [
            str(Path(python).with_name("gunicorn")),
            "config.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
        ],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                if requests.get(base + "/health", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        else:
            raise AssertionError("gunicorn did not start: " + (tmp_path / "gunicorn.log").read_text())
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def admin_urls() -> list[str]:
    urls = [reverse("admin:index")]
    for model, model_admin in admin.site._registry.items():
        info = (model._meta.app_label, model._meta.model_name)
        urls.append(reverse("admin:{}_{}_changelist".format(*info)))
        if not model._meta.managed:
            continue  # django-rq's admin entry: a link to its queue views, no table
        if model_admin.has_add_permission(_superuser_request()):
            urls.append(reverse("admin:{}_{}_add".format(*info)))
        first = model._default_manager.first()
        if first is not None:
            urls.append(reverse("admin:{}_{}_change".format(*info), args=[first.pk]))
    return urls


def _superuser_request():
    class Request:
        user = type(
            "U", (), {"is_active": True, "is_staff": True, "is_superuser": True, "has_perm": lambda *a: True}
        )()

    return Request()


def static_refs(html: str) -> set[str]:
    return set(re.findall(r'(?:href|src)="(/static/[^"]+)"', html))


def test_every_page_and_static_file_answers_200_under_gunicorn_with_debug_off(gunicorn):
    workspaces = demo.ensure_workspaces(3, random.Random(2))
    demo.generate(workspaces=workspaces, messages=400, scheduled=5, seed=2)
    SandboxReceipt.objects.create(
        endpoint="sms", path="/sandbox/send-sms", payload={"to": "+1"}, response_status=200
    )
    superuser = factories.user("prod-admin")
    superuser.is_superuser = True
    superuser.save()
    client = Client()
    client.force_login(superuser)
    session = requests.Session()
    session.cookies.set("sessionid", client.cookies["sessionid"].value)

    failed = Message.objects.filter(status=Status.FAILED).first()
    pages = [
        "/",
        "/?window=7d",
        "/overview/live",
        f"/workspaces/{workspaces[0].external_id}/",
        "/messages/",
        "/messages/?status=failed",
        f"/messages/{failed.pk}/",
        f"/messages/{failed.pk}/live",
        "/failures/",
        f"/failures/retry?channel={failed.channel}&error_kind={failed.error_kind}",
        "/scheduled/",
        "/test-send/",
        "/sandbox/received/",
        "/django-rq/",
        *admin_urls(),
    ]
    statics: set[str] = set()
    for url in pages:
        response = session.get(gunicorn + url, timeout=10, allow_redirects=False)
        assert response.status_code == 200, (url, response.status_code, response.text[:500])
        statics |= static_refs(response.text)
    # The anonymous login page and its static files too.
    login = requests.get(gunicorn + "/admin/login/", timeout=10)
    assert login.status_code == 200
    statics |= static_refs(login.text)
    assert any(re.search(r"/static/css/app\.[0-9a-f]{12}\.css$", s) for s in statics), statics  # hashed names
    assert any(s.startswith("/static/admin/") for s in statics)

    checked: set[str] = set()
    queue = sorted(statics)
    while queue:
        path = queue.pop()
        if path in checked:
            continue
        checked.add(path)
        response = session.get(gunicorn + path, timeout=10)
        assert response.status_code == 200, path
        if path.endswith(".css"):
            for ref in re.findall(r"url\(['\"]?([^'\")]+)['\"]?\)", response.text):
                if ref.startswith("data:") or ref.startswith("#"):
                    continue
                target = urlsplit(urljoin(path, ref)).path
                if target.startswith("/static/"):
                    queue.append(target)
    assert len(checked) > 10

    # A missing page is a 404 from our template, not a 500; a non-staff user gets 403.
    missing = session.get(gunicorn + "/messages/00000000-0000-0000-0000-000000000000/", timeout=10)
    assert missing.status_code == 404 and "Not found" in missing.text
    outsider = Client()
    outsider.force_login(factories.user("prod-outsider", staff=False))
    forbidden = requests.get(
        gunicorn + "/",
        cookies={"sessionid": outsider.cookies["sessionid"].value},
        timeout=10,
        allow_redirects=False,
    )
    assert forbidden.status_code == 403 and "Staff only" in forbidden.text

"""Dashboard and admin: staff-only URLs, login lockout, CSP, clickjacking, production cookies and checks."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from tests import processes

BASE_DIR = Path(settings.BASE_DIR)

# URLs anyone may reach: the JSON API (its own key check), health checks, the sandbox's provider
# endpoints (called by workers), static files, the admin's own login and logout, and /metrics (its own
# bearer token, METRICS_TOKEN; tests/test_metrics.py).
PUBLIC_PREFIXES = ("/api/", "/health", "/static/")
PUBLIC_PATHS = {"/admin/login/", "/admin/logout/", "/metrics"}
SAMPLE = {"int": "1", "uuid": str(uuid.uuid4()), "slug": "x", "str": "x", "path": "x/y"}


def _walk(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + _sample(str(pattern.pattern)))
        elif isinstance(pattern, URLPattern):
            yield prefix + _sample(str(pattern.pattern)), pattern


def _sample(route: str) -> str:
    """A concrete path for a route ("<int:pk>/" -> "1/"; regex routes lose their anchors)."""
    route = re.sub(r"<(?:(\w+):)?\w+>", lambda m: SAMPLE.get(m.group(1) or "str", "x"), route)
    route = route.lstrip("^").rstrip("$")
    route = re.sub(r"\(\?P<\w+>[^)]*\)", "1", route)
    return route.replace("\\", "")


def _is_machine_endpoint(pattern: URLPattern) -> bool:
    # Sandbox provider endpoints answer workers' HTTP calls (no session, CSRF-exempt by design);
    # sandbox pages for people are staff-only like the rest of the dashboard.
    return str(pattern.name or "").startswith("sandbox-") and getattr(pattern.callback, "csrf_exempt", False)


def staff_only_urls() -> list[str]:
    urls = []
    for path, pattern in _walk(get_resolver().url_patterns):
        url = "/" + path
        if url.startswith(PUBLIC_PREFIXES) or url in PUBLIC_PATHS or _is_machine_endpoint(pattern):
            continue
        urls.append(url)
    return sorted(set(urls))


def _refused(response) -> bool:
    if response.status_code in (302, 301):
        return "/admin/login/" in response["Location"]
    return response.status_code in (401, 403, 405)


def test_the_url_list_covers_the_dashboard_admin_and_queue_pages(db):
    urls = staff_only_urls()
    assert "/" in urls
    assert "/admin/" in urls
    assert any(url.startswith("/django-rq/") for url in urls)
    assert len(urls) > 20


def test_anonymous_and_non_staff_requests_to_every_dashboard_url_are_refused(db):
    member = get_user_model().objects.create_user("member", password=None)
    signed_in = Client()
    signed_in.force_login(member)
    failures = []
    for url in staff_only_urls():
        for who, client in (("anonymous", Client()), ("non-staff", signed_in)):
            for method in ("get", "post"):
                response = getattr(client, method)(url)
                if not _refused(response):
                    failures.append((who, method, url, response.status_code))
    assert failures == []


@pytest.fixture
def staff_user(db):
    password = secrets.token_urlsafe(16)
    user = get_user_model().objects.create_user("operator", password=password, is_staff=True)
    return user, password


def _login(client: Client, username: str, password: str):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password})


def test_the_sixth_wrong_password_in_a_row_is_locked_out(staff_user):
    user, password = staff_user
    client = Client()
    for attempt in range(1, 6):
        response = _login(client, user.username, f"wrong-{attempt}")
        assert response.status_code == 200, attempt  # the login form again, with its error
        assert "Please enter the correct username and password" in response.content.decode()
    locked = _login(client, user.username, "wrong-6")
    assert locked.status_code == 429
    assert "too many login attempts" in locked.content.decode().lower()

    # Even the right password is refused while locked out, and no session is created.
    right = _login(client, user.username, password)
    assert right.status_code == 429
    assert "_auth_user_id" not in client.session
    assert AccessAttempt.objects.get().failures_since_start >= 6


def test_a_successful_login_resets_the_count(staff_user):
    user, password = staff_user
    client = Client()
    for _ in range(5):
        assert _login(client, user.username, "wrong").status_code == 200
    assert _login(client, user.username, password).status_code == 302
    client.logout()
    for _ in range(5):
        assert _login(client, user.username, "wrong").status_code == 200
    assert _login(client, user.username, password).status_code == 302


def test_the_lockout_ends_after_the_cool_off_time(staff_user, settings):
    user, password = staff_user
    settings.AXES_COOLOFF_TIME = timedelta(seconds=1)
    client = Client()
    for _ in range(6):
        _login(client, user.username, "wrong")
    assert _login(client, user.username, password).status_code == 429
    import time

    time.sleep(1.2)
    assert _login(client, user.username, password).status_code == 302


def test_pages_send_a_strict_content_security_policy_and_deny_framing(db):
    staff = get_user_model().objects.create_superuser("boss", password=None)
    client = Client()
    client.force_login(staff)
    for url in ("/", "/admin/", "/admin/messaging/message/"):
        response = client.get(url)
        assert response.status_code == 200, url
        policy = dict(
            part.strip().split(" ", 1)
            for part in response["Content-Security-Policy"].split(";")
            if part.strip()
        )
        assert policy["default-src"] == "'none'"
        assert policy["script-src"] == "'self'"
        assert policy["style-src"] == "'self'"
        assert policy["frame-ancestors"] == "'none'"
        assert policy["object-src"] == "'none'"
        assert policy["base-uri"] == "'none'"
        assert "unsafe" not in response["Content-Security-Policy"]
        assert response["X-Frame-Options"] == "DENY"
        assert response["X-Content-Type-Options"] == "nosniff"
    login = Client().get("/admin/login/")
    assert "'unsafe-inline'" not in login["Content-Security-Policy"]


INLINE = [
    (re.compile(r"<script\b(?![^>]*\bsrc=)[^>]*>", re.I), "inline <script> (use a file under static/)"),
    (re.compile(r"<style\b", re.I), "<style> block (use static/css)"),
    (re.compile(r"\sstyle\s*=", re.I), "style= attribute (use a CSS class)"),
    (re.compile(r"\son[a-z]+\s*=", re.I), "on...= event handler attribute (use addEventListener)"),
    (re.compile(r"javascript:", re.I), "javascript: URL"),
]


def test_no_template_needs_inline_scripts_or_styles():
    problems = []
    for path in sorted((BASE_DIR / "templates").rglob("*.html")):
        text = path.read_text()
        for pattern, reason in INLINE:
            for match in pattern.finditer(text):
                line = text.count("\n", 0, match.start()) + 1
                problems.append(f"{path.relative_to(BASE_DIR)}:{line}: {reason}")
    assert problems == []


def _production_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "SECRET_KEY", "DEBUG", "DATABASE_URL", "SANDBOX"))
    }
    env.update(
        DJANGO_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="queue.example.com,testserver",
        SMS_API_URL="https://sms.example.com",
    )
    env.update(extra)
    return env


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_deploy_with_production_settings_reports_nothing():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=_production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


@pytest.mark.parametrize(
    ("secret_key", "reason"),
    [
        (None, "SECRET_KEY is required"),
        ("", "SECRET_KEY is required"),
        ("change-me-please-change-me-please-change-me", "placeholder"),
        ("django-insecure-" + "x" * 40, "placeholder"),
        ("short", "shorter than 32"),
    ],
)
def test_production_refuses_to_start_without_a_real_secret_key(secret_key, reason):
    env = _production_env()
    if secret_key is None:
        del env["SECRET_KEY"]
    else:
        env["SECRET_KEY"] = secret_key
    result = _manage("check", env=env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert reason in result.stderr


PRODUCTION_CLIENT = """
import json, django
django.setup()
from django.conf import settings
from django.test import Client
from django.test.utils import override_settings
# Production serves hashed static files from `collectstatic`; this check is about cookies only.
override_settings(STORAGES={**settings.STORAGES, "staticfiles": {
    "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}).enable()
client = Client()
form = client.get("/admin/login/", secure=True)
login = client.post("/admin/login/?next=/admin/", {"username": "operator", "password": PASSWORD}, secure=True)
def flags(cookie):
    return {"secure": bool(cookie["secure"]), "httponly": bool(cookie["httponly"]), "samesite": cookie["samesite"]}
print(json.dumps({
    "form": form.status_code, "login": login.status_code,
    "csrf": flags(client.cookies[settings.CSRF_COOKIE_NAME]),
    "session": flags(client.cookies[settings.SESSION_COOKIE_NAME]),
    "insecure": Client().get("/admin/login/").status_code,
    "hsts": form.get("Strict-Transport-Security", ""),
}))
"""


@pytest.mark.django_db(transaction=True)
def test_production_sets_secure_httponly_session_and_csrf_cookies(staff_user):
    user, password = staff_user
    code = f"PASSWORD = {password!r}\n" + PRODUCTION_CLIENT
    env = _production_env(
        DATABASE_URL=processes.test_database_url(), DJANGO_SETTINGS_MODULE="config.settings"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert (seen["form"], seen["login"]) == (200, 302)
    assert seen["csrf"] == {"secure": True, "httponly": True, "samesite": "Lax"}
    assert seen["session"] == {"secure": True, "httponly": True, "samesite": "Lax"}
    assert seen["insecure"] == 301  # plain http is redirected to https
    assert "max-age=31536000" in seen["hsts"]

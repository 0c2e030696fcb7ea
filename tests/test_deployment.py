"""Deployment: the Procfile's processes, gunicorn with its config file, documented settings."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest
import requests

from tests.process_control import ROOT, free_port, process_env, wait_for


def test_the_procfile_has_release_web_worker_and_scheduler():
    lines = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())
    assert lines == {
        "release": "python manage.py migrate --noinput",
        "web": "gunicorn -c config/gunicorn.py config.wsgi",
        "worker": "python manage.py rqworker sms email ai",
        "scheduler": "python manage.py register_periodic_jobs && python manage.py rqscheduler --interval 1",
    }


def test_every_setting_read_from_the_environment_is_documented_in_env_example():
    settings_text = (ROOT / "config" / "settings.py").read_text()
    names = set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z][A-Z0-9_]+)"', settings_text))
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert names, "no settings found"
    assert names - documented == set()


@pytest.mark.processes
def start_gunicorn(port: int, env: dict, output) -> subprocess.Popen:
    """gunicorn with the project's config file on 127.0.0.1:`port`; output to `output` (stderr merged)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "config/gunicorn.py",
            "--bind",
            f"127.0.0.1:{port}",
            "config.wsgi",
        ],
        cwd=ROOT,
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.django_db(transaction=True)
def test_gunicorn_with_the_config_file_serves_and_stops_cleanly_on_sigterm(redis_clean, settings):
    port = free_port()
    env = process_env(settings.REDIS_URL, PORT=port, WEB_CONCURRENCY=1, ALLOWED_HOSTS="127.0.0.1")
    web = start_gunicorn(port, env, subprocess.PIPE)
    try:

        def ready():
            try:
                return requests.get(f"http://127.0.0.1:{port}/health/ready", timeout=1)
            except requests.RequestException:
                return None

        response = wait_for(ready, 30, 0.2, "gunicorn to answer")
        assert response.status_code == 200
        assert response.json()["checks"] == {"database": "ok", "redis": "ok"}
        web.send_signal(signal.SIGTERM)
        assert web.wait(30) == 0
        output = web.stdout.read().decode()
        assert "GET /health/ready" in output  # access log on stdout, from the config file
    finally:
        stop_gunicorn(web)


@pytest.mark.processes
def test_with_the_database_down_the_api_answers_503_quickly(redis_clean, settings):
    port = free_port()
    env = process_env(settings.REDIS_URL, PORT=port, WEB_CONCURRENCY=1, ALLOWED_HOSTS="127.0.0.1")
    # A PostgreSQL URL on a port where nothing listens: every query fails with OperationalError.
    env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:{free_port()}/nothing"
    web = start_gunicorn(port, env, subprocess.DEVNULL)
    try:

        def health():
            try:
                return requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_for(health, 30, 0.2, "gunicorn to answer")
        ready = requests.get(f"http://127.0.0.1:{port}/health/ready", timeout=5)
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"].startswith("down")
        assert ready.json()["checks"]["redis"] == "ok"
        response = requests.post(
            f"http://127.0.0.1:{port}/api/schedule-sms",
            json={"phoneNumber": "+14155550123", "message": "Hi", "contactId": "c", "workspaceId": "1"},
            headers={"Authorization": "Bearer mq_00000000_x", "Idempotency-Key": "k-1"},
            timeout=10,
        )
        assert response.status_code == 503
        assert response.json() == {
            "success": False,
            "message": "Database unavailable; nothing was stored. Try again.",
        }
        assert response.elapsed.total_seconds() < 5
    finally:
        stop_gunicorn(web)


def stop_gunicorn(web: subprocess.Popen) -> None:
    """SIGTERM, not SIGKILL: the master then stops its workers (a killed master leaves them running)."""
    if web.poll() is None:
        web.terminate()
        try:
            web.wait(20)
        except subprocess.TimeoutExpired:
            web.kill()
            web.wait()


@pytest.mark.django_db(transaction=True)
def test_the_wsgi_module_loads_the_views_and_phone_metadata_before_gunicorn_forks(settings):
    # gunicorn imports config.wsgi in its master (preload_app): whatever it loads, workers start with.
    code = (
        "import sys\n"
        "from phonenumbers import PhoneMetadata\n"
        "import config.wsgi\n"
        "print('messaging.api' in sys.modules, 'messaging.openapi' in sys.modules,\n"
        "      'US' in PhoneMetadata._region_metadata)\n"
    )
    env = process_env(settings.REDIS_URL)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split() == ["True", "True", "True"], out.stderr[-2000:]

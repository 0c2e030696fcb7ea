"""Start the real web server, rqworker and rqscheduler as subprocesses against the test database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import requests
from django.conf import settings
from django.db import connection

BASE_DIR = Path(settings.BASE_DIR)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_database_url() -> str:
    """DATABASE_URL of the database the tests are using right now (pytest-django's test database)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def service_env(**overrides: str) -> dict[str, str]:
    """Environment for a subprocess that shares the test database and the test Redis database."""
    env = {
        **os.environ,
        "DJANGO_ENV": "test",
        "DATABASE_URL": test_database_url(),
        "TEST_REDIS_URL": settings.REDIS_URL,
        "PYTHONUNBUFFERED": "1",
        # As outside tests: the web process hands accepted messages to Redis in batches.
        "ENQUEUE_BATCH_MS": "5",
    }
    env.update(overrides)
    return env


class Services:
    """Handles to running subprocesses; `stop()` terminates them all and collects their output."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen] = {}
        self.base_url = ""

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(args, cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def output(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_for_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer within {timeout}s")


@contextmanager
def running_services(
    log_dir: Path,
    *,
    web: bool = True,
    worker: bool = True,
    scheduler: bool = True,
    web_config: bool = False,
    **env: str,
):
    """Run gunicorn, `manage.py rqworker sms email ai` and `manage.py rqscheduler --interval 1`.

    gunicorn runs 2 sync workers, or with `web_config` the production settings of config/gunicorn.py.
    """
    services = Services(log_dir)
    python = sys.executable
    port = free_port()
    services.base_url = f"http://127.0.0.1:{port}"
    environment = service_env(**env)
    try:
        if web:
            gunicorn = str(Path(python).with_name("gunicorn"))
            options = ["-c", "config/gunicorn.py"] if web_config else ["--workers", "2"]
            services.start(
                "web", [gunicorn, *options, "config.wsgi", "--bind", f"127.0.0.1:{port}"], environment
            )
        if worker:
            services.start("worker", [python, "manage.py", "rqworker", "sms", "email", "ai"], environment)
        if scheduler:
            services.start("scheduler", [python, "manage.py", "rqscheduler", "--interval", "1"], environment)
        if web:
            wait_for_http(f"{services.base_url}/health")
        yield services
    finally:
        services.stop()

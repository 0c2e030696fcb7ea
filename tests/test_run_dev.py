"""`make run` on a fresh machine: Redis installed when missing, hints that work when pasted, the
port and Redis given to make written into .env, and a demo password that outlives restarts."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command

from messaging.devtools import localredis
from messaging.devtools.supervisor import Supervisor
from messaging.management.commands.run_dev import Command
from tests.process_control import free_port
from tests.test_worker import database_url

ROOT = Path(settings.BASE_DIR)


def run_dev(state_dir: Path, *args: str) -> str:
    out = io.StringIO()
    call_command("run_dev", "--no-start", "--state-dir", str(state_dir), *args, stdout=out)
    return out.getvalue()


def demo_password(output: str) -> str:
    return re.search(r"log in as demo / (\S+?);", output).group(1)


def test_the_demo_password_stays_the_same_between_runs_and_its_sessions_survive(db, client, tmp_path):
    first = demo_password(run_dev(tmp_path))
    user = get_user_model().objects.get(username="demo")
    assert user.is_staff and user.check_password(first)
    client.force_login(user)
    assert client.get("/").status_code == 200

    assert demo_password(run_dev(tmp_path)) == first
    assert client.get("/").status_code == 200  # still logged in: the password hash did not change
    assert (tmp_path / "demo-password").stat().st_mode & 0o077 == 0


def test_new_demo_password_gives_the_demo_user_a_new_one_and_ends_its_sessions(db, client, tmp_path):
    first = demo_password(run_dev(tmp_path))
    client.force_login(get_user_model().objects.get(username="demo"))
    second = demo_password(run_dev(tmp_path, "--new-demo-password"))
    assert second != first
    user = get_user_model().objects.get(username="demo")
    assert user.check_password(second) and not user.check_password(first)
    assert client.get("/").status_code == 302


def test_the_seed_hint_works_when_pasted_into_a_shell_without_the_virtualenv(db, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    # The hint carries the DATABASE_URL run_dev was given: here this test's own database (under
    # `make test-postgres` the exported one names a database that pytest-django never creates).
    monkeypatch.setenv("DATABASE_URL", database_url())
    hint = re.search(r"`([^`]*manage\.py seed_demo)`", run_dev(tmp_path)).group(1)
    # A shell with no virtualenv on PATH and none of this process's settings: the line must carry them.
    pasted = hint.replace("seed_demo", "showmigrations messaging")
    result = subprocess.run(
        pasted,
        shell=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (hint, result.stderr)
    assert "0001_initial" in result.stdout


@pytest.fixture
def fake_apt_get(tmp_path, monkeypatch) -> Path:
    """A PATH holding only a fake `apt-get` that records its arguments and, asked to install
    redis-server, links the real one next to itself (what the package would do)."""
    real_server = shutil.which("redis-server")
    assert real_server, "redis-server is needed for this test"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "apt-get"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {bin_dir}/apt-get.log\n'
        f'case "$*" in *install*redis-server*) {shutil.which("ln")} -s {real_server} {bin_dir}/redis-server;; esac\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def test_run_dev_installs_redis_server_and_starts_it_when_none_answers_and_it_is_missing(
    fake_apt_get, settings
):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    assert shutil.which("redis-server") is None
    supervisor = Supervisor(out=io.StringIO())
    out = io.StringIO()
    try:
        Command(stdout=out).ensure_redis(supervisor)
        assert localredis.redis_answers(settings.REDIS_URL)
    finally:
        supervisor.stop()
    # It waits for another package manager run instead of failing on the dpkg lock.
    assert (fake_apt_get / "apt-get.log").read_text().splitlines() == [
        "-o DPkg::Lock::Timeout=600 update -qq",
        "-o DPkg::Lock::Timeout=600 install -y -qq redis-server",
    ]
    assert "installing it" in out.getvalue()
    assert not localredis.redis_answers(settings.REDIS_URL)  # stopped with the run


def test_the_makefile_installs_redis_server_when_missing(fake_apt_get):
    result = subprocess.run(
        [sys.executable, "-m", "messaging.devtools.localredis", "install"],
        cwd=ROOT,
        env={**os.environ, "PATH": str(fake_apt_get)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (fake_apt_get / "redis-server").exists()
    assert "install -y -qq redis-server" in (fake_apt_get / "apt-get.log").read_text()


def test_make_env_writes_the_port_and_the_redis_url_make_was_given(tmp_path):
    shutil.copy(ROOT / ".env.example", tmp_path / ".env.example")
    subprocess.run(
        ["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), "-C", str(tmp_path), ".env"]
        + [f"PYTHON={sys.executable}", "PORT=8123", "REDIS_URL=redis://127.0.0.1:6379/3"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    lines = (tmp_path / ".env").read_text().splitlines()
    assert "PORT=8123" in lines
    assert "REDIS_URL=redis://127.0.0.1:6379/3" in lines
    assert "DJANGO_ENV=development" in lines


def test_the_sandbox_url_and_the_callback_allowance_follow_port():
    code = "from django.conf import settings as s; print(s.SANDBOX_BASE_URL, s.CALLBACK_ALLOWED_HOSTS)"
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env={**os.environ, "DJANGO_ENV": "test", "PORT": "8123"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    sandbox_url, allowed = result.stdout.strip().splitlines()[-1].split(" ", 1)
    assert sandbox_url == "http://127.0.0.1:8123/sandbox"
    assert "127.0.0.1:8123" in allowed

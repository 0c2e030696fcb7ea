from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from messaging.models import Message
from messaging.workspaces import api_key_authenticate, api_key_create

RUN_DIR = Path(settings.BASE_DIR) / ".run"


def redis_answers(url: str) -> bool:
    """True when a Redis server answers PING at `url` within one second."""
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping())
    except redis.exceptions.RedisError:
        return False


class Command(BaseCommand):
    help = (
        "Development: find or start Redis, migrate, create a demo staff user and an API key, then run "
        "web + rqworker + rqscheduler together with honcho. Used by `make run`."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--no-start", action="store_true", help="Prepare everything but start nothing.")

    def handle(self, *args, **options):
        if settings.IS_PRODUCTION:
            raise CommandError("run_dev is for development; set DJANGO_ENV=development (make run does).")
        RUN_DIR.mkdir(exist_ok=True)
        redis_process = None if options["no_start"] else self.ensure_redis()
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("Database migrated.")
        username, password = self.ensure_staff_user()
        api_key = self.ensure_api_key()
        port = options["port"]
        base = f"http://127.0.0.1:{port}"
        self.stdout.write(
            "\n"
            f"  Dashboard:  {base}/   (log in as {username} / {password})\n"
            f"  Admin:      {base}/admin/\n"
            f"  Sandbox:    {os.environ.get('SANDBOX_BASE_URL', base + '/sandbox') if settings.SANDBOX_ENABLED else 'off'}\n"
            f"  API key:    {api_key}\n\n"
            "  Send an SMS:\n"
            f"    curl -s -X POST {base}/api/schedule-sms -H 'Authorization: Bearer {api_key}' \\\n"
            "      -H 'Content-Type: application/json' \\\n"
            """      -d '{"phoneNumber":"+14155550123","message":"Hello","contactId":"c-1","workspaceId":"66338"}'\n"""
        )
        if not Message.objects.exists():
            self.offer_demo_data()
        if options["no_start"]:
            return
        # Workers reach the sandbox on the port the web process uses (unless configured otherwise).
        os.environ.setdefault("SANDBOX_BASE_URL", f"{base}/sandbox")
        procfile = RUN_DIR / "Procfile"
        python = sys.executable
        procfile.write_text(
            f"web: {python} manage.py runserver 127.0.0.1:{port}\n"
            f"worker: {python} manage.py rqworker sms email ai\n"
            f"scheduler: {python} manage.py rqscheduler --interval 1\n"
        )
        honcho = Path(python).with_name("honcho")
        try:
            # The children inherit this process's environment, which already holds .env under the real
            # environment; honcho must not re-read .env over it (it would override e.g. REDIS_URL).
            no_env_file = RUN_DIR / "empty.env"
            no_env_file.write_text("")
            subprocess.call(
                [
                    str(honcho),
                    "start",
                    "-e",
                    str(no_env_file),
                    "-f",
                    str(procfile),
                    "-d",
                    str(settings.BASE_DIR),
                ]
            )
        except KeyboardInterrupt:
            pass
        finally:
            if redis_process is not None:
                redis_process.terminate()
                redis_process.wait(timeout=10)

    def offer_demo_data(self) -> None:
        """On an empty database: ask whether to run seed_demo (interactive terminal), else print the hint."""
        if sys.stdin is not None and sys.stdin.isatty():
            answer = input(
                "  The database has no messages yet. Add demo data now (manage.py seed_demo)? [y/N] "
            )
            if answer.strip().lower() in ("y", "yes"):
                call_command("seed_demo", stdout=self.stdout, stderr=self.stderr)
            return
        self.stdout.write(
            "  The database has no messages yet: `python manage.py seed_demo` adds demo data.\n"
        )

    def ensure_redis(self) -> subprocess.Popen | None:
        url = settings.REDIS_URL
        if redis_answers(url):
            self.stdout.write(f"Redis answers at {url}.")
            return None
        parts = urlsplit(url)
        server = shutil.which("redis-server")
        if parts.hostname not in ("127.0.0.1", "localhost") or server is None:
            raise CommandError(
                f"No Redis answers at {url}. Start one, for example:\n"
                "  Debian/Ubuntu: sudo apt-get install redis-server   (it starts as a service)\n"
                "  macOS:         brew install redis && brew services start redis\n"
                "  Docker:        docker run -d -p 6379:6379 redis:7\n"
                "or point REDIS_URL in .env at a server you have."
            )
        port = parts.port or 6379
        self.stdout.write(
            f"No Redis at {url}; starting {server} on port {port} for this session (no persistence)."
        )
        process = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(50):
            if redis_answers(url):
                return process
            time.sleep(0.1)
        process.terminate()
        raise CommandError(f"Started redis-server on port {port}, but it does not answer.")

    def ensure_staff_user(self) -> tuple[str, str]:
        """Create or reset the `demo` staff user with a new random password (development only)."""
        username = "demo"
        password = secrets.token_urlsafe(12)
        user, _ = get_user_model().objects.get_or_create(username=username)
        user.is_staff = True
        user.is_superuser = True
        user.set_password(password)
        user.save()
        return username, password

    def ensure_api_key(self) -> str:
        """Reuse the development API key saved in .run/api-key while it is valid, else create one."""
        path = RUN_DIR / "api-key"
        if path.exists():
            saved = path.read_text().strip()
            if api_key_authenticate(saved):
                return saved
        _, full_key = api_key_create(name="development (make run)", all_workspaces=True)
        path.write_text(full_key + "\n")
        path.chmod(0o600)
        return full_key

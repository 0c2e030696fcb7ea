from __future__ import annotations

import os
import secrets
import shlex
import signal
import sys
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from messaging.devtools import localredis
from messaging.devtools.supervisor import ParentWatch, Supervisor, parent_death_signal
from messaging.models import Message
from messaging.workspaces import api_key_authenticate, api_key_create

RUN_DIR = Path(settings.BASE_DIR) / ".run"
DEMO_USER = "demo"
# Settings a pasted command must see as this run does (when they differ from .env, hints name them).
HINT_VARIABLES = ("DJANGO_ENV", "DATABASE_URL", "REDIS_URL", "PORT")


def dotenv_values(path: Path) -> dict[str, str]:
    """The NAME=value lines of a .env file (comments, blanks and malformed lines skipped; one level
    of surrounding quotes removed); {} when the file does not exist."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text().splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and name and not name.startswith("#"):
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[name.strip()] = value
    return values


def command_hint(*args: str) -> str:
    """A `manage.py` command line that works when pasted into a shell in the project directory: this
    interpreter (the virtualenv's, e.g. `.venv/bin/python`), preceded by the settings this run has from
    the real environment that .env does not hold (so it reaches the same database and Redis)."""
    base = Path(settings.BASE_DIR)
    python = Path(sys.executable)
    if python.is_relative_to(base):
        python = python.relative_to(base)
    dotenv = dotenv_values(base / ".env")
    prefix = [
        f"{name}={shlex.quote(os.environ[name])}"
        for name in HINT_VARIABLES
        if name in os.environ and dotenv.get(name) != os.environ[name]
    ]
    return " ".join([*prefix, shlex.quote(str(python)), "manage.py", *args])


class Command(BaseCommand):
    help = (
        "Development: find or start Redis (installing redis-server when missing), migrate, create a demo "
        "staff user and an API key, then run web + rqworker + rqscheduler together until stopped "
        "(Ctrl+C, SIGTERM, SIGHUP, or make stopping); everything it started stops with it. "
        "Used by `make run`."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--no-start", action="store_true", help="Prepare everything but start nothing.")
        parser.add_argument(
            "--new-demo-password",
            action="store_true",
            help="Give the demo user a new password (logs out its sessions); otherwise it keeps the saved one.",
        )
        parser.add_argument(
            "--state-dir",
            default=str(RUN_DIR),
            help="Where the API key and the demo password are kept between runs (default: .run/).",
        )

    def handle(self, *args, **options):
        if settings.IS_PRODUCTION:
            raise CommandError("run_dev is for development; set DJANGO_ENV=development (make run does).")
        self.state_dir = Path(options["state_dir"])
        self.state_dir.mkdir(parents=True, exist_ok=True)
        supervisor = watch = None
        if not options["no_start"]:
            # Stop with make, however make ends (see messaging.devtools.supervisor).
            parent_death_signal(signal.SIGTERM)
            watch = ParentWatch()
            supervisor = Supervisor()
            self.ensure_redis(supervisor)
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("Database migrated.")
        password = self.ensure_staff_user(new_password=options["new_demo_password"])
        api_key = self.ensure_api_key()
        port = options["port"]
        base = f"http://127.0.0.1:{port}"
        sandbox = f"{base}/sandbox" if "SANDBOX_BASE_URL" not in os.environ else settings.SANDBOX_BASE_URL
        self.stdout.write(
            "\n"
            f"  Dashboard:  {base}/   (log in as {DEMO_USER} / {password}; kept in "
            f"{self.state_dir / 'demo-password'}, `make run RUN_ARGS=--new-demo-password` changes it)\n"
            f"  Admin:      {base}/admin/\n"
            f"  Sandbox:    {sandbox if settings.SANDBOX_ENABLED else 'off'}\n"
            f"  API key:    {api_key}\n\n"
            "  Send an SMS:\n"
            f"    curl -s -X POST {base}/api/schedule-sms -H 'Authorization: Bearer {api_key}' \\\n"
            "      -H 'Content-Type: application/json' \\\n"
            """      -d '{"phoneNumber":"+14155550123","message":"Hello","contactId":"c-1","workspaceId":"66338"}'\n"""
        )
        if not Message.objects.exists():
            self.offer_demo_data()
        if supervisor is None:
            return
        python = sys.executable
        # The children read the same settings; PORT makes the sandbox URL (and the callback allowance
        # derived from it) follow the port served on.
        env = {**os.environ, "PORT": str(port), "PYTHONUNBUFFERED": "1"}
        web_env = {**env, "DJANGO_RUNSERVER_HIDE_WARNING": "true"}
        root = settings.BASE_DIR
        supervisor.start(
            "web", [python, "manage.py", "runserver", f"127.0.0.1:{port}"], env=web_env, cwd=root
        )
        supervisor.start("worker", [python, "manage.py", "rqworker", "sms", "email", "ai"], env=env, cwd=root)
        supervisor.start(
            "scheduler", [python, "manage.py", "rqscheduler", "--interval", "1"], env=env, cwd=root
        )
        status = supervisor.run(watch)
        if status:
            raise SystemExit(status)

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
            f"  The database has no messages yet: `{command_hint('seed_demo')}` adds demo data.\n"
        )

    def ensure_redis(self, supervisor: Supervisor) -> None:
        """Use the Redis at REDIS_URL when it answers; for a local URL, else start redis-server for this
        run under `supervisor` (installing it from the system's packages when missing). Raises
        CommandError when none can be had."""
        url = settings.REDIS_URL
        if localredis.redis_answers(url):
            self.stdout.write(f"Redis answers at {url}.")
            return
        if not localredis.is_local(url):
            raise CommandError(f"No Redis answers at {url}. Start it, or point REDIS_URL in .env at one.")
        server = localredis.redis_server_install(say=self.stdout.write)
        if server is None:
            raise CommandError(
                f"No Redis answers at {url}, and redis-server is not installed and could not be installed "
                "from the system's packages. Install Redis (for example `brew install redis` on macOS), "
                "or point REDIS_URL in .env at a server you have."
            )
        self.stdout.write(f"No Redis at {url}; starting {server} for this run (no persistence).")
        supervisor.start("redis", localredis.redis_server_argv(server, url), quiet=True, last=True)
        if not localredis.wait_until_answers(url):
            supervisor.stop()
            raise CommandError(f"Started {server} for {url}, but it does not answer.")

    def ensure_staff_user(self, *, new_password: bool = False) -> str:
        """Make sure the `demo` staff user exists with the password saved in the state directory (a new
        random one on the first run, or with `new_password`); return that password.

        The password is set only when it does not already match, so sessions survive a restart (Django
        ends a user's sessions when the password hash changes)."""
        path = self.state_dir / "demo-password"
        password = "" if new_password or not path.exists() else path.read_text().strip()
        if not password:
            password = secrets.token_urlsafe(12)
            path.write_text(password + "\n")
            path.chmod(0o600)
        user, created = get_user_model().objects.get_or_create(username=DEMO_USER)
        changed = created or not (user.is_staff and user.is_superuser and user.is_active)
        user.is_staff = user.is_superuser = user.is_active = True
        if created or not user.check_password(password):
            user.set_password(password)
            changed = True
        if changed:
            user.save()
        return password

    def ensure_api_key(self) -> str:
        """Reuse the development API key saved in the state directory while it is valid, else create one."""
        path = self.state_dir / "api-key"
        if path.exists():
            saved = path.read_text().strip()
            if api_key_authenticate(saved):
                return saved
        _, full_key = api_key_create(name="development (make run)", all_workspaces=True)
        path.write_text(full_key + "\n")
        path.chmod(0o600)
        return full_key

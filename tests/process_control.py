"""Helpers for tests that run real processes: a test-owned redis-server, rqworker, rqscheduler.

Everything binds to 127.0.0.1 on free ports picked by the OS, and every process started here is
stopped by the test that started it (fixtures use try/finally).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import redis
from django.conf import settings
from django.db import connection

ROOT = Path(settings.BASE_DIR)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    condition: Callable[[], object], timeout: float = 20.0, interval: float = 0.1, what: str = ""
) -> object:
    """Poll `condition` until it returns something truthy; raise AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")


class RedisServer:
    """A redis-server owned by one test, on a free port, without persistence; can stop and start."""

    def __init__(self, *extra_args: str):
        self.port = free_port()
        self.extra_args = extra_args
        self.dir = tempfile.mkdtemp(prefix="qs-redis-")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        server = shutil.which("redis-server")
        assert server, "redis-server is needed (apt-get install redis-server)"
        self.process = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--dir", self.dir, *self.extra_args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, 10, what=f"redis-server on {self.port}")
        return self

    def _answers(self) -> bool:
        try:
            return redis.Redis(port=self.port, socket_timeout=0.5).ping()
        except redis.exceptions.AuthenticationError:
            return True
        except redis.exceptions.RedisError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def process_env(redis_url: str, **extra: str) -> dict[str, str]:
    """Environment for a manage.py subprocess: test settings, this test's database and Redis."""
    db = connection.settings_dict
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(DJANGO_ENV="test", TEST_REDIS_URL=redis_url, PYTHONUNBUFFERED="1")
    if db["ENGINE"].endswith("sqlite3"):
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    else:
        user = db.get("USER") or ""
        password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
        env["DATABASE_URL"] = (
            f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"
        )
    for name in ("SMS_API_URL", "RQ_JOB_TIMEOUT", "PROVIDER_CONNECT_TIMEOUT", "PROVIDER_READ_TIMEOUT"):
        env[name] = str(getattr(settings, name))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def child_pids(parent: int) -> list[int]:
    """PIDs of the direct children of process `parent` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 (after the parenthesised command name) is the parent pid.
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            found.append(int(entry.name))
    return found


class Managed:
    """`python manage.py <args>` as a subprocess in its own process group, output to a log file."""

    def __init__(self, args: list[str], env: dict[str, str], name: str):
        self.log = Path(tempfile.mkstemp(prefix=f"qs-{name}-", suffix=".log")[1])
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def children(self) -> list[int]:
        """PIDs of this process's direct children (the RQ work horse while a job runs)."""
        return child_pids(self.pid)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, sig)

    def kill_with_children(self) -> list[int]:
        """SIGKILL the process and its children (RQ's work horse runs in a session of its own, so a
        process-group kill would miss it). Returns the children's pids."""
        children = self.children()
        for pid in [self.pid, *children]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return children

    def stop(self) -> None:
        """Kill the process, its children and its process group."""
        self.kill_with_children()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        if not os.environ.get("QS_KEEP_PROCESS_LOGS"):
            self.log.unlink(missing_ok=True)


def rqworker(env: dict[str, str], *queues: str, worker_class: str = "") -> Managed:
    """`rqworker` on `queues` (default sms, email, ai) with the settings' worker class or `worker_class`."""
    extra = ["--worker-class", worker_class] if worker_class else []
    return Managed(["rqworker", *extra, *(queues or ("sms", "email", "ai"))], env, "worker")


def rqscheduler(env: dict[str, str]) -> Managed:
    return Managed(["rqscheduler", "--interval", "1"], env, "scheduler")


class ProviderLog:
    """What a fake provider received, thread-safe: the Idempotency-Key of every request in order,
    when each arrived (time.monotonic() and wall clock), and the most calls it held at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.keys: list[str] = []
        self.arrivals: list[tuple[float, float, str]] = []  # (monotonic, epoch seconds, key)
        self.in_flight = 0
        self.peak = 0

    def add(self, key: str) -> None:
        with self.lock:
            self.keys.append(key)
            self.arrivals.append((time.monotonic(), time.time(), key))

    def enter(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def by_key(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        with self.lock:
            for key in self.keys:
                counts[key] += 1
        return dict(counts)

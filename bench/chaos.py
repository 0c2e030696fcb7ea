"""Chaos run: accept 1,000 messages while killing a worker three times and restarting Redis once.

Starts everything it needs on 127.0.0.1 in a temporary directory: its own redis-server (no
persistence, so a restart empties it), gunicorn (config/gunicorn.py), two `rqworker sms email ai`,
one `rqscheduler` (after `register_periodic_jobs`), and a fake SMS provider that records the
Idempotency-Key of every request, answers after 50-300 ms, rejects +15005550400 with a 400 and
answers 3% of calls with a 503. A client sends the messages over HTTP from 4 threads, each with an
Idempotency-Key, and retries a failed request with the same key; about 3% are scheduled a minute
ahead and then cancelled.

While sending it SIGKILLs a busy worker (mid provider call; with its work horse, if any) three
times, restarting a worker each time as a platform would, and stops Redis for 3 s once. Then it waits until every
accepted message is final and prints: accepted, sent, failed, cancelled, lost (accepted but not
final, or missing; must be 0), duplicate provider receipts (requests beyond the first per message;
each carried the same Idempotency-Key) and receipts beyond attempts (must be 0).

    python bench/chaos.py [--messages 1000] [--database-url postgres://...] [--port-base 18500]

Exits 1 when a message was lost or the provider got a message more often than it had attempts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
FINAL = {"sent", "failed", "cancelled"}


class Provider:
    """Fake SMS API on a thread: records Idempotency-Keys, answers slowly, sometimes 503 or 400."""

    def __init__(self, port: int):
        self.lock = threading.Lock()
        self.receipts: Counter = Counter()  # requests per Idempotency-Key
        self.accepted: Counter = Counter()  # 200 answers per Idempotency-Key
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                key = self.headers.get("Idempotency-Key", "")
                with provider.lock:
                    provider.receipts[key] += 1
                time.sleep(random.uniform(0.05, 0.3))
                to = json.loads(body or b"{}").get("to")
                if to == "+15005550400":
                    status, answer = 400, {"error": "invalid recipient"}
                elif random.random() < 0.03:
                    status, answer = 503, {"error": "try again"}
                else:
                    status, answer = 200, {"id": f"p-{key[:8]}"}
                if status == 200:
                    with provider.lock:
                        provider.accepted[key] += 1
                data = json.dumps(answer).encode()
                # The caller may be a work horse that was just killed: its socket is gone.
                with contextlib.suppress(OSError):
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()


class Stack:
    """The service's processes, each in its own session so it can be killed with its children."""

    def __init__(self, workdir: Path, env: dict[str, str], redis_port: int, web_port: int):
        self.workdir, self.env, self.redis_port, self.web_port = workdir, env, redis_port, web_port
        self.redis: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.others: list[subprocess.Popen] = []
        self.logs = workdir / "logs"
        self.logs.mkdir()

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("ab")
        return subprocess.Popen(
            args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, check=True
        )
        return result.stdout

    def start_redis(self) -> None:
        self.redis = self._spawn(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
            ]
            + ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            "redis",
        )
        wait(lambda: _redis_ping(self.redis_port), 10, "redis-server")

    def stop_redis(self) -> None:
        if self.redis:
            self.redis.kill()
            self.redis.wait()

    def start_worker(self) -> subprocess.Popen:
        worker = self._spawn(
            [PYTHON, "manage.py", "rqworker", "sms", "email", "ai"], f"worker-{len(self.workers)}"
        )
        self.workers.append(worker)
        return worker

    def start_rest(self) -> None:
        self.others.append(
            self._spawn(
                [
                    PYTHON,
                    "-m",
                    "gunicorn",
                    "-c",
                    "config/gunicorn.py",
                    "--bind",
                    f"127.0.0.1:{self.web_port}",
                    "config.wsgi",
                ],
                "web",
            ),
        )
        self.others.append(
            self._spawn(
                [
                    "sh",
                    "-c",
                    f"{PYTHON} manage.py register_periodic_jobs && exec {PYTHON} manage.py rqscheduler --interval 1",
                ],
                "scheduler",
            )
        )
        wait(lambda: _http_ok(f"http://127.0.0.1:{self.web_port}/health"), 30, "gunicorn")

    def busy_worker_pids(self) -> set[int]:
        """PIDs of the workers that RQ records as busy (running a job) right now."""
        import redis

        connection = redis.Redis(port=self.redis_port, socket_timeout=1)
        busy = set()
        with contextlib.suppress(redis.exceptions.RedisError):
            for key in connection.scan_iter("rq:worker:*", count=100):
                if connection.type(key) != b"hash":
                    continue  # RQ keeps other per-worker keys (sets, lists) under the same prefix
                state, pid = connection.hmget(key, "state", "pid")
                if state == b"busy" and pid:
                    busy.add(int(pid))
        return busy

    def kill_busy_worker(self, within: float = 10.0) -> str:
        """SIGKILL a worker that is running a job (mid provider call), and its work horse if it has one
        (the default worker runs jobs in-process; `messaging.worker.ForkWorker` forks a horse per job).

        Looks for one for up to `within` seconds; if none is ever busy, kills an idle one.
        """
        deadline = time.monotonic() + within
        victim, horses = None, []
        while victim is None:
            live = [w for w in self.workers if w.poll() is None]
            busy = self.busy_worker_pids()
            for worker in live:
                horses = children(worker.pid)
                if horses or worker.pid in busy or time.monotonic() > deadline:
                    victim = worker
                    break
            else:
                time.sleep(0.01)
        was_busy = bool(horses) or victim.pid in busy
        for pid in [victim.pid, *horses]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        victim.wait()
        return f"worker {victim.pid}" + (
            f" and work horse {horses}" if horses else " (mid job)" if was_busy else " (idle)"
        )

    def restart_dead_workers(self) -> None:
        for worker in list(self.workers):
            if worker.poll() is not None and worker.returncode != -signal.SIGKILL:
                self.workers.remove(worker)
                self.start_worker()

    def stop_all(self) -> None:
        for process in self.workers + self.others:
            for pid in children(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self.stop_redis()


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return found


def _redis_ping(port: int) -> bool:
    import redis

    try:
        return redis.Redis(port=port, socket_timeout=0.5).ping()
    except redis.exceptions.RedisError:
        return False


def _http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def final_counts(db_url: str, sqlite_path: Path | None, ids: list[str]) -> dict[str, tuple[str, int]]:
    """{message id: (status, attempts)} read straight from the database."""
    wanted = {i.replace("-", "") for i in ids} | set(ids)
    if sqlite_path is not None:
        with sqlite3.connect(sqlite_path) as db:
            rows = db.execute("SELECT id, status, attempts FROM messaging_message").fetchall()
    else:
        import psycopg

        with psycopg.connect(db_url) as db:
            rows = db.execute("SELECT id::text, status, attempts FROM messaging_message").fetchall()
    result = {}
    for pk, status, attempts in rows:
        key = str(uuid.UUID(str(pk)))
        if key in wanted or str(pk) in wanted:
            result[key] = (status, attempts)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--database-url", default="", help="default: a fresh SQLite file")
    parser.add_argument(
        "--port-base", type=int, default=18500, help="redis, web and provider use base, +1, +2"
    )
    parser.add_argument(
        "--deadline", type=float, default=240, help="seconds to wait for every message to be final"
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="qs-chaos-"))
    sqlite_path = None if args.database_url else workdir / "chaos.sqlite3"
    db_url = args.database_url or f"sqlite:///{sqlite_path}"
    redis_port, web_port, provider_port = args.port_base, args.port_base + 1, args.port_base + 2
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "PYTEST"))},
        "DJANGO_ENV": "development",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": db_url,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SANDBOX_ENABLED": "false",
        "SMS_API_URL": f"http://127.0.0.1:{provider_port}",
        "PORT": str(web_port),
        "WEB_CONCURRENCY": "2",
        "LOG_LEVEL": "WARNING",
        "RQ_JOB_TIMEOUT": "10",
        "PROVIDER_CONNECT_TIMEOUT": "2",
        "PROVIDER_READ_TIMEOUT": "5",
        "AI_READ_TIMEOUT": "2",
        "CALLBACK_CONNECT_TIMEOUT": "1",
        "CALLBACK_READ_TIMEOUT": "2",
        "RETRY_BACKOFF_BASE": "0.5",
        "SWEEP_INTERVAL_SECONDS": "2",
        "SWEEP_GRACE_SECONDS": "2",
        "SWEEP_SENDING_GRACE_SECONDS": "3",
        # The chaos is about crashes, not the per-key ingress limit (100/s by default).
        "API_RATE_LIMIT_PER_KEY": "10000/second",
    }
    provider = Provider(provider_port)
    stack = Stack(workdir, env, redis_port, web_port)
    events: list[str] = []
    started = time.monotonic()

    def note(text: str) -> None:
        events.append(f"{time.monotonic() - started:6.1f}s  {text}")
        print(events[-1], flush=True)

    try:
        provider.start()
        stack.start_redis()
        stack.manage("migrate", "--noinput", "-v", "0")
        api_key = stack.manage("create_api_key", "chaos", "--all-workspaces").strip().splitlines()[-1]
        stack.start_rest()
        stack.start_worker()
        stack.start_worker()
        note("stack up: redis, gunicorn x2, rqworker x2, rqscheduler")

        session_local = threading.local()
        accepted: dict[int, dict] = {}
        accepted_lock = threading.Lock()
        client_retries = Counter()
        n = args.messages
        cancel_every = 33  # ~3% scheduled ahead, then cancelled

        def send(i: int) -> None:
            session = getattr(session_local, "s", None) or requests.Session()
            session_local.s = session
            body = {
                "phoneNumber": "+15005550400" if i % 50 == 7 else f"+1415555{i:04d}",
                "message": f"chaos {i}",
                "contactId": f"c-{i}",
                "workspaceId": "chaos",
            }
            if i % cancel_every == 0:
                body["delay"] = 60_000
            headers = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": f"chaos-{i}"}
            for attempt in range(30):
                try:
                    response = session.post(
                        f"http://127.0.0.1:{web_port}/api/schedule-sms",
                        json=body,
                        headers=headers,
                        timeout=10,
                    )
                except requests.RequestException:
                    response = None
                if response is not None and response.status_code == 202:
                    with accepted_lock:
                        accepted[i] = response.json()
                    return
                client_retries[response.status_code if response is not None else "error"] += 1
                time.sleep(min(0.2 * (attempt + 1), 2))
            raise RuntimeError(f"message {i} was never accepted")

        kill_at = {int(n * 0.2), int(n * 0.45), int(n * 0.7)}
        redis_at = int(n * 0.55)
        with ThreadPoolExecutor(4) as pool:
            futures = []
            for i in range(n):
                while i - len(accepted) > 8:  # keep the chaos in step with what was accepted
                    time.sleep(0.005)
                futures.append(pool.submit(send, i))
                if i in kill_at:
                    note(f"SIGKILL {stack.kill_busy_worker()} at message {i}; starting a new worker")
                    stack.start_worker()
                if i == redis_at:
                    stack.stop_redis()
                    note(f"redis-server stopped at message {i}")
                    time.sleep(3)
                    stack.start_redis()
                    note("redis-server started again (empty: no persistence)")
                stack.restart_dead_workers()
                if i % 50 == 0:
                    time.sleep(0.05)  # let the workers keep up a little, so kills hit busy workers
            for future in futures:
                future.result()
        note(f"all {len(accepted)} messages accepted ({dict(client_retries) or 'no'} client retries)")

        cancelled_ids = [accepted[i]["id"] for i in accepted if i % cancel_every == 0]
        for message_id in cancelled_ids:
            requests.post(
                f"http://127.0.0.1:{web_port}/api/messages/{message_id}/cancel",
                json={},
                headers={"Authorization": f"Bearer {api_key}"},
                timeout=10,
            )
        ids = [accepted[i]["id"] for i in sorted(accepted)]
        deadline = time.monotonic() + args.deadline
        while time.monotonic() < deadline:
            stack.restart_dead_workers()
            states = final_counts(db_url, sqlite_path, ids)
            if len(states) == len(ids) and all(s in FINAL for s, _ in states.values()):
                break
            time.sleep(1)
        note("every accepted message is final" if time.monotonic() < deadline else "deadline reached")
        states = final_counts(db_url, sqlite_path, ids)
    finally:
        stack.stop_all()
        provider.stop()

    by_status = Counter(status for status, _ in states.values())
    lost = len(ids) - sum(by_status[s] for s in FINAL)
    with provider.lock:
        receipts = dict(provider.receipts)
    duplicates = sum(max(0, receipts.get(pk, 0) - 1) for pk in ids)
    with provider.lock:
        double_accepted = sum(max(0, provider.accepted.get(pk, 0) - 1) for pk in ids)
    beyond_attempts = sum(max(0, receipts.get(pk, 0) - states.get(pk, ("", 0))[1]) for pk in ids)
    retried = sum(1 for pk in ids if states.get(pk, ("", 0))[1] > 1)
    print()
    print(f"accepted:                   {len(ids)}")
    print(f"sent:                       {by_status['sent']}")
    print(f"failed:                     {by_status['failed']}")
    print(f"cancelled:                  {by_status['cancelled']}")
    print(f"lost:                       {lost}")
    print(f"duplicate provider receipts: {duplicates} (resends; each carried its message's Idempotency-Key)")
    print(f"  of which after a 200:     {double_accepted} (answer lost to a kill; droppable by key)")
    print(f"messages with >1 attempt:   {retried}")
    print(f"receipts beyond attempts:   {beyond_attempts}")
    print(f"wall time:                  {time.monotonic() - started:.1f}s; logs in {stack.logs}")
    return 1 if lost or beyond_attempts else 0


if __name__ == "__main__":
    sys.exit(main())

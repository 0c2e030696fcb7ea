"""Benchmark suite: `make bench`. Prints one table; every ratio is measured side by side in this run.

Scenarios (all traffic on loopback; a private Redis database and throw-away databases; `--only` names):
- ingest: three figures side by side, SQLite and PostgreSQL, all driven by wrk (2 threads,
  16 connections, --latency for p99), all under gunicorn with config/gunicorn.py (only the WSGI
  module differs): the floor, a plain Django project with one JSON view and no database (bench/plain,
  served as bench.plain.wsgi); the service's GET /health (target >= 0.9 of the floor); and the
  service's POST /api/schedule-sms, one SMS per request (target >= 1,000 accepted/s, p99 <= 50 ms,
  no errors, every accepted message stored, and >= 0.4 of the floor). The three run in turn (floor,
  /health, POST), repeated in 3 rounds; each figure is the median over the rounds, each ratio the
  median of the rounds' ratios (the two figures of a ratio measured seconds apart).
- bulk: messages/s through POST /api/schedule-sms/bulk (1,000 per request), divided by RQ's own
  `enqueue_many` rate for no-op jobs.
- delivery, slow, ai, batch, fork: delivery with the delivery rate limits off, every worker process
  started with `--burst` on a prepared queue; rates from RQ's own job timestamps (first job started to
  last job ended), so process start-up is not counted. Each verdict also needs every message sent.
  - delivery: single-message jobs for ONE process of the service's worker (`rqworker`, many
    deliveries in flight) against a provider that answers at once, divided by RQ's SimpleWorker on
    no-op jobs in the same run (target >= 0.7); SQLite and PostgreSQL.
  - slow: the provider answers after 100 ms, single-message jobs: 1 worker process (>= 200 msg/s, on
    SQLite) and 4 (>= 600 msg/s, on SQLite and PostgreSQL).
  - ai: AI replies, a model that answers after 2 s (bench/provider.py as AI_API_URL) and a second
    provider taking the callbacks: 1 worker process on queue `ai` (>= 10 replies/s); SQLite.
  - batch: bulk sends (batch jobs), 4 worker processes, provider at 100 ms (no lower than 577 msg/s);
    SQLite and PostgreSQL.
  - fork: single-message jobs through `--worker-class messaging.delivery.forkworker.ForkWorker` (a
    work horse per job), provider at once; no target; SQLite.
- recovery: 10,000 messages accepted while Redis was down (left `accepted`); Redis returns empty and
  2 workers and the scheduler start: seconds until the sweep has put all of them back on the queues
  (target <= 30 s) and until all are sent (provider at 100 ms); SQLite and PostgreSQL.
- scheduling: 1,000 messages at spread times and 5,000 due in the same second, 2 workers: lateness
  p50/p99/max, early sends (must be 0), and how long the burst takes.
- footprint: Redis bytes per queued message, worker resident memory.

Usage: python bench/run.py [--quick] [--skip-postgres] [--only delivery,slow,...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import requests

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
BIN = Path(PY).parent
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
# A name of one's own (BENCH_PG_DB) lets two runs share the PostgreSQL server without dropping each
# other's database.
PG_BENCH_DB = os.environ.get("BENCH_PG_DB", "qs_bench")
# Concurrent clients posting bulk requests (one per core here), and as many enqueue_many processes.
BULK_CLIENTS = 2
FORK_WORKER = "messaging.delivery.forkworker.ForkWorker"
# The ingest benchmark's floor: a plain Django project (bench/plain) and its one JSON view.
PLAIN_SETTINGS = "bench.plain.settings"
PLAIN_WSGI = "bench.plain.wsgi"
PLAIN_PATH = "/status"
# wrk's connections for every ingest figure, and how many interleaved rounds each figure is the median of.
INGEST_CONNECTIONS = 16
INGEST_ROUNDS = 3
SCENARIOS = (
    "ingest",
    "bulk",
    "delivery",
    "slow",
    "ai",
    "batch",
    "fork",
    "recovery",
    "scheduling",
    "footprint",
)
# Worker logs of the delivery scenarios (set by main to the run's temporary directory).
LOG_DIR = Path(tempfile.gettempdir())
PROBLEMS: list[str] = []  # worker processes that exited non-zero or did not finish

rows: list[tuple[str, str, str, str]] = []  # (figure, value, target, verdict)


def report(figure: str, value: str, target: str = "", ok: bool | None = None) -> None:
    verdict = "" if ok is None else ("met" if ok else "NOT MET")
    rows.append((figure, value, target, verdict))
    print(f"  {figure}: {value} {('(target ' + target + ', ' + verdict + ')') if target else ''}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def wait_port(port: int, timeout: float = 30) -> None:
    """Wait until something accepts connections on 127.0.0.1:`port` (a provider with a delay answers
    requests only after it, so this does not wait for an answer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


class Env:
    """Settings for one database: environment for subprocesses and an in-process Django."""

    def __init__(self, database_url: str, provider_url: str = "http://127.0.0.1:9/none", **extra: str):
        self.vars = {
            **os.environ,
            "DJANGO_ENV": "development",
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DATABASE_URL": database_url,
            "REDIS_URL": REDIS_URL,
            "SANDBOX_ENABLED": "false",
            "SMS_API_URL": provider_url,
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            # Benchmarks measure the machinery, not the configured rate limits: the API's is lifted,
            # the delivery rate limits are off (empty).
            "API_RATE_LIMIT_PER_KEY": "1000000/second",
            # Production's default (development's is 0, for runserver).
            "DATABASE_CONN_MAX_AGE": "60",
            "DELIVERY_RATE_SMS": "",
            "DELIVERY_RATE_EMAIL": "",
            "DELIVERY_RATE_AI": "",
            **extra,
        }

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [PY, "manage.py", *args], cwd=ROOT, env=self.vars, check=check, capture_output=True, text=True
        )

    def start(self, args: list[str], log: str = os.devnull) -> subprocess.Popen:
        return subprocess.Popen(
            args, cwd=ROOT, env=self.vars, stdout=open(log, "w"), stderr=subprocess.STDOUT
        )  # noqa: SIM115

    def django(self, code: str) -> str:
        """Run Python `code` in a Django shell with these settings; return its stdout."""
        return self.run("shell", "--no-imports", "-v", "0", "-c", code).stdout


def flush_redis() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


def sqlite_url(tmp: Path, name: str) -> str:
    return f"sqlite:///{tmp / name}"


def postgres_url() -> str | None:
    """Create a fresh PostgreSQL database for the run, or None when PostgreSQL is not reachable."""
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL.replace("postgres://", "postgresql://"), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {PG_BENCH_DB} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {PG_BENCH_DB}")
    except Exception as exc:  # noqa: BLE001 - any failure means "skip PostgreSQL"
        print(f"  PostgreSQL unavailable ({exc}); skipping it", flush=True)
        return None
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{PG_BENCH_DB}"


def drop_postgres_database() -> None:
    """Drop the run's PostgreSQL database (best effort)."""
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL.replace("postgres://", "postgresql://"), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {PG_BENCH_DB} WITH (FORCE)")
    except Exception as exc:  # noqa: BLE001 - leaving it behind is harmless
        print(f"  could not drop {PG_BENCH_DB}: {exc}", flush=True)


def prepare(env: Env) -> str:
    """Migrate and return a new API key."""
    env.run("migrate", "--noinput")
    return env.run("create_api_key", "bench", "--all-workspaces").stdout.strip().splitlines()[-1]


@contextmanager
def provider(delay_ms: int = 0):
    """Run bench/provider.py (asyncio, answers after `delay_ms`) on a free port; yield its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [PY, str(ROOT / "bench" / "provider.py"), "--port", str(port), "--delay-ms", str(delay_ms)], cwd=ROOT
    )
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait()


class WrkResult(NamedTuple):
    """One wrk run: requests/s over the run, the 99th percentile latency in ms, responses that were
    not 2xx or 3xx, socket errors (connect + read + write + timeout) and requests completed."""

    rate: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    requests: int


# wrk prints latencies with these units (its format_time: us, ms, s, then m and h).
WRK_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def wrk_time_ms(text: str) -> float:
    """A wrk latency such as `635.91us`, `3.87ms` or `1.02s`, in ms; ValueError for anything else."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise ValueError(f"not a wrk latency: {text!r}")
    return float(match.group(1)) * WRK_TIME_UNITS_MS[match.group(2)]


def parse_wrk(out: str) -> WrkResult:
    """Read wrk's report (run with --latency): see WrkResult. RuntimeError, with the report, when it
    lacks the rate or the latency distribution (wrk could not reach the server)."""
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s*99%\s+(\S+)\s*$", out, re.MULTILINE)
    if not rate or not p99:
        raise RuntimeError(f"wrk gave no rate or no latency distribution:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    done = re.search(r"(\d+) requests in", out)
    return WrkResult(
        rate=float(rate.group(1)),
        p99_ms=wrk_time_ms(p99.group(1)),
        non_2xx=int(bad.group(1)) if bad else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        requests=int(done.group(1)) if done else 0,
    )


def wrk(
    url: str, seconds: float, key: str = "", script: str | None = None, connections: int = INGEST_CONNECTIONS
) -> WrkResult:
    """Run wrk for `seconds` s with 2 threads and `connections` connections, latency distribution on;
    `script` (a Lua file) reads the API key from BENCH_API_KEY. See parse_wrk for errors raised."""
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script:
        args[1:1] = ["-s", script]
    out = subprocess.run(
        args, capture_output=True, text=True, env={**os.environ, "BENCH_API_KEY": key}
    ).stdout
    return parse_wrk(out)


@contextmanager
def web_server(env: Env, wsgi: str = "config.wsgi", ready_path: str = "/health"):
    """Run gunicorn with the service's own settings (config/gunicorn.py: workers, threads, worker
    class, keepalive) serving the WSGI module `wsgi` on a free loopback port, from the repository root;
    yield its base URL once `ready_path` answers. RuntimeError when it does not within 30 s."""
    port = free_port()
    web = env.start(
        [
            str(BIN / "gunicorn"),
            "-c",
            str(ROOT / "config" / "gunicorn.py"),
            wsgi,
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ]
    )
    try:
        wait_http(f"http://127.0.0.1:{port}{ready_path}")
        yield f"http://127.0.0.1:{port}"
    finally:
        web.terminate()
        web.wait()


def gunicorn_settings() -> str:
    """The web server settings the ingest figures were measured with (the service and the plain
    project alike), as config/gunicorn.py reads them; keepalive in s (gunicorn's default 2 if unset)."""
    code = (
        "import runpy; c = runpy.run_path('config/gunicorn.py'); "
        "print(c['workers'], c.get('threads', 1), c.get('worker_class', 'sync'), c.get('keepalive', 2))"
    )
    workers, threads, worker_class, keepalive = subprocess.run(
        [PY, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return f"gunicorn {worker_class} x{workers} workers x{threads} threads, keepalive {keepalive} s"


# --- Scenarios ------------------------------------------------------------------------------------


def bench_ingest(label: str, database_url: str, seconds: float, rounds: int = INGEST_ROUNDS) -> None:
    """The ingest figures for one database (see the module docstring): `rounds` rounds of the plain
    project's JSON view, the service's GET /health and its POST /api/schedule-sms, `seconds` s each,
    all at INGEST_CONNECTIONS connections; medians reported."""
    flush_redis()
    env = Env(database_url)
    key = prepare(env)
    plain_env = Env(database_url, DJANGO_SETTINGS_MODULE=PLAIN_SETTINGS)
    post_sms = str(ROOT / "bench" / "post_sms.lua")
    plain: list[WrkResult] = []
    health: list[WrkResult] = []
    post: list[WrkResult] = []
    with web_server(plain_env, PLAIN_WSGI, PLAIN_PATH) as plain_base, web_server(env) as base:
        plain_url, health_url, post_url = (
            f"{plain_base}{PLAIN_PATH}",
            f"{base}/health",
            f"{base}/api/schedule-sms",
        )
        # Warm up every worker of both servers, the POST path included (its first requests connect
        # to the database and Redis).
        wrk(plain_url, 1)
        wrk(health_url, 1)
        wrk(post_url, 1, key, post_sms)
        stored_before = count_status(database_url)
        for _ in range(rounds):
            plain.append(wrk(plain_url, seconds))
            health.append(wrk(health_url, seconds))
            post.append(wrk(post_url, seconds, key, post_sms))
            print(
                f"  ingest {label}, round {len(post)}: plain {plain[-1].rate:,.0f} req/s, "
                f"/health {health[-1].rate:,.0f} req/s, POST {post[-1].rate:,.0f} req/s",
                flush=True,
            )
    stored = count_status(database_url) - stored_before
    accepted_total = sum(run.requests - run.non_2xx for run in post)
    median = statistics.median
    plain_rate, health_rate, post_rate = (median(run.rate for run in runs) for runs in (plain, health, post))
    plain_p99, health_p99, post_p99 = (median(run.p99_ms for run in runs) for runs in (plain, health, post))
    health_ratio = median(h.rate / p.rate for h, p in zip(health, plain, strict=True))
    post_ratio = median(a.rate / p.rate for a, p in zip(post, plain, strict=True))
    bad = sum(run.non_2xx for run in post)
    errors = sum(run.socket_errors for run in (*plain, *health, *post))
    clean = bad == 0 and errors == 0 and stored >= accepted_total
    figure = f"ingest {label}, {INGEST_CONNECTIONS} connections"
    report(
        f"{figure}: plain Django JSON view (bench/plain, the floor)",
        f"{plain_rate:,.0f} req/s, p99 {plain_p99:.1f} ms (median of {rounds} rounds of {seconds:g} s)",
    )
    report(f"{figure}: GET /health", f"{health_rate:,.0f} req/s, p99 {health_p99:.1f} ms")
    report(
        f"{figure}: GET /health, ratio to plain view",
        f"{health_ratio:.2f}",
        ">= 0.9",
        health_ratio >= 0.9 and errors == 0,
    )
    socket_note = f", {errors} socket errors" if errors else ""
    report(
        f"{figure}: POST /api/schedule-sms",
        f"{post_rate:,.0f} accepted/s, p99 {post_p99:.1f} ms ({bad} non-2xx{socket_note}, "
        f"{stored:,} stored of {accepted_total:,} accepted)",
        ">= 1,000/s, p99 <= 50 ms",
        post_rate >= 1000 and post_p99 <= 50 and clean,
    )
    report(
        f"{figure}: POST /api/schedule-sms, ratio to plain view",
        f"{post_ratio:.2f}",
        ">= 0.4",
        post_ratio >= 0.4 and clean,
    )


def bench_bulk_ingest(label: str, database_url: str, requests_count: int) -> None:
    flush_redis()
    env = Env(database_url)
    key = prepare(env)
    body = json.dumps(
        {
            "messages": [
                {
                    "phoneNumber": f"+1415555{n:04d}",
                    "message": f"Campaign {n}",
                    "contactId": f"c-{n}",
                    "workspaceId": "66338",
                    "metadata": {"source": "broadcast2", "campaignId": "bench"},
                }
                for n in range(1000)
            ]
        }
    )
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def client(base: str) -> int:
        accepted = 0
        with requests.Session() as session:
            for _ in range(requests_count):
                answer = session.post(
                    f"{base}/api/schedule-sms/bulk", data=body, headers=headers, timeout=120
                )
                accepted += answer.json()["accepted"]
        return accepted

    with web_server(env) as base:
        requests.post(f"{base}/api/schedule-sms/bulk", data=body, headers=headers, timeout=60)  # warm up
        started = time.perf_counter()
        with ThreadPoolExecutor(BULK_CLIENTS) as pool:
            accepted = sum(pool.map(client, [base] * BULK_CLIENTS))
        bulk_rate = accepted / (time.perf_counter() - started)
    flush_redis()
    # The same number of messages as no-op jobs through RQ's enqueue_many, 1,000 per call and pipeline,
    # from as many processes as there were clients.
    code = (
        "import sys, redis\n"
        "from rq import Queue\n"
        f"queue = Queue('bench', connection=redis.Redis.from_url({REDIS_URL!r}))\n"
        f"for _ in range({requests_count}):\n"
        "    with queue.connection.pipeline() as pipe:\n"
        "        queue.enqueue_many([Queue.prepare_data('bench.noop.noop', args=(str(n),)) for n in range(1000)], pipeline=pipe)\n"
        "        pipe.execute()\n"
    )
    started = time.perf_counter()
    enqueuers = [subprocess.Popen([PY, "-c", code], cwd=ROOT) for _ in range(BULK_CLIENTS)]
    for process in enqueuers:
        process.wait()
    rq_rate = BULK_CLIENTS * requests_count * 1000 / (time.perf_counter() - started)
    flush_redis()
    report(
        f"bulk ingest {label}: POST /api/schedule-sms/bulk ({BULK_CLIENTS} clients)",
        f"{bulk_rate:,.0f} messages/s",
        ">= 10,000/s",
        bulk_rate >= 10_000,
    )
    report(
        f"bulk ingest {label}: RQ enqueue_many (no-op jobs, {BULK_CLIENTS} processes)",
        f"{rq_rate:,.0f} jobs/s",
    )
    report(f"bulk ingest {label}: ratio to enqueue_many", f"{bulk_rate / rq_rate:.2f}")


# --- Delivery -------------------------------------------------------------------------------------
# Every delivery scenario: delivery rate limits off, a fresh database, the messages stored and their
# jobs queued first, then worker processes started with `--burst` on the prepared queue and waited
# for. Rates come from RQ's own job timestamps (first job started -> last job ended), so the worker
# processes' start-up and exit are not counted.

# Seconds a burst worker may take before it counts as "did not finish": this plus 1 s per 20 jobs.
WORKER_TIMEOUT_BASE = 120
WORKER_FOR_SIGTERM = 30  # seconds between SIGTERM and SIGKILL for a worker that did not finish


class Span(NamedTuple):
    """What RQ recorded for one queue after a run: finished jobs and their span, failed jobs, jobs
    left on the queue, finished jobs per worker, and how far apart the workers started their first job."""

    count: int
    seconds: float
    failed: int
    left: int
    per_worker: list[int]
    start_spread: float


def finished_jobs_span(env: Env, queue: str) -> Span:
    """Read RQ's own job records for `queue`, so a worker process's start-up and exit are not counted."""
    code = (
        "import json\n"
        "from messaging import queues\n"
        "from rq.registry import FailedJobRegistry, FinishedJobRegistry\n"
        f"q = queues.get_queue({queue!r})\n"
        "ids = FinishedJobRegistry(queue=q).get_job_ids()\n"
        "jobs = [j for j in q.job_class.fetch_many(ids, connection=q.connection) if j]\n"
        "first, counts = {}, {}\n"
        "for j in jobs:\n"
        "    name = j.worker_name or '?'\n"
        "    counts[name] = counts.get(name, 0) + 1\n"
        "    first[name] = min(first.get(name, j.started_at), j.started_at)\n"
        "span = (max(j.ended_at for j in jobs) - min(j.started_at for j in jobs)).total_seconds() if jobs else 0.0\n"
        "spread = (max(first.values()) - min(first.values())).total_seconds() if first else 0.0\n"
        "print(json.dumps([len(jobs), span, FailedJobRegistry(queue=q).count, q.count,"
        " sorted(counts.values(), reverse=True), spread]))\n"
    )
    return Span(*json.loads(env.django(code).strip().splitlines()[-1]))


def sent_count(env: Env, channel: str | None = None) -> int:
    """Messages in status `sent` in `env`'s database (on `channel` only, if given)."""
    where = f", channel={channel!r}" if channel else ""
    code = (
        f"from messaging.models import Message; print(Message.objects.filter(status='sent'{where}).count())"
    )
    return int(env.django(code).strip().splitlines()[-1])


def status_counts(env: Env) -> str:
    """Messages per status and attempts per outcome and error kind, e.g. "sent 1990, queued 10; attempts:
    success - 1990, transient ReadTimeout 10" (evidence when not everything was sent)."""
    code = (
        "from django.db.models import Count\n"
        "from messaging.models import Message\n"
        "from messaging.models import DeliveryAttempt\n"
        "print(', '.join(f'{r[\"status\"]} {r[\"n\"]}' for r in"
        " Message.objects.values('status').annotate(n=Count('pk')).order_by('-n'))"
        ' + \'; attempts: \' + \', \'.join(f\'{r["outcome"]} {r["error_kind"] or "-"} {r["n"]}\' for r in'
        " DeliveryAttempt.objects.values('outcome', 'error_kind').annotate(n=Count('pk')).order_by('-n')))\n"
    )
    return env.django(code).strip().splitlines()[-1]


def create_messages(env: Env, count: int, *, bulk: bool) -> None:
    """Store `count` SMS messages due now: one `message_create` each, or bulk sends of 1,000."""
    item = "dict(channel='sms', workspace_external_id='66338', contact_id='c', recipient='+14155550123', body='hi')"
    if bulk:
        code = (
            "from messaging.services import message_create_bulk\n"
            f"items = [{item} for n in range({count})]\n"
            "for i in range(0, len(items), 1000): message_create_bulk(items=items[i:i+1000])\n"
        )
    else:
        code = f"from messaging.services import message_create\nfor n in range({count}): message_create(**{item})\n"
    env.django(code)


def create_ai_requests(env: Env, count: int, callback_url: str) -> None:
    """Store `count` AI-reply requests (queue `ai`) through `ai_request_create`, as the API does."""
    env.django(
        "from messaging.services import ai_request_create\n"
        f"for n in range({count}):\n"
        "    ai_request_create(workspace_external_id='66338', contact_id='c', external_message_id=f'm{n}',"
        f" body='hi', callback_url={callback_url!r}, rate_limit_key=f'k{{n}}')\n"
    )


def enqueue_noop_jobs(env: Env, queue: str, count: int) -> None:
    """Put `count` no-op jobs (bench.noop.noop) on `queue`, 1,000 per pipeline."""
    env.django(
        "import django_rq\n"
        "from rq import Queue\n"
        f"q = django_rq.get_queue({queue!r})\n"
        f"for i in range(0, {count}, 1000):\n"
        "    with q.connection.pipeline() as pipe:\n"
        f"        q.enqueue_many([Queue.prepare_data('bench.noop.noop', args=(n,)) for n in range(i, min(i + 1000, {count}))], pipeline=pipe)\n"
        "        pipe.execute()\n"
    )


def run_burst_workers(
    env: Env, queues: list[str], processes: int, *, jobs: int, worker_class: str | None = None, name: str
) -> list[str]:
    """Start `processes` `rqworker --burst` processes on the prepared `queues` at once and wait for
    all of them. Returns problems (a worker that exited non-zero or did not finish in time, with
    the end of its log); their logs are kept in LOG_DIR."""
    args = [PY, "manage.py", "rqworker", *queues, "--burst"]
    if worker_class:
        args += ["--worker-class", worker_class]
    logs = [LOG_DIR / f"{re.sub(r'[^a-z0-9]+', '-', name.lower())}-{n}.log" for n in range(processes)]
    started = [env.start(args, str(log)) for log in logs]
    deadline = time.monotonic() + WORKER_TIMEOUT_BASE + jobs / 20
    problems = []
    for n, (process, log) in enumerate(zip(started, logs, strict=True)):
        try:
            code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=WORKER_FOR_SIGTERM)
                code = f"did not finish in {WORKER_TIMEOUT_BASE + jobs / 20:.0f} s (stopped by SIGTERM)"
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                code = f"did not finish in {WORKER_TIMEOUT_BASE + jobs / 20:.0f} s, nor on SIGTERM (killed)"
        if code != 0:
            tail = " | ".join(Path(log).read_text(errors="replace").strip().splitlines()[-3:])
            what = f"exit code {code}" if isinstance(code, int) else code
            problems.append(f"worker {n + 1}/{processes}: {what}; last lines of {log}: {tail}")
    for problem in problems:
        print(f"  PROBLEM {name}: {problem}", flush=True)
    PROBLEMS.extend(problems)
    return problems


def rate_details(span: Span, sent: int, count: int, problems: list[str], env: Env) -> str:
    """The part of a value in brackets: sent, and whatever looks wrong (failed or left-over jobs,
    workers that did not finish); for several workers, jobs per worker and how far apart they began."""
    parts = [f"{sent:,}/{count:,} sent"]
    if sent != count:
        parts.append(f"messages: {status_counts(env)}")
    if span.failed or span.left:
        parts.append(f"{span.failed} failed jobs, {span.left} left on the queue")
    if len(span.per_worker) > 1:
        parts.append(
            f"jobs per process {'/'.join(f'{n:,}' for n in span.per_worker)}, first jobs within {span.start_spread:.1f} s"
        )
    if problems:
        parts.append(f"{len(problems)} worker problem(s), see above")
    return "; ".join(parts)


def deliver_and_measure(
    env: Env, name: str, count: int, *, queue: str, processes: int, worker_class: str | None = None
) -> tuple[float, str, bool]:
    """Run burst workers over the prepared queue; return (messages sent per second, details, clean)."""
    problems = run_burst_workers(env, [queue], processes, jobs=count, worker_class=worker_class, name=name)
    span = finished_jobs_span(env, queue)
    sent = sent_count(env, queue if queue == "ai" else None)
    rate = sent / span.seconds if span.seconds else 0.0
    clean = sent == count and not problems and not span.failed and not span.left
    return rate, rate_details(span, sent, count, problems, env), clean


def fresh_database(label: str, tmp: Path, name: str) -> str | None:
    """A new empty database for one scenario: an SQLite file, or the PostgreSQL database re-created."""
    return sqlite_url(tmp, f"{name}.sqlite3") if label == "SQLite" else postgres_url()


def noop_rate(database_url: str, count: int) -> float:
    """No-op jobs per second for one RQ SimpleWorker process (the baseline of the delivery ratio)."""
    flush_redis()
    env = Env(database_url)
    enqueue_noop_jobs(env, "sms", count)
    problems = run_burst_workers(
        env, ["sms"], 1, jobs=count, worker_class="rq.worker.SimpleWorker", name="noop SimpleWorker"
    )
    span = finished_jobs_span(env, "sms")
    flush_redis()
    rate = span.count / span.seconds if span.seconds else 0.0
    report(
        "delivery: RQ SimpleWorker, 1 process: no-op jobs (bench.noop.noop)",
        f"{rate:,.0f} jobs/s ({span.count:,}/{count:,} done"
        + (f"; {len(problems)} worker problem(s)" if problems else "")
        + ")",
    )
    return rate


def bench_delivery(label: str, database_url: str, count: int, baseline: float) -> None:
    """(a) Single-message jobs, provider answering at once, one process of the service's worker;
    divided by RQ SimpleWorker's no-op jobs per second (`baseline`) in the same run."""
    with provider(0) as url:
        flush_redis()
        env = Env(database_url, url)
        prepare(env)
        create_messages(env, count, bulk=False)
        name = f"delivery {label}, provider at once, 1 worker process"
        rate, details, clean = deliver_and_measure(env, name, count, queue="sms", processes=1)
        flush_redis()
    report(f"{name} (service's worker): single-message jobs", f"{rate:,.0f} msg/s ({details})")
    report(
        f"{name}: ratio to RQ SimpleWorker no-op jobs",
        f"{rate / baseline:.2f}" if baseline else "n/a",
        ">= 0.7",
        bool(baseline) and rate / baseline >= 0.7 and clean,
    )


def bench_fork(label: str, database_url: str, count: int) -> None:
    """(e) The same single-message jobs through rq's forking worker (a work horse per job)."""
    with provider(0) as url:
        flush_redis()
        env = Env(database_url, url)
        prepare(env)
        create_messages(env, count, bulk=False)
        name = f"delivery {label}, provider at once, 1 ForkWorker process"
        rate, details, _ = deliver_and_measure(
            env, name, count, queue="sms", processes=1, worker_class=FORK_WORKER
        )
        flush_redis()
    report(f"{name}: single-message jobs", f"{rate:,.1f} msg/s ({details})")


def bench_slow(
    label: str, database_url: str, count: int, processes: int, target: float, *, bulk: bool
) -> None:
    """(b, d) Provider answering after 100 ms: single-message jobs or bulk batch jobs, `processes`
    worker processes of the service's worker."""
    with provider(100) as url:
        flush_redis()
        env = Env(database_url, url)
        prepare(env)
        create_messages(env, count, bulk=bulk)
        plural = "es" if processes > 1 else ""
        kind = "bulk batch jobs" if bulk else "single-message jobs"
        name = f"delivery {label}, provider 100 ms, {processes} worker process{plural}"
        rate, details, clean = deliver_and_measure(env, name, count, queue="sms", processes=processes)
        flush_redis()
    report(
        f"{name}: {kind}",
        f"{rate:,.0f} msg/s ({details})",
        f">= {target:,.0f}/s",
        rate >= target and clean,
    )


def bench_ai(label: str, database_url: str, count: int) -> None:
    """(c) AI replies: the model (bench/provider.py at AI_API_URL) answers after 2 s, a second
    provider takes the callbacks; one worker process on queue `ai`."""
    with provider(2000) as model_url, provider(0) as receiver_url:
        flush_redis()
        receiver = receiver_url.removeprefix("http://")
        env = Env(database_url, AI_API_URL=model_url, CALLBACK_ALLOWED_HOSTS=receiver)
        prepare(env)
        create_ai_requests(env, count, f"{receiver_url}/callback")
        name = f"AI replies {label}, model answers after 2 s, 1 worker process"
        rate, details, clean = deliver_and_measure(env, name, count, queue="ai", processes=1)
        flush_redis()
    # The model's reply was read and stored (not the simulated one used when AI_API_URL is empty).
    code = (
        "from messaging.models import Message\n"
        "print(Message.objects.filter(channel='ai', response_text='bench reply', ai_model='bench').count())\n"
    )
    replies = int(env.django(code).strip().splitlines()[-1])
    if replies != count:
        details += f"; {replies:,}/{count:,} with the model's reply stored"
    report(
        f"{name}: replies sent",
        f"{rate:,.1f} replies/s ({details})",
        ">= 10/s",
        rate >= 10 and clean and replies == count,
    )


def count_status(database_url: str, status: str | None = None) -> int:
    """Messages in `status` (all messages when None), read straight from the database (no Django
    process per poll)."""
    sql = "SELECT count(*) FROM messaging_message"
    params: tuple[str, ...] = ()
    if status is not None:
        sql += " WHERE status = %s"
        params = (status,)
    if database_url.startswith("sqlite:///"):
        import sqlite3

        with sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=20) as conn:
            return conn.execute(sql.replace("%s", "?"), params).fetchone()[0]
    import psycopg

    with psycopg.connect(database_url.replace("postgres://", "postgresql://")) as conn:
        return conn.execute(sql, params).fetchone()[0]


def bench_recovery(label: str, database_url: str, count: int) -> None:
    """Redis was down while `count` messages were accepted (they wait `accepted` in the database);
    it comes back empty. With 2 workers and the scheduler started at that moment (provider at 100 ms):
    how long until the sweep has put every one of them back on the queues (target 30 s), and until
    all are sent."""
    with provider(100) as url:
        flush_redis()
        env = Env(database_url, url, SWEEP_GRACE_SECONDS="1")
        prepare(env)
        down = Env(database_url, url, REDIS_URL="redis://127.0.0.1:9/0", REDIS_CONNECT_TIMEOUT="0.2")
        create_messages(down, count, bulk=True)
        accepted = count_status(database_url, "accepted")
        time.sleep(1.5)  # older than SWEEP_GRACE_SECONDS, as messages accepted during an outage are
        logs = [
            LOG_DIR / f"recovery-{label.lower()}-{name}.log" for name in ("worker1", "worker2", "scheduler")
        ]
        started = time.monotonic()
        processes = [
            env.start([PY, "manage.py", "rqworker", "sms", "email", "ai"], str(logs[0])),
            env.start([PY, "manage.py", "rqworker", "sms", "email", "ai"], str(logs[1])),
            env.start([PY, "manage.py", "rqscheduler", "--interval", "1"], str(logs[2])),
        ]
        queued_after = sent_after = None
        deadline = started + 60 + count / 50
        while time.monotonic() < deadline:
            now = time.monotonic() - started
            if queued_after is None and count_status(database_url, "accepted") == 0:
                queued_after = now
            if count_status(database_url, "sent") >= count:
                sent_after = now
                break
            time.sleep(0.25)
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        flush_redis()
    sent = count_status(database_url, "sent")
    report(
        f"recovery {label}: {accepted:,} accepted while Redis was down, back on the queues after",
        f"{queued_after:.1f} s (2 workers and the scheduler started when Redis returned)"
        if queued_after is not None
        else "not within the time allowed",
        "<= 30 s",
        queued_after is not None and queued_after <= 30 and accepted == count,
    )
    report(
        f"recovery {label}: all sent after",
        f"{sent_after:.1f} s ({sent:,}/{count:,} sent, provider 100 ms)"
        if sent_after
        else f"{sent:,}/{count:,} sent",
    )


def lateness_stats(env: Env) -> dict:
    code = (
        "import json\n"
        "from messaging.models import DeliveryAttempt\n"
        "rows = DeliveryAttempt.objects.filter(number=1).values_list('started_at', 'message__scheduled_for')\n"
        "print(json.dumps([(s - d).total_seconds() for s, d in rows]))\n"
    )
    values = sorted(json.loads(env.django(code).strip().splitlines()[-1]))
    return {
        "count": len(values),
        "p50": statistics.median(values),
        "p99": values[int(len(values) * 0.99) - 1],
        "max": values[-1],
        "early": sum(1 for v in values if v < 0),
    }


def bench_scheduling(database_url: str, spread_count: int, burst_count: int) -> None:
    with provider(0) as url:
        for label, count, spread in (("spread", spread_count, 10.0), ("same second", burst_count, 0.0)):
            flush_redis()
            env = Env(database_url, url)
            prepare(env)
            env.django("from messaging.models import Message; Message.objects.all().delete()")
            lead = 8.0
            env.django(
                "import random\n"
                "from datetime import timedelta\n"
                "from django.utils import timezone\n"
                "from messaging.services import message_create_bulk\n"
                f"base = timezone.now() + timedelta(seconds={lead})\n"
                f"items = [dict(channel='sms', workspace_external_id='66338', contact_id='c', recipient='+14155550123',"
                f" body='hi', scheduled_for=base + timedelta(seconds=random.uniform(0, {spread}) if {spread} else 0.5))"
                f" for n in range({count})]\n"
                "for i in range(0, len(items), 1000): message_create_bulk(items=items[i:i+1000])\n"
            )
            scheduler = env.start([PY, "manage.py", "rqscheduler", "--interval", "1"])
            workers = [env.start([PY, "manage.py", "rqworker", "sms"]) for _ in range(2)]
            deadline = time.monotonic() + lead + spread + 120
            sent = 0
            while time.monotonic() < deadline:
                time.sleep(1)
                sent = sent_count(env)
                if sent >= count:
                    break
            for process in [scheduler, *workers]:
                process.send_signal(signal.SIGTERM)
            for process in [scheduler, *workers]:
                process.wait()
            stats = lateness_stats(env)
            report(
                f"scheduling, {count:,} {label}: lateness p50 / p99 / max",
                f"{stats['p50']:.2f} / {stats['p99']:.2f} / {stats['max']:.2f} s ({sent}/{count} sent)",
            )
            report(
                f"scheduling, {count:,} {label}: sent early", str(stats["early"]), "0", stats["early"] == 0
            )
            if not spread:
                report(
                    f"scheduling, {count:,} {label}: burst took (due → last handed over)",
                    f"{stats['max']:.2f} s",
                )


def bench_footprint(database_url: str, count: int) -> None:
    import redis

    connection = redis.Redis.from_url(REDIS_URL)
    flush_redis()
    env = Env(database_url)
    prepare(env)
    before = connection.info("memory")["used_memory"]
    create_messages(env, count, bulk=False)
    single = (connection.info("memory")["used_memory"] - before) / count
    flush_redis()
    before = connection.info("memory")["used_memory"]
    create_messages(env, count, bulk=True)
    bulk = (connection.info("memory")["used_memory"] - before) / count
    worker = env.start([PY, "manage.py", "rqworker", "sms"])
    time.sleep(6)
    rss_kb = int(
        subprocess.run(
            ["ps", "-o", "rss=", "-p", str(worker.pid)], capture_output=True, text=True
        ).stdout.strip()
        or 0
    )
    worker.terminate()
    worker.wait()
    flush_redis()
    report("footprint: Redis per queued message (single job)", f"{single:,.0f} bytes")
    report("footprint: Redis per queued message (bulk batch job)", f"{bulk:,.0f} bytes")
    report("footprint: worker resident memory (idle, after start)", f"{rss_kb / 1024:,.0f} MiB")


def service_settings() -> str:
    """The worker settings the delivery figures were measured with, as the service reads them."""
    code = (
        "from django.conf import settings as s\n"
        "print(s.RQ['WORKER_CLASS'], s.WORKER_CONCURRENCY, s.BULK_BATCH_SIZE, s.ENQUEUE_BATCH_MS)\n"
    )
    worker, concurrency, batch, enqueue_ms = Env("sqlite://:memory:").django(code).split()
    return (
        f"ENQUEUE_BATCH_MS {float(enqueue_ms):g}; worker {worker} unless named, WORKER_CONCURRENCY "
        f"{concurrency} (deliveries in flight per worker process); bulk batches of {batch}"
    )


def print_table() -> None:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), ""
    )
    print()
    print(
        f"Machine: {platform.system()} {platform.machine()}, {os.cpu_count()} cores, {cpu}; Python {platform.python_version()}"
    )
    print(
        f"Settings: web {gunicorn_settings()}; {service_settings()}; API rate limit lifted and delivery "
        "rate limits off, so the machinery is measured; provider: bench/provider.py (asyncio) on loopback"
    )
    print()
    print("| figure | value | target | verdict |")
    print("| --- | --- | --- | --- |")
    for figure, value, target, verdict in rows:
        print(f"| {figure} | {value} | {target} | {verdict} |")


def run_delivery(want, tmp: Path, postgres: bool, quick: bool) -> None:  # noqa: ANN001 - a predicate
    """The delivery scenarios (see the module docstring), SQLite first, then PostgreSQL where cheap."""
    labels = ["SQLite", "PostgreSQL"] if postgres else ["SQLite"]
    if want("delivery"):
        count = 500 if quick else 2000
        baseline = noop_rate(sqlite_url(tmp, "noop.sqlite3"), count)
        for label in labels:
            if database := fresh_database(label, tmp, "delivery"):
                bench_delivery(label, database, count, baseline)
    if want("slow"):
        bench_slow("SQLite", sqlite_url(tmp, "slow1.sqlite3"), 600 if quick else 2000, 1, 200, bulk=False)
        for label in labels:
            if database := fresh_database(label, tmp, "slow4"):
                bench_slow(label, database, 1800 if quick else 6000, 4, 600, bulk=False)
    if want("ai"):
        bench_ai("SQLite", sqlite_url(tmp, "ai.sqlite3"), 100 if quick else 300)
    if want("batch"):
        for label in labels:
            if database := fresh_database(label, tmp, "batch"):
                bench_slow(label, database, 2000 if quick else 6000, 4, 577, bulk=True)
    if want("fork"):
        bench_fork("SQLite", sqlite_url(tmp, "fork.sqlite3"), 60 if quick else 200)
    if want("recovery"):
        for label in labels:
            if database := fresh_database(label, tmp, "recovery"):
                bench_recovery(label, database, 2000 if quick else 10000)


def main() -> None:
    global LOG_DIR
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts and shorter runs")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the delivery scenarios' worker logs (kept anyway on problems)",
    )
    parser.add_argument("--only", default="", help=f"comma-separated: {','.join(SCENARIOS)}")
    options = parser.parse_args()
    only = set(filter(None, options.only.split(",")))
    if only - set(SCENARIOS):
        parser.error(
            f"--only: unknown {','.join(sorted(only - set(SCENARIOS)))} (known: {','.join(SCENARIOS)})"
        )
    want = lambda name: not only or name in only  # noqa: E731
    if want("ingest") and not shutil.which("wrk"):
        sys.exit("wrk is needed for the ingest benchmark: apt-get install wrk (make bench does this)")
    quick = options.quick
    LOG_DIR = Path(tempfile.mkdtemp(prefix="qs-bench-logs-"))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pg = None if options.skip_postgres else postgres_url()
        print("Running benchmarks (this takes a few minutes)...", flush=True)
        if want("ingest"):
            bench_ingest("SQLite", sqlite_url(tmp, "ingest.sqlite3"), 2 if quick else 5)
            if pg:
                bench_ingest("PostgreSQL", pg, 2 if quick else 5)
        if want("bulk"):
            bench_bulk_ingest("SQLite", sqlite_url(tmp, "bulk.sqlite3"), 3 if quick else 10)
            if pg:
                bench_bulk_ingest("PostgreSQL", postgres_url() or pg, 3 if quick else 10)
        run_delivery(want, tmp, bool(pg), quick)
        if want("scheduling"):
            database = (pg and postgres_url()) or sqlite_url(tmp, "sched.sqlite3")
            bench_scheduling(database, 1000, 1000 if quick else 5000)
        if want("footprint"):
            bench_footprint(sqlite_url(tmp, "footprint.sqlite3"), 2000 if quick else 10000)
        if pg:
            drop_postgres_database()
    print_table()
    if any(LOG_DIR.iterdir()) and (PROBLEMS or options.keep_logs):
        print(f"\nWorker logs of the delivery scenarios: {LOG_DIR}")
    else:
        shutil.rmtree(LOG_DIR, ignore_errors=True)


if __name__ == "__main__":
    main()

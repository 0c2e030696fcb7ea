"""Benchmark suite: `make bench`. Prints one table; every ratio is measured side by side in this run.

Scenarios (all traffic on loopback; a private Redis database and throw-away databases):
- ingest: accepted SMS/s through POST /api/schedule-sms under `gunicorn -w 2`, driven by wrk, divided
  by a trivial JSON view (/health) on the same server; on SQLite and on PostgreSQL.
- bulk ingest: messages/s through POST /api/schedule-sms/bulk (1,000 per request), divided by RQ's own
  `enqueue_many` rate for no-op jobs.
- delivery: single-message jobs per second for one `rqworker` process against a provider that answers
  at once, divided by no-op jobs with the same worker class; and bulk messages per second with at most
  4 worker processes when the provider answers after 100 ms.
- scheduling: 1,000 messages at spread times and 5,000 due in the same second: lateness p50/p99/max,
  early sends (must be 0), and how long the burst takes.
- footprint: Redis bytes per queued message, worker resident memory.

Usage: python bench/run.py [--quick] [--skip-postgres]
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

import requests

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
BIN = Path(PY).parent
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
PG_BENCH_DB = "qs_bench"
# Concurrent clients posting bulk requests (one per core here), and as many enqueue_many processes.
BULK_CLIENTS = 2

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
            # Benchmarks measure the machinery, not the configured provider rate limits.
            "API_RATE_LIMIT_PER_KEY": "1000000/second",
            "DELIVERY_RATE_SMS": "100000/second",
            "DELIVERY_RATE_EMAIL": "100000/second",
            "DELIVERY_RATE_AI": "100000/second",
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
            conn.execute(f"DROP DATABASE IF EXISTS {PG_BENCH_DB}")
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
    return env.run("create_api_key", "bench").stdout.strip().splitlines()[-1]


@contextmanager
def provider(delay_ms: int = 0):
    """Run bench/provider.py (asyncio, answers after `delay_ms`) on a free port; yield its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [PY, str(ROOT / "bench" / "provider.py"), "--port", str(port), "--delay-ms", str(delay_ms)], cwd=ROOT
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait()


def wrk(url: str, seconds: int, key: str = "", script: str | None = None) -> tuple[float, int]:
    """Return (requests/s, non-2xx count) from wrk with 2 threads and 32 connections."""
    args = ["wrk", "-t2", "-c32", f"-d{seconds}s", url]
    if script:
        args[1:1] = ["-s", script]
    out = subprocess.run(
        args, capture_output=True, text=True, env={**os.environ, "BENCH_API_KEY": key}
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rate, int(bad.group(1)) if bad else 0


@contextmanager
def web_server(env: Env):
    """Run gunicorn with the service's own settings (config/gunicorn.py: workers, threads from
    WEB_CONCURRENCY / WEB_THREADS) on a free loopback port; yield its base URL."""
    port = free_port()
    web = env.start(
        [
            str(BIN / "gunicorn"),
            "-c",
            str(ROOT / "config" / "gunicorn.py"),
            "config.wsgi",
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ]
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}"
    finally:
        web.terminate()
        web.wait()


def gunicorn_settings() -> str:
    """The web server settings the ingest figures were measured with, as config/gunicorn.py reads them."""
    code = "import runpy; c = runpy.run_path('config/gunicorn.py'); print(c['workers'], c.get('threads', 1), c.get('worker_class', 'sync'))"
    workers, threads, worker_class = subprocess.run(
        [PY, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return f"gunicorn {worker_class} x{workers} workers x{threads} threads"


# --- Scenarios ------------------------------------------------------------------------------------


def bench_ingest(label: str, database_url: str, seconds: int) -> None:
    flush_redis()
    env = Env(database_url)
    key = prepare(env)
    with web_server(env) as base:
        wrk(f"{base}/health", 1)  # warm up both workers
        trivial, _ = wrk(f"{base}/health", seconds)
        accepted, bad = wrk(f"{base}/api/schedule-sms", seconds, key, str(ROOT / "bench" / "post_sms.lua"))
    stored = int(env.django("from messaging.models import Message; print(Message.objects.count())").strip())
    report(f"ingest {label}: trivial JSON view", f"{trivial:,.0f} req/s")
    report(
        f"ingest {label}: POST /api/schedule-sms",
        f"{accepted:,.0f} accepted/s ({bad} non-2xx, {stored:,} stored)",
    )
    report(
        f"ingest {label}: ratio to trivial view",
        f"{accepted / trivial:.2f}",
        ">= 0.35",
        accepted / trivial >= 0.35 and bad == 0,
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
        ">= 5,000/s",
        bulk_rate >= 5000,
    )
    report(
        f"bulk ingest {label}: RQ enqueue_many (no-op jobs, {BULK_CLIENTS} processes)",
        f"{rq_rate:,.0f} jobs/s",
    )
    report(f"bulk ingest {label}: ratio to enqueue_many", f"{bulk_rate / rq_rate:.2f}")


def run_burst_worker(env: Env, queues: list[str], worker_class: str | None = None) -> None:
    args = [PY, "manage.py", "rqworker", *queues, "--burst"]
    if worker_class:
        args += ["--worker-class", worker_class]
    subprocess.run(args, cwd=ROOT, env=env.vars, check=True, capture_output=True)


def finished_jobs_span(env: Env, queue: str) -> tuple[int, float]:
    """Return (finished jobs on `queue`, seconds from the first job's start to the last job's end).

    Read from RQ's own job records, so a worker process's start-up and exit are not counted.
    """
    code = (
        "import json\n"
        "from messaging import queues\n"
        "from rq.registry import FinishedJobRegistry\n"
        f"q = queues.get_queue({queue!r})\n"
        "ids = FinishedJobRegistry(queue=q).get_job_ids()\n"
        "jobs = [j for j in q.job_class.fetch_many(ids, connection=q.connection) if j]\n"
        "print(json.dumps([len(jobs), (max(j.ended_at for j in jobs) - min(j.started_at for j in jobs)).total_seconds()]))\n"
    )
    count, seconds = json.loads(env.django(code).strip().splitlines()[-1])
    return count, seconds


SENT_COUNT = "from messaging.models import Message; print(Message.objects.filter(status='sent').count())"


def sent_count(env: Env) -> int:
    """Messages in status `sent` in `env`'s database."""
    return int(env.django(SENT_COUNT).strip().splitlines()[-1])


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


def bench_delivery(database_url: str, count: int, worker_class: str | None) -> None:
    with provider(0) as url:
        flush_redis()
        env = Env(database_url, url)
        prepare(env)
        create_messages(env, count, bulk=False)
        run_burst_worker(env, ["sms"], worker_class)
        _, delivery_elapsed = finished_jobs_span(env, "sms")
        sent = sent_count(env)
        flush_redis()
        env.django(
            "import django_rq\n"
            "q = django_rq.get_queue('sms')\n"
            f"for n in range({count}): q.enqueue('bench.noop.noop', n)\n"
        )
        run_burst_worker(env, ["sms"], worker_class)
        noop_done, noop_elapsed = finished_jobs_span(env, "sms")
        batch_rate = None
        if worker_class is None:
            # The same messages sent as a bulk send: batch jobs of BULK_BATCH_SIZE, calls in flight.
            flush_redis()
            env.django("from messaging.models import Message; Message.objects.all().delete()")
            create_messages(env, count, bulk=True)
            run_burst_worker(env, ["sms"], worker_class)
            _, batch_elapsed = finished_jobs_span(env, "sms")
            batch_sent = sent_count(env)
            batch_rate = batch_sent / batch_elapsed
    delivery_rate, noop_rate = sent / delivery_elapsed, noop_done / noop_elapsed
    name = worker_class or "messaging.worker.Worker, in-process"
    report(f"delivery, 1 worker ({name}): messages", f"{delivery_rate:,.1f} msg/s ({sent}/{count} sent)")
    report(f"delivery, 1 worker ({name}): no-op jobs", f"{noop_rate:,.1f} jobs/s")
    report(
        f"delivery, 1 worker ({name}): ratio",
        f"{delivery_rate / noop_rate:.2f}",
        ">= 0.7",
        delivery_rate / noop_rate >= 0.7,
    )
    if batch_rate is not None:
        report(
            f"delivery, 1 worker ({name}): bulk messages (batch jobs)",
            f"{batch_rate:,.1f} msg/s ({batch_sent}/{count} sent; {batch_rate / noop_rate:.2f} of the no-op job rate)",
            ">= 0.7",
            batch_rate / noop_rate >= 0.7 and batch_sent == count,
        )


def bench_slow_provider(database_url: str, count: int, workers: int) -> None:
    with provider(100) as url:
        flush_redis()
        env = Env(database_url, url)
        prepare(env)
        create_messages(env, count, bulk=True)
        processes = [
            subprocess.Popen(
                [PY, "manage.py", "rqworker", "sms", "--burst"],
                cwd=ROOT,
                env=env.vars,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(workers)
        ]
        for process in processes:
            process.wait()
        _, elapsed = finished_jobs_span(env, "sms")
        sent = sent_count(env)
    rate = sent / elapsed
    report(
        f"delivery, provider 100 ms, {workers} workers (bulk)",
        f"{rate:,.0f} msg/s ({sent}/{count} sent)",
        ">= 300/s",
        rate >= 300 and sent == count,
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
        f"Settings: web {gunicorn_settings()}, ENQUEUE_BATCH_MS {os.environ.get('ENQUEUE_BATCH_MS', '5')} "
        f"(service default); worker messaging.worker.Worker (jobs in-process) unless named; bulk batches of "
        f"{os.environ.get('BULK_BATCH_SIZE', '100')}, {os.environ.get('BULK_DELIVERY_CONCURRENCY', '25')} calls in "
        "flight per worker process; rate limits lifted (API and delivery) so the machinery is measured; "
        "provider: bench/provider.py (asyncio) on loopback"
    )
    print()
    print("| figure | value | target | verdict |")
    print("| --- | --- | --- | --- |")
    for figure, value, target, verdict in rows:
        print(f"| {figure} | {value} | {target} | {verdict} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts and shorter runs")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument(
        "--only", default="", help="comma-separated: ingest,bulk,delivery,slow,scheduling,footprint"
    )
    options = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed for the ingest benchmark: apt-get install wrk (make bench does this)")
    only = set(filter(None, options.only.split(",")))
    want = lambda name: not only or name in only  # noqa: E731
    quick = options.quick
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pg = None if options.skip_postgres else postgres_url()
        print("Running benchmarks (this takes a few minutes)...", flush=True)
        if want("ingest"):
            bench_ingest("SQLite", sqlite_url(tmp, "ingest.sqlite3"), 5 if quick else 10)
            if pg:
                bench_ingest("PostgreSQL", pg, 5 if quick else 10)
        if want("bulk"):
            bench_bulk_ingest("SQLite", sqlite_url(tmp, "bulk.sqlite3"), 3 if quick else 10)
            if pg:
                bench_bulk_ingest("PostgreSQL", postgres_url() or pg, 3 if quick else 10)
        if want("delivery"):
            bench_delivery(sqlite_url(tmp, "delivery.sqlite3"), 300 if quick else 1000, None)
            bench_delivery(
                sqlite_url(tmp, "delivery2.sqlite3"), 300 if quick else 1000, "messaging.worker.ForkWorker"
            )
        if want("slow"):
            bench_slow_provider(pg or sqlite_url(tmp, "slow.sqlite3"), 1000 if quick else 4000, 4)
        if want("scheduling"):
            bench_scheduling(pg or sqlite_url(tmp, "sched.sqlite3"), 1000, 1000 if quick else 5000)
        if want("footprint"):
            bench_footprint(sqlite_url(tmp, "footprint.sqlite3"), 2000 if quick else 10000)
        if pg:
            drop_postgres_database()
    print_table()


if __name__ == "__main__":
    main()

"""Dashboard speed at scale: creates N messages over W workspaces (default 1,000,000 over 200, 7 days)
and prints the server time of the overview, failures, messages and other pages.

    python bench/dashboard.py                                  # SQLite file bench/bench.sqlite3
    python bench/dashboard.py --database-url postgres://postgres@127.0.0.1:5432/qs_bench
    python bench/dashboard.py --messages 100000 --fresh       # smaller, rebuilt from scratch

The data is kept between runs (generation takes minutes); --fresh starts over. Server time is measured
in-process around Django's test client (URL routing, middleware, view, queries, template), so it
excludes only the network. Each page is requested once to warm caches, then --repeat times; the median
and the slowest are printed. Target: overview, failures and messages under 300 ms.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TARGET_MS = 300


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--workspaces", type=int, default=200)
    parser.add_argument("--days", type=float, default=7)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", f"sqlite:///{ROOT / 'bench' / 'bench.sqlite3'}"),
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--fresh", action="store_true", help="Delete the bench data and generate it again.")
    args = parser.parse_args()

    os.environ.update(
        DJANGO_ENV="development",
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=args.database_url,
        SECRET_KEY=secrets.token_urlsafe(50),
        LOG_LEVEL="WARNING",
        DEBUG="false",
    )
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    import django

    django.setup()
    from django.conf import settings

    settings.ALLOWED_HOSTS = ["testserver"]
    # No collectstatic here: plain static storage (the manifest lookup it replaces is a dict read).
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from messaging.devtools import demo
    from messaging.models import DeliveryAttempt, Message, MessageStat, MessageStatHour, Status, Workspace
    from messaging.reporting import rollup

    call_command("migrate", verbosity=0)
    if args.fresh:
        for model in (DeliveryAttempt, MessageStat, MessageStatHour, Message, Workspace):
            model.objects.all().delete()
    existing = Message.objects.count()
    print(
        f"database: {connection.vendor} ({args.database_url.split('@')[-1]}), {existing:,} messages present"
    )
    if existing < args.messages:
        import random

        rng = random.Random(42)
        workspaces = demo.ensure_workspaces(args.workspaces, rng, unnamed=max(1, args.workspaces // 20))
        started = time.perf_counter()

        def progress(done: int) -> None:
            if done % 100_000 == 0 or done == args.messages - existing:
                rate = done / (time.perf_counter() - started)
                print(f"  generated {done:,} messages ({rate:,.0f}/s)", flush=True)

        # Bulk load without the secondary indexes, then build them once: much faster than updating a
        # dozen B-trees per row. (The page timings below use every index.)
        from django.db import connection as conn

        indexed = [*Message._meta.indexes, *DeliveryAttempt._meta.indexes]
        with conn.schema_editor() as editor:
            for model in (Message, DeliveryAttempt):
                for index in model._meta.indexes:
                    editor.execute(f'DROP INDEX IF EXISTS "{index.name}"')
        demo.generate(
            workspaces=workspaces,
            messages=args.messages - existing,
            days=args.days,
            scheduled=2000,
            seed=existing + 1,
            batch_size=10_000,
            progress=progress,
            refresh_rollup=False,
        )
        with conn.schema_editor() as editor:
            for model in (Message, DeliveryAttempt):
                for index in model._meta.indexes:
                    editor.add_index(model, index)
        print(f"generation (with building the indexes): {time.perf_counter() - started:.0f} s")
        assert indexed
        # Planner statistics (and, on PostgreSQL, the visibility map for index-only scans), as
        # autovacuum would have them on a live database.
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")
    total = Message.objects.count()
    attempts = DeliveryAttempt.objects.count()
    print(f"{total:,} messages, {attempts:,} delivery attempts, {Workspace.objects.count()} workspaces")
    started = time.perf_counter()
    recomputed = rollup.stats_refresh(rebuild=True)
    print(
        f"full rollup rebuild: {recomputed} hours in {time.perf_counter() - started:.1f} s (a one-off; pages recompute only missing or dirty hours)"
    )

    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username="bench", defaults={"is_staff": True})
    client = Client()
    client.force_login(user)
    biggest = Message.objects.values_list("workspace__external_id", flat=True).first()
    workspace = Workspace.objects.filter(name="").first() or Workspace.objects.first()
    failed = Message.objects.filter(status=Status.FAILED).order_by("-failed_at").first()
    page_two = client.get("/messages/").content.decode()
    import re

    cursor_query = (
        re.search(r'href="\?([^"]*cursor=[^"]*)" rel="next"', page_two).group(1).replace("&amp;", "&")
    )
    pages = [
        ("overview (24 h)", "/", True),
        ("overview (1 h)", "/?window=1h", True),
        ("overview (7 days)", "/?window=7d", True),
        ("overview (all)", "/?window=all", True),
        ("overview live fragment", "/overview/live?window=24h", True),
        ("failures", "/failures/", True),
        ("messages", "/messages/", True),
        ("messages, page 2", "/messages/?" + cursor_query, True),
        ("messages, status=failed", "/messages/?status=failed", True),
        ("messages, channel=email", "/messages/?channel=email", True),
        ("messages, one workspace", f"/messages/?workspace={biggest}", True),
        ("messages, date range", "/messages/?date_from=2000-01-01&date_to=2100-01-01", True),
        ("messages, recipient contains", "/messages/?recipient=555123", False),
        ("messages, error contains", "/messages/?error=timeout", False),
        ("workspace page (7 days)", f"/workspaces/{workspace.external_id}/?window=7d", False),
        ("scheduled", "/scheduled/", False),
        (
            "failures, retry confirmation",
            f"/failures/retry?channel={failed.channel}&error_kind={failed.error_kind}",
            False,
        ),
        ("message detail", f"/messages/{failed.pk}/", False),
    ]
    print(f"\n{'page':34} {'median ms':>10} {'max ms':>8} {'queries':>8}  target")
    failures = 0
    for label, url, required in pages:
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        times = []
        for _ in range(args.repeat):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                response = client.get(url)
                times.append((time.perf_counter() - started) * 1000)
        median = statistics.median(times)
        verdict = ("ok" if median < TARGET_MS else "SLOW") if required else "-"
        failures += verdict == "SLOW"
        print(f"{label:34} {median:10.1f} {max(times):8.1f} {len(queries):8}  {verdict}")
    print(
        f"\n{'all required pages under' if not failures else 'pages over'} {TARGET_MS} ms"
        + (f": {failures}" if failures else "")
    )


if __name__ == "__main__":
    main()

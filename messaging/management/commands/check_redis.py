from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from messaging.lib.redis_check import diagnose


class Command(BaseCommand):
    help = (
        "Check that Redis is reachable and fit for queues: tries REDIS_URL and any URLs given, each with a "
        "short timeout. Names the failure (host not found, connection refused, timeout, authentication "
        "failed, TLS error) and exits 1; on success shows version, latency, maxmemory-policy and "
        "persistence, with warnings."
    )

    def add_arguments(self, parser):
        parser.add_argument("urls", nargs="*", help="Redis URLs to check (default: REDIS_URL).")
        parser.add_argument(
            "--timeout", type=float, default=3.0, help="Seconds for connecting and each call."
        )

    def handle(self, *args, **options):
        urls = options["urls"] or [settings.REDIS_URL]
        failed = 0
        for url in urls:
            diagnosis = diagnose(url, timeout=options["timeout"])
            self.stdout.write(diagnosis.url)
            if diagnosis.ok:
                self.stdout.write("  " + self.style.SUCCESS(diagnosis.verdict))
            else:
                failed += 1
                self.stdout.write("  " + self.style.ERROR("FAILED: " + diagnosis.verdict))
            for line in diagnosis.details:
                self.stdout.write(f"  {line}")
            for line in diagnosis.warnings:
                self.stdout.write("  " + self.style.WARNING("WARNING: " + line))
        if failed:
            raise SystemExit(1)

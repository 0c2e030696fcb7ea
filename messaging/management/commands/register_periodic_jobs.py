from __future__ import annotations

from django.core.management.base import BaseCommand

from messaging.delivery.periodic import periodic_jobs_register


class Command(BaseCommand):
    help = (
        "Register the periodic jobs (outbox sweep, retention) with rq-scheduler under fixed ids. "
        "Idempotent: run it on every scheduler start (the Procfile does)."
    )

    def handle(self, *args, **options):
        for job_id, action in periodic_jobs_register().items():
            self.stdout.write(f"{job_id}: {action}")

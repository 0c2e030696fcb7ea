from __future__ import annotations

import json

import redis
from django.core.management.base import BaseCommand, CommandError

from messaging import queues
from messaging.delivery.sweep import messages_sweep


class Command(BaseCommand):
    help = (
        "Run the outbox sweep once: enqueue messages left `accepted`, re-enqueue waiting messages whose "
        "job is missing or overdue, and retry or fail messages stuck in `sending`. The scheduler also runs "
        "it every SWEEP_INTERVAL_SECONDS. Exits 1 when Redis could not be reached."
    )

    def handle(self, *args, **options):
        try:
            queues.get_connection().ping()
        except redis.exceptions.RedisError as exc:
            raise CommandError(f"Redis is unavailable ({exc}); nothing was swept.") from exc
        counts = messages_sweep()
        self.stdout.write(json.dumps(counts or {"nothing_to_do": 1}, sort_keys=True))
        if counts.get("redis_unavailable"):
            raise CommandError("Redis is unavailable; messages stay `accepted` until a sweep can reach it.")

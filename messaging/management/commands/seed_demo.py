from __future__ import annotations

import random

import redis
from django.core.management.base import BaseCommand, CommandError

from messaging import queues
from messaging.delivery.channels import CHANNELS
from messaging.devtools import demo
from messaging.models import Workspace


class Command(BaseCommand):
    help = (
        "Add demo data for the dashboard: named workspaces with numeric IDs, thousands of SMS, email and AI "
        "messages over the last days (sent, failed with several kinds of error, cancelled) and upcoming "
        "scheduled messages. Uses bulk inserts; safe to run again (adds more)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--workspaces", type=int, default=8, help="Number of workspaces (default 8).")
        parser.add_argument(
            "--messages", type=int, default=5000, help="Past messages to create (default 5000)."
        )
        parser.add_argument(
            "--days", type=float, default=7, help="Spread them over this many days (default 7)."
        )
        parser.add_argument(
            "--scheduled", type=int, default=40, help="Upcoming scheduled messages (default 40)."
        )
        parser.add_argument("--seed", type=int, default=None, help="Random seed for repeatable data.")
        parser.add_argument(
            "--no-enqueue", action="store_true", help="Do not hand the scheduled messages to rq-scheduler."
        )

    def handle(self, *args, **options):
        if options["workspaces"] < 1 or options["messages"] < 0 or options["days"] <= 0:
            raise CommandError("--workspaces must be at least 1, --messages at least 0 and --days above 0.")
        seed = options["seed"] if options["seed"] is not None else random.randrange(1_000_000)
        rng = random.Random(seed)
        workspaces = demo.ensure_workspaces(options["workspaces"], rng)
        self.stdout.write(f"{len(workspaces)} workspaces ({Workspace.objects.count()} in the database).")
        step = max(options["messages"] // 5, 1)

        def progress(done: int) -> None:
            if done % step < 5000 or done == options["messages"]:
                self.stdout.write(f"  {done} messages…")

        result = demo.generate(
            workspaces=workspaces,
            messages=options["messages"],
            days=options["days"],
            scheduled=options["scheduled"],
            seed=seed,
            progress=progress,
        )
        enqueued = 0
        if not options["no_enqueue"]:
            try:
                for message in result.scheduled:
                    if message.channel in CHANNELS:
                        queues.enqueue_delivery(
                            str(message.pk),
                            message.channel,
                            job_id=message.rq_job_id,
                            at=message.scheduled_for,
                        )
                        enqueued += 1
            except redis.exceptions.RedisError as exc:
                self.stderr.write(f"Redis unavailable ({exc}); scheduled messages stay for the sweep.")
        self.stdout.write(
            self.style.SUCCESS(
                f"Created {result.messages} messages and {result.attempts} delivery attempts (seed {seed}); "
                f"{enqueued} of {len(result.scheduled)} scheduled messages handed to the scheduler."
            )
        )

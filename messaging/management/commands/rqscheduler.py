"""`manage.py rqscheduler`: django-rq's command, on the periodic jobs' queue unless `--queue` says otherwise.

django-rq's command defaults to a queue named `default`, which this service does not have (every job
names its own queue: sms, email or ai). The scheduler's own queue only names its Redis connection and
the queue of jobs scheduled without one.
"""

from __future__ import annotations

from django_rq.management.commands import rqscheduler

from messaging.delivery.periodic import PERIODIC_QUEUE


class Command(rqscheduler.Command):
    help = f"Run the scheduler that moves due jobs onto their queues (connection of the {PERIODIC_QUEUE!r} queue)."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.set_defaults(queue=PERIODIC_QUEUE)

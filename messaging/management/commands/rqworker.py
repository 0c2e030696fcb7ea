"""`manage.py rqworker`: django-rq's command, plus `--concurrency N` for the service's worker."""

from __future__ import annotations

from django.conf import settings
from django_rq.management.commands import rqworker
from django_rq.workers import get_worker_class

from messaging.delivery.worker import Worker


class Command(rqworker.Command):
    help = (
        "Run a worker on the given queues (e.g. `rqworker sms email ai`). The service's worker keeps up to "
        "--concurrency deliveries in flight (default WORKER_CONCURRENCY)."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--concurrency",
            type=int,
            default=None,
            help=f"Deliveries in flight at most in this process (default WORKER_CONCURRENCY, {settings.WORKER_CONCURRENCY}).",
        )

    def handle(self, *args, **options):
        concurrency = options.pop("concurrency", None)
        if concurrency is not None and concurrency < 1:
            self.stderr.write("--concurrency must be at least 1")
            raise SystemExit(2)
        worker_class = get_worker_class(options.get("worker_class"))
        if concurrency is not None and not issubclass(worker_class, Worker):
            # Only the concurrent worker takes it; others run one job at a time.
            self.stderr.write(f"{worker_class.__name__} runs one job at a time; --concurrency is ignored")
        elif concurrency is not None:
            settings.WORKER_CONCURRENCY = concurrency
        return super().handle(*args, **options)

"""Worker classes under the paths earlier versions named in settings and on command lines
(`messaging.worker.Worker`, `--worker-class messaging.worker.ForkWorker`)."""

from messaging.delivery.forkworker import ForkWorker
from messaging.delivery.worker import Worker

__all__ = ["ForkWorker", "Worker"]

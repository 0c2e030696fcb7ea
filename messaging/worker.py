"""Worker classes under the paths earlier versions named in settings and on command lines
(`messaging.worker.Worker`, `--worker-class messaging.worker.ForkWorker`)."""

from messaging.delivery.worker import ForkWorker, Worker

__all__ = ["ForkWorker", "Worker"]

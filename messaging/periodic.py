"""The scheduler class under the path earlier versions named in settings
(`messaging.periodic.MaintainingScheduler`)."""

from messaging.delivery.periodic import MaintainingScheduler, periodic_jobs_register

__all__ = ["MaintainingScheduler", "periodic_jobs_register"]

"""Job functions under the paths earlier versions stored in Redis (`messaging.jobs.deliver`, ...).

Jobs queued before the delivery package existed still name these; they run the same functions.
"""

from messaging.delivery.jobs import deliver, deliver_batch, retention, sweep

__all__ = ["deliver", "deliver_batch", "retention", "sweep"]

"""One delivery in the engine (a message for a job) and a helper for grouping deliveries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from messaging.models import Message

from .channels import Attempt


@dataclass(eq=False)
class Delivery:
    """One message to deliver for one job.

    `job_id`: the RQ job asking (the message must still point at it; None accepts any). `batch`: part
    of a batch job (a deferral moves it to a new batch job, and it may wait longer for rate slots).
    `on_done(delivery, result, error)` is called once, from the engine's thread, with a short result
    ("sent", "retry in 2.0s: ...", "skipped: ...", "deferred ...") or the exception that stopped it.
    """

    message_id: str
    job_id: str | None
    on_done: Callable[[Delivery, str, BaseException | None], None]
    batch: bool = False
    message: Message | None = None
    send_at: float = 0.0  # time.monotonic() at which its call may start (its delivery-rate slot)
    deadline: float = 0.0  # and by which it must have started, when it holds a slot
    limited: bool = False  # holds a delivery-rate slot
    # time.monotonic() at which its claim was written (its call is then made or about to be); 0 while
    # it is not claimed or once it is done. The worker's watchdog times a delivery job by this.
    call_started: float = 0.0
    attempt: Attempt | None = None
    extra: dict = field(default_factory=dict)


def first_per_message(
    items: list, limit: int, key: Callable = lambda d: d, allow: Callable | None = None
) -> tuple[list, list]:
    """Split off up to `limit` items of `items`, at most one per message, in order; return (taken,
    passed over): the passed-over items are the later deliveries of a message already taken, and
    those `allow(delivery)` refused, up to the last item looked at."""
    taken, passed, seen = [], [], set()
    for item in items:
        if len(taken) >= limit:
            break
        delivery = key(item)
        pk = str(delivery.message.pk)
        if pk in seen or (allow is not None and not allow(delivery)):
            passed.append(item)
        else:
            seen.add(pk)
            taken.append(item)
    return taken, passed

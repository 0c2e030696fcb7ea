"""The delivery threads: where provider calls are made.

A process keeps one pool of WORKER_CONCURRENCY threads (made on first use, reused by every job, so
HTTP keep-alive connections to providers are reused too). A thread only makes the call(s) of a
delivery the engine already claimed, at the time of its rate slot, with database access blocked:
everything a sender needs was read beforehand, and the engine records what it did.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import connection
from django.utils import timezone

from messaging.models import Message
from messaging.providers.base import CallResult

from .channels import Attempt
from .channels import get as get_channel

logger = logging.getLogger(__name__)


class LateForSlot(Exception):
    """A rate-limited call would start more than half of DELIVERY_RATE_GUARD_MS after its slot."""


def _no_database(execute, sql, params, many, context):  # noqa: ANN001 - Django's execute_wrapper signature
    raise RuntimeError("delivery threads do not use the database; load what a sender needs beforehand")


def send(message: Message, send_at: float, deadline: float | None) -> Attempt:
    """Make the call(s) of one claimed delivery of `message` at `send_at` (time.monotonic()).

    Waits until `send_at`, then runs the channel's sender with database access blocked. A call that
    holds a delivery-rate slot must start by `deadline` (half of DELIVERY_RATE_GUARD_MS after its
    slot); past it (the thread woke late on a busy machine) LateForSlot is raised and nothing is sent.
    An unexpected exception becomes a transient error of kind `internal_error` (logged), so the
    message is retried or failed like any other.
    """
    wait = send_at - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    if deadline is not None and time.monotonic() > deadline:
        raise LateForSlot
    try:
        with connection.execute_wrapper(_no_database):
            return get_channel(message.channel).send(message)
    except Exception as exc:  # noqa: BLE001 - recorded as a failed attempt, never lost
        logger.exception("delivery of message %s raised", message.pk)
        error = f"Internal error while sending: {type(exc).__name__}: {exc}"
        call = CallResult(
            url="", started_at=timezone.now(), transient=True, error_kind="internal_error", error=error
        )
        return Attempt([call])


_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] | None = None  # (process id, size) the pool was made for


def pool() -> ThreadPoolExecutor:
    """Return this process's pool of WORKER_CONCURRENCY delivery threads, made on first use (a forked
    work horse makes its own)."""
    global _pool, _pool_key
    key = (os.getpid(), max(1, settings.WORKER_CONCURRENCY))
    if _pool is None or _pool_key != key:
        with _pool_lock:
            if _pool is None or _pool_key != key:
                _pool = ThreadPoolExecutor(max_workers=key[1], thread_name_prefix="deliver")
                _pool_key = key
    return _pool


def pool_shutdown() -> None:
    """Stop this process's delivery threads once their calls finish (tests call this)."""
    global _pool, _pool_key
    with _pool_lock:
        old, _pool, _pool_key = _pool, None, None
    if old is not None:
        old.shutdown(wait=True)

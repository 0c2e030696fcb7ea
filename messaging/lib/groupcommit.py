"""Group commit: many request threads' writes stored by one thread in one transaction per group.

A web process runs several request threads (gunicorn's gthread workers). Each one that stores rows
hands them to the process's `GroupCommitter` and waits; the committer's thread takes everything handed
in so far, writes it in one transaction, and wakes each waiting thread only after that commit (or
with the error that stopped it). While it commits one group, the next one gathers, so under load a
transaction holds many requests' rows and each request pays a share of one commit (one fsync on
PostgreSQL, one turn at the write lock on SQLite) instead of one of its own; an idle process commits a
lone request at once, with no added wait.

A group whose write fails is written again one item at a time, each in its own transaction, so one
bad item fails only its own request. Nothing is kept outside the database after the answer: a
process killed with a group in hand never answered those requests.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from django.db import connection, transaction

logger = logging.getLogger(__name__)

T = TypeVar("T")


class CommitTimeout(Exception):
    """The committer did not confirm a write in time; the items may or may not have been stored."""


_STOP = object()  # handed in by GroupCommitter.stop


class _Waiter:
    """One submission's answer: a lock held until the committer is done with it (the cheapest
    wake-up CPython has; concurrent.futures.Future cost several times more per request)."""

    __slots__ = ("_lock", "_error", "_answered")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._error: BaseException | None = None
        self._answered = False

    def done(self) -> None:
        """Wake the waiting thread: stored."""
        if not self._answered:
            self._answered = True
            self._lock.release()

    def fail(self, error: BaseException) -> None:
        """Wake the waiting thread with `error`: not stored."""
        if not self._answered:
            self._error, self._answered = error, True
            self._lock.release()

    def wait(self, timeout: float) -> None:
        """Return once done; raise the error it failed with, or CommitTimeout after `timeout` s."""
        if not self._lock.acquire(timeout=timeout):
            raise CommitTimeout(f"no commit within {timeout:g} s")
        if self._error is not None:
            raise self._error


class GroupCommitter(Generic[T]):
    """Writes items handed in by many threads, one transaction per group, on a thread of its own.

    `write(items)` stores a list of items; it runs inside `transaction.atomic()` on the committer's
    thread (with that thread's database connection) and may raise. `after_commit(items)`, when given,
    runs on the same thread after the transaction commits and before the waiting threads are woken
    (the outbox's enqueue, so an answer can tell `queued` from `accepted`); its exceptions are logged,
    not raised: the rows are stored. `max_items` bounds a group; `max_wait` (seconds) is how long the
    committer gathers after the first item of a group arrives (0: only what is waiting already).
    """

    def __init__(
        self,
        write: Callable[[list[T]], None],
        *,
        after_commit: Callable[[list[T]], None] | None = None,
        max_items: int = 500,
        max_wait: float = 0.0,
        name: str = "group-commit",
    ) -> None:
        self._write = write
        self._max_wait = max_wait
        self._after_commit = after_commit
        self._max_items = max_items
        self._name = name
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[list[T], _Waiter]] = queue.SimpleQueue()
        self._pid: int | None = None
        self._thread: threading.Thread | None = None

    def submit(self, items: list[T]) -> _Waiter:
        """Hand `items` (stored together, in one transaction) to the committer; return the _Waiter
        that is done after their commit, or holds the exception that kept them from being stored."""
        waiter = _Waiter()
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():  # first use in this process (or in a fork of it)
                    self._pid, self._queue = os.getpid(), queue.SimpleQueue()
                    self._thread = threading.Thread(
                        target=self._run, args=(self._queue,), name=self._name, daemon=True
                    )
                    self._thread.start()
        self._queue.put((items, waiter))
        return waiter

    def store(self, items: list[T], *, timeout: float) -> None:
        """Store `items` through the committer and return once they are committed.

        Raises the write's own exception (e.g. django.db.DatabaseError) when they were not stored, or
        CommitTimeout after `timeout` seconds without an answer.
        """
        self.submit(items).wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """End the committer's thread once what was handed in before is written, closing its database
        connection, and wait up to `timeout` seconds for it (tests; a web process's committer lives as
        long as the process). The next `submit` starts a new thread."""
        with self._lock:
            if self._pid != os.getpid() or self._thread is None:
                return
            self._queue.put(_STOP)
            thread, self._thread, self._pid = self._thread, None, None
        thread.join(timeout)

    def _run(self, requests: queue.SimpleQueue) -> None:
        while True:
            first = requests.get()
            if first is _STOP:
                try:
                    first = requests.get_nowait()  # handed in while stopping: still written
                except queue.Empty:
                    connection.close()
                    return
                requests.put(_STOP)
            group = [first]
            count = len(group[0][0])
            gather_until = time.monotonic() + self._max_wait
            while count < self._max_items:
                try:
                    wait = gather_until - time.monotonic()
                    entry = requests.get(timeout=wait) if wait > 0 else requests.get_nowait()
                except queue.Empty:
                    break
                if entry is _STOP:
                    requests.put(entry)  # after this group
                    break
                group.append(entry)
                count += len(entry[0])
            try:
                self._commit(group)
            except BaseException as exc:  # noqa: BLE001 - the thread must survive and answer everyone
                logger.exception("group commit failed")
                for _, waiter in group:
                    waiter.fail(exc)

    def _commit(self, group: list[tuple[list[T], _Waiter]]) -> None:
        # A connection the database closed (restart, idle timeout) is replaced before it is used.
        connection.close_if_unusable_or_obsolete()
        items = [item for entry_items, _ in group for item in entry_items]
        try:
            with transaction.atomic():
                self._write(items)
        except Exception as exc:  # noqa: BLE001 - retried one request at a time, below
            if len(group) == 1:
                self._fail(group[0][1], exc)
                return
            done = []
            for entry in group:
                try:
                    with transaction.atomic():
                        self._write(entry[0])
                except Exception as one_exc:  # noqa: BLE001 - that request's own answer
                    self._fail(entry[1], one_exc)
                else:
                    done.append(entry)
            self._finish(done)
            return
        self._finish(group)

    def _fail(self, waiter: _Waiter, exc: Exception) -> None:
        # A broken connection is dropped so that the next group opens a new one.
        if connection.connection is not None and not connection.is_usable():
            connection.close()
        waiter.fail(exc)

    def _finish(self, group: list[tuple[list[T], _Waiter]]) -> None:
        if self._after_commit is not None and group:
            try:
                self._after_commit([item for entry_items, _ in group for item in entry_items])
            except Exception:  # noqa: BLE001 - the rows are stored; the sweep enqueues them
                logger.exception("%s: after-commit step failed", self._name)
        for _, waiter in group:
            waiter.done()

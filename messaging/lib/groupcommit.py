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
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

from django.db import connection, transaction

logger = logging.getLogger(__name__)

T = TypeVar("T")


class CommitTimeout(Exception):
    """The committer did not confirm a write in time; the items may or may not have been stored."""


class GroupCommitter(Generic[T]):
    """Writes items handed in by many threads, one transaction per group, on a thread of its own.

    `write(items)` stores a list of items; it runs inside `transaction.atomic()` on the committer's
    thread (with that thread's database connection) and may raise. `after_commit(items)`, when given,
    runs on the same thread after the transaction commits and before the waiting threads are woken
    (the outbox's enqueue, so an answer can tell `queued` from `accepted`); its exceptions are logged,
    not raised: the rows are stored. `max_items` bounds a group.
    """

    def __init__(
        self,
        write: Callable[[list[T]], None],
        *,
        after_commit: Callable[[list[T]], None] | None = None,
        max_items: int = 500,
        name: str = "group-commit",
    ) -> None:
        self._write = write
        self._after_commit = after_commit
        self._max_items = max_items
        self._name = name
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[list[T], Future]] = queue.SimpleQueue()
        self._pid: int | None = None

    def submit(self, items: list[T]) -> Future:
        """Hand `items` (stored together, in one transaction) to the committer; return a Future that
        resolves to None after their commit, or to the exception that kept them from being stored."""
        future: Future = Future()
        with self._lock:
            if self._pid != os.getpid():  # first use in this process (or in a fork of it)
                self._pid, self._queue = os.getpid(), queue.SimpleQueue()
                threading.Thread(target=self._run, name=self._name, daemon=True).start()
        self._queue.put((items, future))
        return future

    def store(self, items: list[T], *, timeout: float) -> None:
        """Store `items` through the committer and return once they are committed.

        Raises the write's own exception (e.g. django.db.DatabaseError) when they were not stored, or
        CommitTimeout after `timeout` seconds without an answer.
        """
        try:
            self.submit(items).result(timeout=timeout)
        except TimeoutError as exc:
            raise CommitTimeout(f"no commit within {timeout:g} s") from exc

    def _run(self) -> None:
        while True:
            group = [self._queue.get()]
            count = len(group[0][0])
            while count < self._max_items:
                try:
                    entry = self._queue.get_nowait()
                except queue.Empty:
                    break
                group.append(entry)
                count += len(entry[0])
            try:
                self._commit(group)
            except BaseException as exc:  # noqa: BLE001 - the thread must survive and answer everyone
                logger.exception("group commit failed")
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)

    def _commit(self, group: list[tuple[list[T], Future]]) -> None:
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

    def _fail(self, future: Future, exc: Exception) -> None:
        # A broken connection is dropped so that the next group opens a new one.
        if connection.connection is not None and not connection.is_usable():
            connection.close()
        future.set_exception(exc)

    def _finish(self, group: list[tuple[list[T], Future]]) -> None:
        if self._after_commit is not None and group:
            try:
                self._after_commit([item for entry_items, _ in group for item in entry_items])
            except Exception:  # noqa: BLE001 - the rows are stored; the sweep enqueues them
                logger.exception("%s: after-commit step failed", self._name)
        for _, future in group:
            future.set_result(None)

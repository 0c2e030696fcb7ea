"""The delivery engine: one pipeline for every delivery, one message or a thousand.

    load -> gate -> (wait | defer | skip) -> delivery-rate slot -> claim -> send -> record

Database work is grouped and stays on the thread that runs the engine (`step`): one query loads the
messages submitted since the last step, one transaction records what finished, moves deferred
messages to new jobs and claims what goes out next. Provider calls run in a pool of delivery threads
that never touch the database, so a worker process holds one database connection for its deliveries
however many calls are in flight (and on SQLite, one writer instead of dozens fighting for the lock).

Each delivery is still its own: claimed with a conditional update (queued/scheduled -> sending,
attempts + 1) that only succeeds if the message still points at the asking job with the attempt
count that was read, attempted once, and recorded on its own (messaging.delivery.outcomes).

Used three ways: the concurrent worker runs one engine on a thread of its own and submits every
delivery job's messages to it; a `deliver` job run by another worker class (SimpleWorker,
ForkWorker, tests) runs its message through a private engine with the call made inline; a batch job
there uses the process's delivery threads.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta

import redis
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from messaging import queues
from messaging.models import Message
from messaging.workspaces import workspace_get

from . import gate, outbox, outcomes, rows, senders
from .deliveries import Delivery, first_per_message

logger = logging.getLogger(__name__)

# A delivery whose rate slot is this close is claimed and handed to a delivery thread, which waits
# out the rest; the call then starts within a few milliseconds of its slot.
CLAIM_AHEAD_SECONDS = 0.02
# The share of a process's delivery threads one workspace's calls may never take (see _within_share).
WORKSPACE_RESERVE_FRACTION = 0.125
# After a database error the engine retries its writes after this many seconds.
DATABASE_RETRY_SECONDS = 1.0


class Engine:
    """Runs deliveries through the pipeline (see the module docstring).

    `pool`: delivery threads for the calls (None: calls are made inline by `step`, one after the
    other). `capacity`: calls in flight at most. Thread-safe `submit`; `step` must always be called
    from the same thread (it owns the database connection).
    """

    def __init__(self, *, pool: ThreadPoolExecutor | None = None, capacity: int = 1):
        self.pool = pool
        self.capacity = max(1, capacity)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._incoming: list[Delivery] = []
        self._open = 0
        self._seq = itertools.count()
        self._timers: list[tuple[float, int, Delivery, str]] = []  # (monotonic, seq, delivery, phase)
        self._unslotted: list[Delivery] = []
        self._ready: list[Delivery] = []
        self._deferred: list[tuple[Delivery, datetime, str]] = []
        self._sending: dict[Future, Delivery] = {}
        self._finished: list[Delivery] = []
        self._unclaim: list[Delivery] = []
        self._retry_writes_at = 0.0
        self._draining = False
        self._over_share = False  # the last write passed over ready deliveries of a workspace at its share
        self._unslotted_later: list[Delivery] = []

    # --- submitting -------------------------------------------------------------------------------

    def submit(self, deliveries: list[Delivery]) -> None:
        """Add deliveries; the next `step` loads and gates them. Thread-safe."""
        with self._lock:
            self._incoming.extend(deliveries)
            self._open += len(deliveries)
        self._wake.set()

    @property
    def open(self) -> int:
        """Deliveries submitted and not yet done."""
        return self._open

    @property
    def waiting(self) -> int:
        """Deliveries waiting only for their due time or delivery-rate slot (read from any thread)."""
        return len(self._timers)

    def release_waiting(self) -> None:
        """From now on, hand deliveries that wait for their time or rate slot back to the scheduler
        (due at that time) instead of waiting; calls in flight still finish. Thread-safe (a worker's
        warm shutdown calls it)."""
        self._draining = True
        self._wake.set()

    def run(self, deliveries: list[Delivery]) -> None:
        """Submit `deliveries` and step until every one of them is done (the synchronous use)."""
        self.submit(deliveries)
        while True:
            self.step()
            if not self._open:
                return
            self.wait(1.0)

    def _done(self, delivery: Delivery, result: str, error: BaseException | None = None) -> None:
        delivery.call_started = 0.0
        with self._lock:
            self._open -= 1
        try:
            delivery.on_done(delivery, result, error)
        except Exception:  # noqa: BLE001 - one job's bookkeeping must not stop the others
            logger.exception("completion of a delivery for job %s raised", delivery.job_id)

    # --- one step ---------------------------------------------------------------------------------

    def step(self) -> None:
        """Move every delivery as far as it can go now (without waiting)."""
        self._load()
        self._collect_finished()
        self._unslotted.extend(self._unslotted_later)
        self._unslotted_later = []
        if self._draining:
            self._hand_back()
        else:
            self._release_timers()
            self._reserve_slots()
        if time.monotonic() >= self._retry_writes_at:
            try:
                self._write()
            except DatabaseError:
                logger.exception("delivery engine: database error; retrying in %.0fs", DATABASE_RETRY_SECONDS)
                self._retry_writes_at = time.monotonic() + DATABASE_RETRY_SECONDS
                connection.close()
            except Exception:  # noqa: BLE001 - one bad record must not stall every delivery behind it
                logger.exception("delivery engine: a grouped write raised; writing one delivery at a time")
                self._write_one_by_one()

    def _write_one_by_one(self) -> None:
        """Record finished deliveries and move deferred ones each in a transaction of its own, after a
        grouped write raised something other than a database error. A delivery whose own write raises
        is done with that error (its job fails; a message left `sending` is settled by the sweep as
        interrupted). Claims wait for the next grouped write."""
        finished, self._finished = self._finished, []
        deferred, self._deferred = self._deferred, []
        for delivery in finished:
            try:
                with transaction.atomic():
                    [result] = outcomes.record([(delivery.message, delivery.attempt)])
            except Exception as exc:  # noqa: BLE001 - reported as the job's failure
                logger.exception("delivery engine: recording message %s raised", delivery.message_id)
                self._done(delivery, "error", exc)
            else:
                self._done(delivery, result or "skipped: settled elsewhere meanwhile")
        for item in deferred:
            try:
                with transaction.atomic():
                    self._defer([item])
            except Exception as exc:  # noqa: BLE001 - reported as the job's failure
                logger.exception("delivery engine: deferring message %s raised", item[0].message_id)
                self._done(item[0], "error", exc)
            else:
                self._done(item[0], item[2])

    def _load(self) -> None:
        with self._lock:
            incoming, self._incoming = self._incoming, []
        if not incoming:
            return
        try:
            loaded = rows.load(sorted({d.message_id for d in incoming}))
            for message in loaded.values():
                message.workspace = workspace_get(message.workspace_id)
        except Exception as exc:  # noqa: BLE001 - the jobs fail; the sweep settles their messages
            logger.exception("delivery engine: could not load %d messages", len(incoming))
            connection.close()
            for delivery in incoming:
                self._done(delivery, "error", exc)
            return
        now = timezone.now()
        for delivery in incoming:
            message = loaded.get(delivery.message_id)
            if message is None:
                self._done(delivery, "missing")
                continue
            delivery.message = message
            self._gate(delivery, now)

    def _gate(self, delivery: Delivery, now: datetime) -> None:
        verdict = gate.check(delivery.message, delivery.job_id, now)
        if verdict.action == gate.SKIP:
            self._done(delivery, verdict.reason)
        elif verdict.action == gate.DEFER:
            self._deferred.append((delivery, verdict.at, verdict.reason))
        elif verdict.action == gate.WAIT:
            # One millisecond late rather than early: the claim requires next_attempt_at <= now.
            self._timer(delivery, time.monotonic() + (verdict.at - now).total_seconds() + 0.001, "due")
        else:
            self._unslotted.append(delivery)

    def _timer(self, delivery: Delivery, when: float, phase: str) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), delivery, phase))

    def _release_timers(self) -> None:
        # A rate slot is claimed CLAIM_AHEAD_SECONDS early (the delivery thread waits out the rest);
        # a due time is not: nothing is claimed before it is due.
        now = time.monotonic()
        kept = []
        while self._timers and self._timers[0][0] <= now + CLAIM_AHEAD_SECONDS:
            entry = heapq.heappop(self._timers)
            when, _, delivery, phase = entry
            if phase == "slot":
                self._ready.append(delivery)
            elif when <= now:
                self._unslotted.append(delivery)
            else:
                kept.append(entry)
        for entry in kept:
            heapq.heappush(self._timers, entry)

    def _reserve_slots(self) -> None:
        if not self._unslotted:
            return
        waiting, self._unslotted = self._unslotted, []
        for batch in (False, True):
            deliveries = [d for d in waiting if d.batch is batch]
            if deliveries:
                self._reserve_for(deliveries, batch)
        self._release_timers()

    def _reserve_for(self, deliveries: list[Delivery], batch: bool) -> None:
        # Batch members wait in the worker for slots up to BATCH_WAIT_MAX_SECONDS (the rest moves to
        # one later batch job); a single message's slot may be reserved further ahead and its job is
        # deferred to it when it is more than EARLY_WAIT_MAX_SECONDS away.
        horizon = gate.BATCH_WAIT_MAX_SECONDS if batch else gate.RESERVE_HORIZON_SECONDS
        wait_max = gate.BATCH_WAIT_MAX_SECONDS if batch else gate.EARLY_WAIT_MAX_SECONDS
        asked = time.monotonic()
        try:
            slots = gate.reserve([d.message for d in deliveries], horizon=horizon)
        except redis.exceptions.RedisError as exc:
            logger.warning("delivery rate not reserved, Redis unavailable (%s); retrying in 1s", exc)
            for delivery in deliveries:
                self._timer(delivery, time.monotonic() + 1.0, "due")
            return
        now, clock = timezone.now(), time.monotonic()
        half_guard = settings.DELIVERY_RATE_GUARD_MS / 2000
        for delivery, slot in zip(deliveries, slots, strict=True):
            delivery.limited = slot is not None
            if slot is None:
                delivery.send_at = delivery.deadline = clock
                self._ready.append(delivery)
            elif slot.reserved and slot.delay <= wait_max:
                # Redis read its clock somewhere between asking and answering: the call goes no
                # earlier than the latest the slot can be, and must start before half the guard has
                # passed after the earliest (else its slot is reserved again).
                delivery.send_at = clock + slot.delay
                delivery.deadline = asked + slot.delay + half_guard
                if delivery.deadline <= delivery.send_at:
                    self._unslotted_later.append(delivery)  # Redis answered too slowly to tell
                else:
                    self._timer(delivery, delivery.send_at, "slot")
            else:
                # A reserved slot is kept for the message: its job comes back a little before the
                # slot (rq-scheduler works in whole seconds) and waits out the rest here.
                back = slot.delay - gate.SLOT_LEAD_SECONDS if slot.reserved else slot.delay
                reason = f"deferred {slot.delay:.2f}s: over the {delivery.message.channel} delivery rate"
                self._deferred.append((delivery, now + timedelta(seconds=back), reason))

    def _hand_back(self) -> None:
        now, clock = timezone.now(), time.monotonic()
        for when, _, delivery, _phase in self._timers:
            self._deferred.append(
                (delivery, now + timedelta(seconds=max(0.0, when - clock)), "deferred: worker stopping")
            )
        self._deferred.extend((d, now, "deferred: worker stopping") for d in self._ready + self._unslotted)
        self._timers, self._ready, self._unslotted = [], [], []

    def _collect_finished(self) -> None:
        for future in [f for f in self._sending if f.done()]:
            delivery = self._sending.pop(future)
            try:
                delivery.attempt = future.result()
            except senders.LateForSlot:
                self._unclaim.append(delivery)
                continue
            self._finished.append(delivery)

    # --- the grouped write ------------------------------------------------------------------------

    def _write(self) -> None:
        # A slot missed by more than half the guard (no delivery thread was free) is reserved again.
        clock = time.monotonic()
        self._unslotted.extend(d for d in self._ready if d.limited and d.deadline <= clock)
        self._ready = [d for d in self._ready if not (d.limited and d.deadline <= clock)]
        free = self.capacity - len(self._sending)
        # One claim and one move per message in a write: two deliveries of one message (a job and
        # the job a sweep gave it meanwhile) are told apart by the next write, where the stale one
        # fails its conditions.
        to_claim, later = first_per_message(self._ready, free, allow=self._within_share())
        self._ready = later + self._ready[len(to_claim) + len(later) :]
        self._over_share = len(later) > 0
        deferred, self._deferred = first_per_message(self._deferred, len(self._deferred), key=lambda d: d[0])
        finished, unclaim = self._finished, self._unclaim
        if not (to_claim or finished or deferred or unclaim):
            return
        # Marked before the claim is written, so the watchdog never sees a claimed message's job
        # as not yet calling.
        for delivery in to_claim:
            delivery.call_started = clock
        try:
            with transaction.atomic():
                results = outcomes.record([(d.message, d.attempt) for d in finished])
                self._defer(deferred)
                rows.release([d.message for d in unclaim])
                claimed_ids = rows.claim([d.message for d in to_claim], timezone.now())
        except BaseException:
            # Nothing was written: the same work is tried again at the next write.
            for delivery in to_claim:
                delivery.call_started = 0.0
            self._ready = to_claim + self._ready
            self._deferred = deferred + self._deferred
            raise
        claimed = {d for d in to_claim if str(d.message.pk) in claimed_ids}
        self._finished, self._unclaim = [], []
        for delivery in unclaim:
            delivery.call_started = 0.0
        self._unslotted.extend(unclaim)
        for delivery, result in zip(finished, results, strict=True):
            self._done(delivery, result or "skipped: settled elsewhere meanwhile")
        for delivery, _at, reason in deferred:
            self._done(delivery, reason)
        for delivery in to_claim:
            if delivery not in claimed:
                self._done(delivery, "skipped: claimed elsewhere or not due")
        for delivery in to_claim:
            if delivery in claimed:
                self._start(delivery)

    def _within_share(self) -> Callable[[Delivery], bool]:
        """A check that keeps one workspace from taking the last delivery threads: a workspace holds at
        most `capacity` minus WORKSPACE_RESERVE_FRACTION of it (at least one thread) in calls, so slow
        calls of one workspace (a callback receiver answering at its deadline) leave threads for the
        others. A lone workspace loses only that reserve."""
        reserve = max(1, int(self.capacity * WORKSPACE_RESERVE_FRACTION)) if self.capacity > 1 else 0
        share = self.capacity - reserve
        held = Counter(d.message.workspace_id for d in self._sending.values())

        def allow(delivery: Delivery) -> bool:
            workspace = delivery.message.workspace_id
            if held[workspace] >= share:
                return False
            held[workspace] += 1
            return True

        return allow

    def _start(self, delivery: Delivery) -> None:
        if self.pool is None:
            try:
                delivery.attempt = senders.send(
                    delivery.message, delivery.send_at, delivery.deadline if delivery.limited else None
                )
            except senders.LateForSlot:
                self._unclaim.append(delivery)
                return
            self._finished.append(delivery)
            return
        future = self.pool.submit(
            senders.send, delivery.message, delivery.send_at, delivery.deadline if delivery.limited else None
        )
        self._sending[future] = delivery
        future.add_done_callback(lambda _f: self._wake.set())

    def _defer(self, deferred: list[tuple[Delivery, datetime, str]]) -> None:
        """Move deferred messages to new jobs due at their time (no attempt used): a job each, or one
        new batch job for the deferred members of a batch job; enqueued after commit."""
        if not deferred:
            return
        moves: list[tuple[Message, str, datetime]] = []
        batches: dict[str, list[tuple[Delivery, datetime]]] = {}
        for delivery, at, _reason in deferred:
            if delivery.batch:
                batches.setdefault(delivery.message.rq_job_id, []).append((delivery, at))
            else:
                moves.append((delivery.message, queues.new_job_id(), at))
        for members in batches.values():
            job_id, at = queues.new_batch_job_id(), min(at for _, at in members)
            moves.extend((delivery.message, job_id, at) for delivery, _ in members)
        moved = rows.move(moves)
        outbox.enqueue_after_commit([message for message, _, _ in moves if str(message.pk) in moved])

    # --- waiting ----------------------------------------------------------------------------------

    def wait(self, timeout: float) -> None:
        """Sleep until something may move again (a call finishes, a delivery is submitted, a timer is
        due) or `timeout` seconds pass; return at once when there is work for `step`."""
        self._wake.clear()
        now = time.monotonic()
        if now < self._retry_writes_at:
            self._wake.wait(min(timeout, self._retry_writes_at - now))
            return
        if self._incoming or self._unslotted or self._unclaim or self._finished or self._deferred:
            return
        if any(f.done() for f in self._sending):
            return
        if self._ready and len(self._sending) < self.capacity and not self._over_share:
            return
        wait = timeout
        if self._timers:
            when, _, _, phase = self._timers[0]
            wait = min(wait, when - (CLAIM_AHEAD_SECONDS if phase == "slot" else 0) - now)
        if wait > 0:
            self._wake.wait(wait)

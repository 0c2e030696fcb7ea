"""The RQ worker classes used by `manage.py rqworker` (settings.RQ["WORKER_CLASS"]).

`Worker` (the default) keeps many jobs in flight in one process, the way BullMQ's `concurrency` and
Sidekiq's threads do, built on RQ's own primitives (its registries, executions, results and
heartbeats), so RQ's dashboards, `rq info` and django-rq's pages see every job as usual:

- The main thread dequeues up to WORKER_CONCURRENCY jobs' worth of work in one Redis round trip (a
  batch job counts as many), marks them started in one pipeline, and marks them finished or failed in
  one pipeline as they complete. It also sends the heartbeats, runs RQ's maintenance, enforces job
  timeouts and watches for Redis going away and coming back (it registers itself again if a Redis
  restart forgot it).
- Delivery jobs (`deliver`, `deliver_batch`) go to the process's delivery engine
  (messaging.delivery.engine): one thread does the grouped database work, WORKER_CONCURRENCY delivery
  threads make the provider calls. Each job keeps its own RQ status and result.
- Any other job (the sweep, retention, anything else put on these queues) runs on one of
  WORKER_JOB_THREADS job threads, through RQ's own success/failure handling.

Database connections: the engine thread holds one, each job thread at most one (checked and closed
as Django does around a request), the delivery threads none: a process opens at most
1 + WORKER_JOB_THREADS connections, however many calls are in flight.

Job timeouts: signals cannot interrupt threads, so a job's timeout is enforced in two ways. Every
outbound call has a total deadline (messaging.lib.deadline), and one job's deadlines add up to less
than RQ_JOB_TIMEOUT, so a delivery ends on its own; and a watchdog in the main thread marks a job failed (JobTimeoutException, like RQ's) once it has
run longer than its timeout. A delivery job is timed from the claim of its message (the call), not
from when it was taken off the queue: waiting for a free delivery thread, the due time or a rate slot
is bounded on its own and must not end a job whose call is still running (the sweep would then
attempt the message again while the first call may still reach the provider). A job thread gets RQ's
TimerDeathPenalty (an exception raised in the thread when its time is up); one stuck in a call that
ignores it is marked failed by the watchdog and its thread left to finish. A delivery that outlives
its job is still recorded when its call returns, unless the sweep settled it first.

Stopping: SIGTERM (or SIGINT) is a warm shutdown: nothing more is dequeued, deliveries still waiting
for their time or rate slot go back on the scheduler at once, calls in flight finish (each bounded by
its timeouts) and are recorded, then the worker exits 0. A second signal, a second or more after the
first (RQ ignores one sooner), stops at once (cold); like
`kill -9`, that leaves claimed messages `sending` and started jobs behind, and the sweep settles them.

`ForkWorker` is rq's forking Worker (a work horse per job) for those who want each job isolated from
the next (`rqworker --worker-class messaging.delivery.forkworker.ForkWorker`).
"""

from __future__ import annotations

import contextlib
import queue as thread_queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
from django.conf import settings
from django.db import close_old_connections
from rq.exceptions import StopRequested
from rq.job import Job
from rq.queue import Queue
from rq.suspension import WORKERS_SUSPENDED
from rq.timeouts import JobTimeoutException, TimerDeathPenalty
from rq.utils import now as rq_now
from rq.worker import BaseWorker, WorkerStatus
from rq.worker_registration import register

from messaging import queues

from . import rqjobs, senders
from .engine import Delivery, Engine
from .periodic import QuietPeriodicJobsMixin
from .startup import startup_summary

# The worker holds up to this many times WORKER_CONCURRENCY deliveries: while calls are in flight the
# next ones are already loaded and gated, so a finished call's slot is refilled at once instead of
# after a round trip through RQ and the database.
PREFETCH = 2
# The interpreter's thread switch interval in a worker process (Python's default is 0.005).
SWITCH_INTERVAL_SECONDS = 0.001
# Seconds between heartbeats (worker, and every running job's execution).
HEARTBEAT_SECONDS = 5.0
# Seconds the main thread waits for a job to finish before looking at the queues again while it has
# room for more work (and none was found last time).
POLL_SECONDS = 0.05
# Seconds an idle worker blocks on the queues before its next round of upkeep.
IDLE_BLOCK_SECONDS = 5
# Seconds past its timeout before the watchdog fails a job whose thread has not stopped.
TIMEOUT_GRACE_SECONDS = 5.0


class _StartupLogMixin(QuietPeriodicJobsMixin):
    """Logs the configuration (startup_summary) once the worker has started; quiet about periodic
    jobs (QuietPeriodicJobsMixin)."""

    def bootstrap(self, *args, **kwargs) -> None:
        super().bootstrap(*args, **kwargs)
        for line in startup_summary(self.queue_names(), getattr(self, "concurrency", 1)):
            self.log.info("Worker %s: %s", self.name, line)


class Worker(_StartupLogMixin, BaseWorker):
    """The concurrent worker (see the module docstring). `concurrency`: deliveries in flight at most
    (default WORKER_CONCURRENCY; `rqworker --concurrency N`)."""

    def __init__(self, *args: Any, concurrency: int | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.concurrency = max(1, concurrency or settings.WORKER_CONCURRENCY)
        self._completions: thread_queue.SimpleQueue[rqjobs.Running] = thread_queue.SimpleQueue()
        self._running: dict[str, rqjobs.Running] = {}
        self._last_heartbeat = 0.0
        self._stop_engine = threading.Event()
        self._suspended = False
        self._unrecorded: list[rqjobs.Running] = []

    # --- RQ's entry point -------------------------------------------------------------------------

    def work(  # type: ignore[override]
        self,
        burst: bool = False,
        logging_level: str | None = None,
        date_format: str = "%H:%M:%S",
        log_format: str = "%(asctime)s %(message)s",
        max_jobs: int | None = None,
        max_idle_time: int | None = None,
        with_scheduler: bool = False,
        dequeue_strategy: str = "default",
    ) -> bool:
        """Run until stopped (or, with `burst`, until the queues are empty and every job is done).

        Returns whether any job was processed, like RQ's Worker.work.
        """
        self.bootstrap(logging_level, date_format, log_format)
        self._dequeue_strategy = dequeue_strategy
        self._install_signal_handlers()
        # Dozens of threads here mostly wait on sockets; with Python's default 5 ms switch interval a
        # thread whose call is due could wait several intervals for the interpreter, a delay a
        # delivery-rate slot has to absorb. 1 ms keeps that short (and measured no slower).
        sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
        self.engine = Engine(pool=senders.pool(), capacity=self.concurrency)
        self._job_pool = ThreadPoolExecutor(max_workers=settings.WORKER_JOB_THREADS, thread_name_prefix="job")
        engine_thread = threading.Thread(target=self._run_engine, name="delivery-engine", daemon=True)
        engine_thread.start()
        started = 0
        idle_since = time.monotonic()
        try:
            while True:
                try:
                    self._upkeep()
                    self._finish_completed()
                    self._enforce_timeouts()
                    if self._stop_requested:
                        if not self._running:
                            self.log.info("Worker %s: stopping on request", self.name)
                            break
                        self._wait(POLL_SECONDS)
                        continue
                    out_of_jobs = max_jobs is not None and started >= max_jobs
                    got = 0
                    free = self.concurrency * PREFETCH - self._held()
                    if free > 0 and not out_of_jobs and not self._suspended:
                        block = not self._running and not burst
                        got = self._dequeue(free, block=block)
                        started += got
                    if got or self._running:
                        idle_since = time.monotonic()
                    elif burst or out_of_jobs:
                        break
                    elif max_idle_time is not None and time.monotonic() - idle_since > max_idle_time:
                        self.log.info("Worker %s: idle for %d seconds, quitting", self.name, max_idle_time)
                        break
                    if self._running and (got == 0 or free - got <= 0):
                        self._wait(POLL_SECONDS)
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                    try:
                        if not self._stop_requested:
                            self._wait_for_redis(exc)
                        elif self._nothing_in_flight():
                            self._log_unrecorded_at_stop()
                            break
                        else:  # stopping: let the calls in flight end; their outcomes go to the database
                            self._wait(POLL_SECONDS)
                    except StopRequested:  # a SIGTERM while waiting for Redis
                        break
                except StopRequested:
                    break
        finally:
            # After a warm stop nothing is running any more; after a cold one (a second signal,
            # SystemExit) calls in flight are abandoned to the sweep.
            self._stop_engine.set()
            self._release_waiting()
            engine_thread.join(timeout=1.0)
            with contextlib.suppress(redis.exceptions.RedisError):
                self._finish_completed()
            self._job_pool.shutdown(wait=False)
            with contextlib.suppress(redis.exceptions.RedisError):
                self.teardown()
        return bool(started)

    def request_stop(self, signum: int, frame: Any) -> None:
        """Warm shutdown (RQ's, with deliveries still waiting for a slot handed back at once).

        The stop is recorded before RQ's handler runs: the StopRequested it raises can be lost (a
        signal that lands inside a log call is swallowed by logging's error handler), and its Redis
        write fails while Redis is down; the loop and the wait for Redis both read the flag."""
        self._stop_requested = True
        try:
            super().request_stop(signum, frame)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            pass  # RQ could not write the shutdown date (Redis is down); the stop is recorded above
        finally:
            self._release_waiting()

    def _nothing_in_flight(self) -> bool:
        """True when every job this worker started has completed (recorded in Redis or not)."""
        unrecorded = {id(item) for item in self._unrecorded}
        return all(item.done or id(item) in unrecorded for item in self._running.values())

    def _log_unrecorded_at_stop(self) -> None:
        """A stop while Redis is down: say which completed jobs RQ will not hear about."""
        if self._running:
            self.log.warning(
                "Worker %s: stopping while Redis is down; %d completed jobs are not recorded in Redis "
                "(RQ's registry cleanup fails them later; their messages' outcomes are in the database "
                "and the outbox sweep resumes any message still due)",
                self.name,
                len(self._running),
            )

    def _release_waiting(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.release_waiting()

    # --- the engine's thread ----------------------------------------------------------------------

    def _run_engine(self) -> None:
        last_check = time.monotonic()
        while not (self._stop_engine.is_set() and self.engine.open == 0):
            try:
                self.engine.step()
                self.engine.wait(0.5)
            except Exception:  # noqa: BLE001 - the engine must outlive any one bad step
                self.log.exception("Worker %s: delivery engine step failed", self.name)
                time.sleep(0.5)
            if time.monotonic() - last_check > 10:
                # As Django does between requests: drop a broken or too old connection.
                close_old_connections()
                last_check = time.monotonic()
        close_old_connections()

    # --- dequeueing and starting jobs -------------------------------------------------------------

    def _held(self) -> int:
        """Deliveries (and other jobs) this worker is working on: submitted and not yet done, except
        those only waiting for their time or delivery-rate slot (at most a few seconds' worth at the
        rate), so a batch waiting for slots does not keep single messages whose slots come first on
        the queue."""
        return (
            self.engine.open
            - self.engine.waiting
            + sum(1 for r in self._running.values() if not r.delivery and not r.done)
        )

    def _dequeue(self, free: int, *, block: bool) -> int:
        """Take up to `free` deliveries' worth of jobs off the queues (a batch job counts as
        BULK_BATCH_SIZE) and start them; return how many jobs were started. With `block`, wait up to
        IDLE_BLOCK_SECONDS for the first one."""
        popped = rqjobs.pop(
            self.connection,
            [q.key for q in self._ordered_queues],
            free,
            block=IDLE_BLOCK_SECONDS if block else None,
        )
        if not popped:
            return 0
        by_key = {q.key: q for q in self.queues}
        jobs = self.job_class.fetch_many([job_id for _, job_id in popped], self.connection, self.serializer)
        started = [(job, by_key[key]) for (key, _), job in zip(popped, jobs, strict=True) if job is not None]
        if self._dequeue_strategy in ("round_robin", "random") and started:
            self.reorder_queues(started[-1][1])
        self._start(started)
        return len(started)

    def _start(self, jobs: list[tuple[Job, Queue]]) -> None:
        """Mark `jobs` started (executions, started registry, job status) in one pipeline, then hand
        each to the delivery engine or a job thread."""
        if not jobs:
            return
        for item in rqjobs.mark_started(self, jobs):
            self._running[item.job.id] = item
            try:
                delivery_ids = self._delivery_ids(item.job)
            except Exception as exc:  # noqa: BLE001 - e.g. arguments that cannot be unpickled
                item.error, item.exc_info, item.delivery = exc, sys.exc_info(), True
                self._complete(item)
                continue
            if delivery_ids is None:
                self._job_pool.submit(self._perform, item)
                continue
            item.delivery, item.size = True, len(delivery_ids)
            item.batch = item.job.func_name.endswith("deliver_batch")
            if not delivery_ids:
                self._complete(item)
                continue
            item.deliveries = [
                Delivery(mid, item.job.id, self._delivered(item), batch=item.batch) for mid in delivery_ids
            ]
            self.engine.submit(item.deliveries)

    @staticmethod
    def _delivery_ids(job: Job) -> list[str] | None:
        """The message ids of a delivery job (`deliver(id)` or `deliver_batch(ids)`), else None."""
        if job.func_name not in queues.DELIVERY_JOBS:
            return None
        if job.func_name.endswith("deliver_batch"):
            return [str(message_id) for message_id in job.args[0]]
        return [str(job.args[0])]

    def _delivered(self, item: rqjobs.Running):  # noqa: ANN202 - a closure for Delivery.on_done
        def on_done(delivery: Delivery, result: str, error: BaseException | None) -> None:
            item.results.append(result)
            if error is not None and item.error is None:
                item.error = error
                item.exc_info = (type(error), error, error.__traceback__)
            if len(item.results) == item.size:
                self._complete(item)

        return on_done

    def _perform(self, item: rqjobs.Running) -> None:
        """Run a job that is not a delivery in this job thread, within its timeout."""
        close_old_connections()
        try:
            timeout = item.job.timeout or Queue.DEFAULT_TIMEOUT
            # A subclass per job: RQ's TimerDeathPenalty patches the exception class it is given so
            # the exception carries that job's timeout, which on the shared class would race.
            exception = type("JobTimeoutException", (JobTimeoutException,), {})
            with TimerDeathPenalty(timeout, exception, job_id=item.job.id):
                item.return_value = item.job.perform()
        except BaseException as exc:  # noqa: BLE001 - reported as the job's failure
            item.error, item.exc_info = exc, sys.exc_info()
        finally:
            close_old_connections()
            self._complete(item)

    def _complete(self, item: rqjobs.Running) -> None:
        self._completions.put(item)

    # --- finishing jobs ---------------------------------------------------------------------------

    def _wait(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for a job to complete (it is then finished by the next round)."""
        try:
            item = self._completions.get(timeout=timeout)
        except thread_queue.Empty:
            return
        self._completions.put(item)

    def _finish_completed(self) -> None:
        """Record every job that completed since the last round: delivery jobs in one pipeline, other
        jobs through RQ's own success and failure handling."""
        done, self._unrecorded = self._unrecorded, []
        while True:
            try:
                done.append(self._completions.get_nowait())
            except thread_queue.Empty:
                break
        fast = []
        try:
            while done:
                item = done.pop()
                item.done = True
                if item.abandoned or self._running.get(item.job.id) is not item:
                    continue
                if item.delivery:
                    fast.append(item)
                else:
                    self._finish_with_rq(item)
            self._mark_finished(fast)
        except redis.exceptions.RedisError:
            # Recorded once Redis answers again (jobs a Redis restart forgot are recorded anew).
            self._unrecorded = fast + done
            raise

    def _mark_finished(self, items: list[rqjobs.Running]) -> None:
        rqjobs.mark_finished(self, items, idle=len(self._running) == len(items))
        for item in items:
            self._running.pop(item.job.id, None)

    def _finish_with_rq(self, item: rqjobs.Running) -> None:
        job, queue, execution = item.job, item.queue, item.execution
        if item.error is None:
            self._finalize_success(job, queue, execution, item.return_value)
        else:
            self._finalize_failure(job, queue, execution, item.exc_info)
        self._running.pop(job.id, None)
        if not self._running:
            self.set_state(WorkerStatus.IDLE)

    def _enforce_timeouts(self) -> None:
        """The watchdog: fail jobs that ran past their timeout.

        A job on a job thread gets TIMEOUT_GRACE_SECONDS more (its own timer should have stopped it
        first). A delivery job is timed by its calls: it fails once one of its messages has been
        claimed (its call under way) for longer than the timeout, which the calls' own deadlines
        prevent unless a thread hangs elsewhere. The time a delivery spends waiting for
        a free delivery thread, its due time or its rate slot does not count (each is bounded); a
        delivery job with no call under way fails only after twice its timeout plus the grace.
        Failing a job never releases its claimed messages while a call may still be running: the
        sweep settles them as interrupted once their call cannot still be running.
        """
        now = time.monotonic()
        for item in list(self._running.values()):
            timeout = item.job.timeout or Queue.DEFAULT_TIMEOUT
            if timeout < 0 or item.done:
                continue
            if item.size:
                calls = [now - d.call_started for d in item.deliveries if d.call_started]
                overdue = (
                    max(calls) > timeout
                    if calls
                    else now - item.started > 2 * timeout + TIMEOUT_GRACE_SECONDS
                )
            else:
                overdue = now - item.started > timeout + TIMEOUT_GRACE_SECONDS
            if not overdue:
                continue
            item.abandoned = True
            error = type("JobTimeoutException", (JobTimeoutException,), {})()
            error.args = (f"Task exceeded maximum timeout value ({timeout} seconds)",)
            self.log.warning("Worker %s: job %s exceeded its timeout of %ss", self.name, item.job.id, timeout)
            item.error, item.exc_info, item.delivery = error, (JobTimeoutException, error, None), True
            self._mark_finished([item])

    # --- upkeep -----------------------------------------------------------------------------------

    def _upkeep(self) -> None:
        """Heartbeats for the worker and every running job; RQ's maintenance when due."""
        if time.monotonic() - self._last_heartbeat < HEARTBEAT_SECONDS:
            return
        self._last_heartbeat = time.monotonic()
        with self.connection.pipeline() as pipe:
            self.heartbeat(pipeline=pipe)
            for item in self._running.values():
                ttl = self.get_heartbeat_ttl(item.job)
                item.execution.heartbeat(item.job.started_job_registry, ttl, pipeline=pipe)
                item.job.heartbeat(rq_now(), ttl, pipeline=pipe, xx=True)
            pipe.exists(WORKERS_SUSPENDED)
            pipe.sismember(self.redis_workers_keys, self.key)
            *_, suspended, registered = pipe.execute()
        if not registered:
            self._register_again()
        if bool(suspended) != self._suspended:
            self._suspended = bool(suspended)
            self.log.info(
                "Worker %s: %s", self.name, "suspended, run `rq resume` to resume" if suspended else "resumed"
            )
        if self.should_run_maintenance_tasks:
            self.run_maintenance_tasks()

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        super().heartbeat(timeout or self.worker_ttl + 60, pipeline=pipeline)

    def _register_again(self) -> None:
        """Register this worker again (a Redis restart without persistence forgot it)."""
        with self.connection.pipeline() as pipe:
            pipe.hset(self.key, mapping=self.serialize())
            pipe.hset(self.key, "state", self.get_state())
            register(self, pipe)
            pipe.expire(self.key, self.worker_ttl + 60)
            pipe.execute()
        self.log.info("Worker %s: registered again (Redis had forgotten it)", self.name)

    def _wait_for_redis(self, exc: Exception) -> None:
        """Wait for Redis to answer again (checking every REDIS_RETRY_SECONDS), then register again
        if needed and carry on. Deliveries in flight keep going meanwhile; jobs that finished are
        recorded once Redis is back."""
        self.log.error("Worker %s: Redis unavailable (%s); waiting for it", self.name, exc)
        if not queues.wait_for_redis(self.connection, stop=lambda: self._stop_requested):
            return
        self._last_heartbeat = 0.0
        self.log.info("Worker %s: Redis answers, working again", self.name)

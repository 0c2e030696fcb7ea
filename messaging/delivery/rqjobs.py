"""RQ's bookkeeping for many jobs at once, on RQ's own primitives.

RQ's worker takes one job at a time off the queues and spends about 40 Redis commands on it, most
one round trip each. The concurrent worker takes up to its concurrency's worth of jobs in one round
trip (`pop`), marks them all started in one pipeline (`mark_started`: an execution each, the started
registry, the job's status) and, as they complete, marks delivery jobs finished or failed in one
pipeline (`mark_finished`: status, end time, result, registries, the worker's counts) — what RQ's own
handling writes, so RQ's registries, results and dashboards see every job as usual. Jobs that are
not deliveries are finished through RQ's own handling (messaging.delivery.worker).

This uses RQ internals (Execution, Result, job hash fields) as of RQ 3.0; pyproject.toml pins the
minor version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from redis import Redis
from rq.executions import Execution, cleanup_execution
from rq.job import Job, JobStatus
from rq.job_lifecycle import format_exc_info
from rq.queue import Queue
from rq.results import Result
from rq.utils import now as rq_now
from rq.utils import utcformat
from rq.worker import BaseWorker, WorkerStatus

from messaging import queues

from .jobs import summary

_POP_LUA = """
local want, weight, prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local out, taken = {}, 0
for i = 1, #KEYS do
  while taken < want do
    local id = redis.call('LPOP', KEYS[i])
    if not id then break end
    out[#out + 1] = KEYS[i]
    out[#out + 1] = id
    if string.sub(id, 1, #prefix) == prefix then taken = taken + weight else taken = taken + 1 end
  end
  if taken >= want then break end
end
return out
"""


def pop(connection: Redis, keys: list[str], units: int, *, block: float | None) -> list[tuple[str, str]]:
    """Take job ids off the queues `keys` (in order), up to `units` deliveries' worth (a batch job
    counts as BULK_BATCH_SIZE, and at least one job is taken), in one round trip; return (queue key,
    job id) pairs. With `block` (seconds), wait that long for a first job when all are empty.
    Raises redis.exceptions.RedisError.
    """
    popped: list[tuple[str, str]] = []
    if block:
        first = connection.blpop(keys, block)
        if first is None:
            return []
        popped.append((first[0].decode(), first[1].decode()))
        units -= settings.BULK_BATCH_SIZE if first[1].startswith(queues.BATCH_JOB_PREFIX.encode()) else 1
    if units > 0:
        script = _scripts.get(id(connection))
        if script is None or script.registered_client is not connection:
            script = _scripts[id(connection)] = connection.register_script(_POP_LUA)
        found = script(keys=keys, args=[units, settings.BULK_BATCH_SIZE, queues.BATCH_JOB_PREFIX])
        popped += [(found[i].decode(), found[i + 1].decode()) for i in range(0, len(found), 2)]
    return popped


_scripts: dict[int, Any] = {}


@dataclass(eq=False)
class Running:
    """A job this worker started: its execution, how much of the concurrency it holds, its results."""

    job: Job
    queue: Queue
    execution: Execution
    size: int
    delivery: bool = False
    batch: bool = False
    started: float = field(default_factory=time.monotonic)
    results: list[str] = field(default_factory=list)
    deliveries: list = field(default_factory=list)  # a delivery job's engine.Delivery objects
    error: BaseException | None = None
    exc_info: Any = None
    return_value: Any = None
    done: bool = False
    abandoned: bool = False


def mark_started(worker: BaseWorker, jobs: list[tuple[Job, Queue]]) -> list[Running]:
    """Mark `jobs` started by `worker` in one pipeline: an execution each (in the started registry
    and the worker's executions), the job's status, start time and worker; the worker busy."""
    running: list[Running] = []
    with worker.connection.pipeline() as pipe:
        for job, queue in jobs:
            ttl = worker.get_heartbeat_ttl(job)
            execution = Execution.create(job, ttl, pipeline=pipe, worker_name=worker.name)
            worker.executions[execution.id] = execution
            job.prepare_for_execution(worker.name, pipe)  # also its heartbeat
            pipe.persist(job.key)
            running.append(Running(job, queue, execution, size=0))
        worker.heartbeat(pipeline=pipe)
        worker.set_state(WorkerStatus.BUSY, pipeline=pipe)
        pipe.execute()
    return running


def mark_finished(worker: BaseWorker, items: list[Running], *, idle: bool) -> None:
    """Mark delivery jobs finished (their result: what happened to their message, or a count of
    outcomes for a batch) or failed, in one pipeline: what RQ's own handling writes (status, end
    time, result, registries, counts), without re-saving the whole job hash for each."""
    if not items:
        return
    ended = rq_now()
    stamp = utcformat(ended)
    with worker.connection.pipeline() as pipe:
        for item in items:
            job = item.job
            job.ended_at = ended
            working = ended - job.started_at if job.started_at else None
            if item.error is None:
                job._status = JobStatus.FINISHED
                job._result = summary(item.results) if item.batch else (item.results or [""])[0]
                pipe.hset(
                    job.key, mapping={"status": job._status, "ended_at": stamp, "last_heartbeat": stamp}
                )
                worker.increment_successful_job_count(pipeline=pipe)
                result_ttl = job.get_result_ttl(worker.default_result_ttl)
                if result_ttl != 0:
                    Result.create(
                        job,
                        Result.Type.SUCCESSFUL,
                        ttl=result_ttl,
                        return_value=job._result,
                        worker_name=worker.name,
                        pipeline=pipe,
                        execution_id=item.execution.id,
                        execution_started_at=item.execution.created_at,
                        execution_ended_at=ended,
                    )
                    job.finished_job_registry.add(job, result_ttl, pipe)
                if result_ttl > 0:
                    pipe.expire(job.key, result_ttl)  # delivery jobs have no dependents to expire
                elif result_ttl == 0:
                    job.delete(pipeline=pipe, remove_from_queue=False)
            else:
                job._status = JobStatus.FAILED
                job.heartbeat(ended, 0, pipeline=pipe)
                job.set_status(JobStatus.FAILED, pipeline=pipe)
                job._handle_failure(
                    format_exc_info(item.exc_info),
                    pipeline=pipe,
                    worker_name=worker.name,
                    execution_id=item.execution.id,
                    execution_started_at=item.execution.created_at,
                    execution_ended_at=ended,
                )
                worker.increment_failed_job_count(pipeline=pipe)
            if working is not None:
                worker.increment_total_working_time(working, pipe)
            cleanup_execution(worker, job, pipe, item.execution)
            # One line per job, naming only ids (a batch job: how many messages).
            call = f"deliver_batch({item.size} messages)" if item.batch else job.description
            worker.log.info(
                "Worker %s: %s: %s (%s): %s",
                worker.name,
                job.origin,
                call,
                job.id,
                job._result or item.error,
            )
        if idle:
            worker.set_state(WorkerStatus.IDLE, pipeline=pipe)
        pipe.execute()

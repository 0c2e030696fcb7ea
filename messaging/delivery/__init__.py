"""Delivery: how an accepted message reaches its provider.

The life cycle, one module a step (README, "Architecture"):

    outbox   enqueue after commit, else leave the message `accepted` for the sweep
    jobs     `deliver(id)` / `deliver_batch(ids)`: RQ jobs that carry only message ids
    worker   the concurrent RQ worker that runs many jobs at once in one process
    engine   load -> gate -> claim -> send -> record, grouped, for one message or many
    gate     send now, wait, defer (not due, over a delivery rate) or skip (cancelled, superseded)
    channels one registry: what sends a message of each channel
    outcomes attempt rows; sent, retry with backoff, or failed (the worker and the sweep alike)
    sweep    the periodic repair: enqueue what was left `accepted`, re-enqueue lost jobs, settle
             attempts interrupted by a killed worker
"""

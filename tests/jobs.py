"""Job functions for tests that run real workers (importable by the worker process)."""

from __future__ import annotations

import time


def block(seconds: float) -> str:
    """Sleep in one call that an exception raised in the thread cannot interrupt."""
    time.sleep(seconds)
    return "woke"


def spin(seconds: float) -> str:
    """Busy-wait in Python code (where a timeout raised in the thread stops it)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass
    return "done"


def boom() -> None:
    raise RuntimeError("this job fails on purpose")

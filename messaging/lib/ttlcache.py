"""A tiny per-process cache with expiry, for lookups on the API's hot path (API keys, workspaces)."""

from __future__ import annotations

import threading
import time
from typing import Any

_instances: list[TTLCache] = []


class TTLCache:
    """Maps keys to values for `ttl` seconds (monotonic clock). Thread-safe; bounded to `max_size`."""

    def __init__(self, ttl: float, max_size: int = 10_000):
        self.ttl = ttl
        self.max_size = max_size
        self._data: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        _instances.append(self)

    def get(self, key: Any) -> Any | None:
        """Return the live value for `key`, or None when absent or expired."""
        entry = self._data.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def set(self, key: Any, value: Any) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            if len(self._data) >= self.max_size:
                self._data.clear()
            self._data[key] = (time.monotonic() + self.ttl, value)

    def delete(self, key: Any) -> None:
        """Forget `key` (no error when absent)."""
        with self._lock:
            self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


def clear_all() -> None:
    """Empty every TTLCache in this process (tests call this between tests)."""
    for cache in _instances:
        cache.clear()

"""A total time budget for one outbound HTTP call: connect, send, response headers and body.

Why: requests' and urllib3's timeouts apply to each socket operation, not to the call. urllib3's own
`Timeout` documentation says so ("if a server streams one byte every fifteen seconds, a timeout of
20 seconds will not trigger, even though the request will take several minutes to complete"), and
its `total` only bounds the connect plus the wait for the first read. A receiver that sends a byte
every few seconds (in the status line, the headers or the body) would hold the calling thread for as
long as it likes.

How: `Deadline` is entered around a call on the thread that makes it. Connections made through a
`DeadlineAdapter` (mount it on the session) attach their socket to the thread's deadline when they
connect or are reused; one watcher thread per process shuts down every socket of a deadline that
passes (`shutdown(SHUT_RDWR)` on a duplicate of the socket's descriptor, so a TLS socket, or one
still in its handshake, is cut too, and a descriptor closed meanwhile is never touched). The blocked
read or write then fails at once and the caller reports the call as over its deadline. Callers also
pass per-operation timeouts no longer than the time left and check `expired` between reads.

Not covered: the DNS lookup of a host name (Python's resolver ignores socket timeouts). Callbacks
connect to an address resolved and checked beforehand, with a bounded wait that their client counts
against the deadline (messaging.lib.netguard); providers are operator-configured hosts.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_local = threading.local()


class Deadline:
    """`seconds` (> 0) from now on the monotonic clock, for the call(s) made inside `with deadline:`.

    `expired` becomes True once the watcher cut the call's sockets (or `check()` saw the time pass).
    """

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.at = time.monotonic() + self.seconds
        self.expired = False
        self._finished = False
        self._lock = threading.Lock()
        self._shadows: dict[int, socket.socket] = {}  # id(socket) -> duplicate of its descriptor

    def remaining(self) -> float:
        """Seconds left (0.0 once passed)."""
        return max(0.0, self.at - time.monotonic())

    def check(self) -> bool:
        """Return True (and mark the deadline expired) once its time has passed."""
        if not self.expired and time.monotonic() >= self.at:
            self._expire()
        return self.expired

    def attach(self, sock: socket.socket | None) -> None:
        """Cut `sock` when the deadline passes (at once when it already has). Idempotent."""
        if sock is None:
            return
        with self._lock:
            if self._finished or id(sock) in self._shadows:
                return
            try:
                shadow = socket.socket(fileno=os.dup(sock.fileno()))
            except OSError:
                return  # already closed: nothing left to cut
            self._shadows[id(sock)] = shadow
            if self.expired:
                _cut(shadow)

    def _expire(self) -> None:
        # Under the lock, so a duplicate is never closed (and its descriptor number reused by
        # another connection) while it is being shut down.
        with self._lock:
            if self._finished:
                return
            self.expired = True
            for shadow in self._shadows.values():
                _cut(shadow)

    def __enter__(self) -> Deadline:
        _local.deadline = self
        _watcher().add(self)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        _local.deadline = None
        with self._lock:
            self._finished = True
            for shadow in self._shadows.values():
                shadow.close()
            self._shadows = {}


def current() -> Deadline | None:
    """The deadline entered on this thread, if any."""
    return getattr(_local, "deadline", None)


def _cut(shadow: socket.socket) -> None:
    with contextlib.suppress(OSError):  # not connected (any more): the call ends anyway
        shadow.shutdown(socket.SHUT_RDWR)


class _Watcher:
    """One thread per process that expires deadlines at their time (earliest first)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._seq = itertools.count()
        threading.Thread(target=self._run, name="call-deadlines", daemon=True).start()

    def add(self, deadline: Deadline) -> None:
        with self._cond:
            heapq.heappush(self._heap, (deadline.at, next(self._seq), deadline))
            if self._heap[0][2] is deadline:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0][2]._finished:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._cond.wait()
                        continue
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        deadline = heapq.heappop(self._heap)[2]
                        break
                    self._cond.wait(wait)
            deadline._expire()


_watcher_lock = threading.Lock()
_the_watcher: _Watcher | None = None


def _watcher() -> _Watcher:
    """This process's watcher, started on first use (a forked child starts its own)."""
    global _the_watcher, _watcher_lock
    watcher = _the_watcher
    if watcher is not None and watcher.pid == os.getpid():
        return watcher
    if watcher is not None:
        _watcher_lock = threading.Lock()  # the parent's lock may have been held at the fork
    with _watcher_lock:
        if _the_watcher is None or _the_watcher.pid != os.getpid():
            _the_watcher = _Watcher()
        return _the_watcher


class _AttachingConnection:
    """Attaches the connection's socket to the thread's deadline: a new one once connected (before
    any TLS handshake), a kept-alive one when a request starts on it."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()  # type: ignore[misc]
        deadline = current()
        if deadline is not None:
            deadline.attach(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        deadline = current()
        if deadline is not None:
            deadline.attach(self.sock)  # type: ignore[attr-defined]
        super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_AttachingConnection, HTTPConnection):
    pass


class _HTTPSConnection(_AttachingConnection, HTTPSConnection):
    pass


class _HTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOL_CLASSES = {"http": _HTTPConnectionPool, "https": _HTTPSConnectionPool}


class DeadlineAdapter(HTTPAdapter):
    """requests' HTTPAdapter whose connections honour the thread's `Deadline` (see the module
    docstring); otherwise identical. Connections through a SOCKS proxy are not covered."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOL_CLASSES

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if hasattr(manager, "pool_classes_by_scheme") and not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _POOL_CLASSES
        return manager

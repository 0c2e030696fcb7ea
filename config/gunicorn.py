"""Gunicorn settings for the web process (`gunicorn -c config/gunicorn.py config.wsgi`).

Read from the environment a PaaS sets: PORT, WEB_CONCURRENCY; WEB_THREADS, WEB_WORKER_CLASS and
GUNICORN_TIMEOUT optionally.
"""

import logging
import os
import re
import traceback

from gunicorn.glogging import Logger

from messaging.lib.pii import mask_text, mask_url

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# Threaded workers (gthread), one process per core: a request spends much of its time waiting on the
# database and Redis, and the threads of a process hand their rows to one group committer
# (messaging.lib.groupcommit), which needs several requests of a process in flight at once. Chosen by
# measurement (README, "Performance"): more processes than cores only add context switches and p99
# latency on a busy machine. A PaaS sets WEB_CONCURRENCY per instance size (about 80 MiB per worker).
worker_class = os.environ.get("WEB_WORKER_CLASS", "gthread")
workers = int(os.environ.get("WEB_CONCURRENCY", str(os.cpu_count() or 1)))
threads = int(os.environ.get("WEB_THREADS", "8"))
# Load the app once in the master and fork the workers from it: workers start (and restart) in
# milliseconds and share the loaded code. Nothing connects to the database or Redis at import time.
preload_app = True
# Requests are short (store a row, enqueue); a request over this is stuck, not busy.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# On deploy (SIGTERM), requests in flight get this long to finish.
graceful_timeout = 25
keepalive = 5
# Recycle workers now and then so a slow leak cannot grow without bound; jitter avoids all at once.
# (At 2,000, measured in bench/run.py, a busy worker restarted every few seconds and lost a third of
# the throughput to loading Django again.)
max_requests = 50_000
max_requests_jitter = 5_000
accesslog = "-"
errorlog = "-"


# Access-log atoms that never hold personal data: client address, time, status, sizes, durations,
# method, protocol, pid.
_SAFE_ATOMS = frozenset(["h", "l", "t", "s", "b", "B", "m", "H", "T", "D", "M", "L", "p"])


class MaskingLogger(Logger):
    """gunicorn's logger with personal data masked in the access-log atoms its format prints
    (messaging.lib.pii).

    Each atom the format names is masked as what it is: `%(U)s` (the decoded path) and `%(q)s` (the
    bare query) as URL parts, the request line, Referer and the rest as free text; the client
    address, time, status and sizes need no masking. The line is then handed to the access log's
    handlers as a record already masked, so the process's masking record factory does not scan it a
    second time (timestamp and all): together this cut the access log's cost per request from about
    90 to 30 microseconds.
    """

    _names_for: tuple[str, frozenset[str]] = ("", frozenset())

    def _format_names(self) -> frozenset[str]:
        fmt = self.cfg.access_log_format
        if self._names_for[0] != fmt:
            names = re.findall(r"%\(([^)]+)\)", fmt)
            # gunicorn looks header and environ atoms up in lower case ({User-Agent}i -> {user-agent}i).
            self._names_for = (fmt, frozenset(n.lower() if n.startswith("{") else n for n in names))
        return self._names_for[1]

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for name in self._format_names() - _SAFE_ATOMS:
            value = atoms.get(name)
            if not isinstance(value, str):
                continue
            if name == "U":
                atoms[name] = mask_url(value)
            elif name == "q":
                atoms[name] = mask_url("?" + value)[1:]
            else:
                atoms[name] = mask_text(value)
        return atoms

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled or not self.access_log.isEnabledFor(logging.INFO):
            return
        try:
            line = self.cfg.access_log_format % self.atoms_wrapper_class(
                self.atoms(resp, req, environ, request_time)
            )
        except Exception:  # noqa: BLE001 - a bad format must not fail the request (as gunicorn does)
            self.error(traceback.format_exc())
            return
        record = logging.LogRecord(self.access_log.name, logging.INFO, __file__, 0, line, None, None)
        record.pii_masked = True  # masked above, atom by atom (messaging.lib.pii.mask_record skips it)
        self.access_log.handle(record)


logger_class = MaskingLogger
# The PaaS router terminates TLS and sets X-Forwarded-*; trust it (settings read X-Forwarded-Proto).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "*")


def worker_exit(server, worker):
    """Enqueue the messages this worker accepted but has not yet handed to Redis (ENQUEUE_BATCH_MS)."""
    try:
        from messaging.delivery.outbox import buffer
    except Exception:  # noqa: BLE001 - the app never loaded: nothing was accepted
        return
    buffer.flush()

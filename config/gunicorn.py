"""Gunicorn settings for the web process (`gunicorn -c config/gunicorn.py config.wsgi`).

Read from the environment a PaaS sets: PORT, WEB_CONCURRENCY; GUNICORN_TIMEOUT optionally.
"""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# Two sync workers per core is gunicorn's usual advice; a PaaS sets WEB_CONCURRENCY per instance size.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Requests are short (store a row, enqueue); a request over this is stuck, not busy.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# On deploy (SIGTERM), requests in flight get this long to finish.
graceful_timeout = 25
keepalive = 5
# Recycle workers now and then so a slow leak cannot grow without bound; jitter avoids all at once.
max_requests = 2000
max_requests_jitter = 200
accesslog = "-"
errorlog = "-"
# The PaaS router terminates TLS and sets X-Forwarded-*; trust it (settings read X-Forwarded-Proto).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "*")


def worker_exit(server, worker):
    """Enqueue the messages this worker accepted but has not yet handed to Redis (ENQUEUE_BATCH_MS)."""
    try:
        from messaging.queues import enqueue_buffer
    except Exception:  # noqa: BLE001 - the app never loaded: nothing was accepted
        return
    enqueue_buffer.flush()

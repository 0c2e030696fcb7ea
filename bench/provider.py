"""A minimal provider for benchmarks: answers every POST with 200 JSON after PROVIDER_DELAY_MS.

Run with gunicorn's threaded worker so slow answers overlap:
`gunicorn -k gthread --threads 128 bench.provider:app`.
"""

from __future__ import annotations

import os
import time

DELAY = float(os.environ.get("PROVIDER_DELAY_MS", "0")) / 1000


def app(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    if DELAY:
        time.sleep(DELAY)
    body = b'{"id":"bench","status":"queued"}'
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

"""Keeps the sandbox's deliberate error answers out of the server-error log (development only).

The sandbox answers 400, 429, 500 and 503 on purpose (its test numbers and addresses). Django logs
every 4xx/5xx response of a view as a warning or an error ("Internal Server Error: /sandbox/send-sms"
on logger `django.request`), and runserver logs the request line at the same level (`django.server`).
For the sandbox's own answers those are not faults of this server: `SandboxAnswerFilter` drops the
`django.request` record of an answer the sandbox chose (the view marked the request, see
`mark_deliberate`), and writes runserver's line for a sandbox path at INFO. An exception raised in a
sandbox view is still logged as the error it is. Imports nothing of Django's apps, so the logging
configuration can load it before the apps are ready.
"""

from __future__ import annotations

import logging
from typing import Any

# Marks a request whose error status the sandbox chose (set by `mark_deliberate`).
DELIBERATE_ATTR = "sandbox_deliberate_status"
# Where the sandbox's URLs live (messaging/urls.py).
SANDBOX_PATH_PREFIX = "/sandbox/"


def mark_deliberate(request: Any, status: int) -> None:
    """Record on `request` (a Django HttpRequest) that the sandbox answers `status` on purpose."""
    setattr(request, DELIBERATE_ATTR, status)


def _request_line_path(record: logging.LogRecord) -> str:
    # runserver logs '"METHOD /path HTTP/x" status size' (the record's arguments are already merged
    # into its message: messaging.lib.pii masks every record as it is made).
    parts = record.getMessage().lstrip('"').split(" ")
    return parts[1] if len(parts) > 1 else ""


class SandboxAnswerFilter(logging.Filter):
    """Logging filter for the `django.request` and `django.server` loggers (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "django.request":
            request = getattr(record, "request", None)
            return record.exc_info is not None or getattr(request, DELIBERATE_ATTR, None) is None
        if (
            record.name == "django.server"
            and record.levelno > logging.INFO
            and _request_line_path(record).startswith(SANDBOX_PATH_PREFIX)
        ):
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        return True

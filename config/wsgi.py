"""WSGI entry point for gunicorn (`gunicorn config.wsgi`) and `runserver` (WSGI_APPLICATION).

Two middleware stacks, chosen by path. Machine endpoints (settings.MACHINE_PATHS: `/api/...`,
`/health`, `/metrics`) answer JSON or text to programs: they go through settings.MACHINE_MIDDLEWARE
only (security headers and host checks). Everything else (dashboard, admin, sandbox) goes through the
full settings.MIDDLEWARE: sessions, CSRF, login lockout, messages, Content-Security-Policy. The HTML
stack cost an API request about a third of its CPU (django-csp builds its policy header on every
response), for nothing a program reads.

Django's test client builds its own handler from settings.MIDDLEWARE, so the machine stack is tested
through this module (tests/test_machine_paths.py) and the real gunicorn processes of the suite.
"""

from __future__ import annotations

import os

import django
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


class MachineHandler(WSGIHandler):
    """A WSGIHandler whose middleware chain is settings.MACHINE_MIDDLEWARE instead of MIDDLEWARE."""

    def load_middleware(self, is_async: bool = False) -> None:
        # Django builds a chain from settings.MIDDLEWARE only; point it at the machine list while this
        # handler is built (once, at start-up, before any request thread exists) and put it back.
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = settings.MACHINE_MIDDLEWARE
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = full


def is_machine_path(path: str) -> bool:
    """True when `path` (a request's PATH_INFO) is a machine endpoint: one of settings.MACHINE_PATHS
    exactly, or below one of them (`/api/` prefixes everything under it)."""
    for prefix in settings.MACHINE_PATHS:
        if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
            return True
    return False


class PathDispatcher:
    """The WSGI application: machine paths to a MachineHandler, the rest to Django's WSGIHandler."""

    def __init__(self) -> None:
        self.full = WSGIHandler()
        self.machine = MachineHandler()

    def __call__(self, environ: dict, start_response):  # noqa: ANN204 - WSGI's own signature
        handler = self.machine if is_machine_path(environ.get("PATH_INFO", "")) else self.full
        return handler(environ, start_response)


def load_request_code() -> None:
    """Import what Django and phonenumbers otherwise load on a process's first request: the URLconf
    with every view module it names (the API, its OpenAPI document, validation), and phonenumbers'
    metadata for North American numbers. Touches neither the database nor Redis.

    gunicorn imports this module once in its master (preload_app) and forks the workers from it, so
    they start with all of it loaded; otherwise each worker's first request spent about 0.25 s of CPU
    loading it (measured in-process on a bulk request: 358 ms against 130 ms for the next ones), again
    after every restart (max_requests).
    """
    from django.urls import get_resolver

    from messaging.formats import normalize_phone_number

    get_resolver().url_patterns  # noqa: B018 - the attribute imports the URLconf
    normalize_phone_number("+14155550123")


django.setup(set_prefix=False)
application = PathDispatcher()
load_request_code()

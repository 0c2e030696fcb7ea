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


django.setup(set_prefix=False)
application = PathDispatcher()

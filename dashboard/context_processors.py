from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def service(request: HttpRequest) -> dict:
    """Template context shared by every page: whether the sandbox is on and which environment runs."""
    return {"sandbox_enabled": settings.SANDBOX_ENABLED, "django_env": settings.DJANGO_ENV}

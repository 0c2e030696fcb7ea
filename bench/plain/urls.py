"""URLs of the plain Django project (bench/plain/settings.py): one JSON view, no database."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.utils import timezone
from django.views.decorators.http import require_GET


@require_GET
def status(request: HttpRequest) -> JsonResponse:
    """GET /status: {"status": "ok", "time": ISO 8601 UTC}, the same body the service's /health sends."""
    return JsonResponse({"status": "ok", "time": timezone.now().isoformat()})


urlpatterns = [path("status", status, name="status")]

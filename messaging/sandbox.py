"""Built-in sandbox provider: answers as the SMS API (and later Email, AI and callback targets).

On when SANDBOX_ENABLED (default in development and test, off in production). Every request is
recorded as a SandboxReceipt. Reserved SMS test numbers make failures reproducible:

| recipient      | answer                                                        |
| +15005550400   | 400 "invalid recipient" every time (a permanent failure)       |
| +15005550429   | 429 with Retry-After: 1 on the first try of a message, then 200 |
| +15005550503   | 503 on the first try of a message, then 200                   |
| +15005550500   | 500 every time (fails after all attempts)                      |
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .models import SandboxReceipt

FAIL_ALWAYS_400 = "+15005550400"
FAIL_ONCE_429 = "+15005550429"
FAIL_ONCE_503 = "+15005550503"
FAIL_ALWAYS_500 = "+15005550500"
RECORDED_HEADERS = ("Content-Type", "Idempotency-Key", "X-Workspace-Id", "User-Agent", "Authorization")


def _payload(request: HttpRequest) -> Any:
    try:
        return json.loads(request.body or b"null")
    except ValueError:
        return {"_raw": request.body[:2000].decode(errors="replace")}


def _headers(request: HttpRequest) -> dict[str, str]:
    headers = {name: request.headers[name] for name in RECORDED_HEADERS if name in request.headers}
    if "Authorization" in headers:
        headers["Authorization"] = headers["Authorization"].split(" ")[0] + " (redacted)"
    return headers


def receipt_record(
    request: HttpRequest, endpoint: str, payload: Any, status: int, **fields: Any
) -> SandboxReceipt:
    """Store what the sandbox received at `endpoint` and the HTTP status it answered."""
    return SandboxReceipt.objects.create(
        endpoint=endpoint,
        path=request.path[:500],
        headers=_headers(request),
        idempotency_key=request.headers.get("Idempotency-Key", "")[:255],
        payload=payload,
        response_status=status,
        **fields,
    )


def _seen_before(endpoint: str, key: str) -> bool:
    return bool(key) and SandboxReceipt.objects.filter(endpoint=endpoint, idempotency_key=key).exists()


def sandbox_only(view):
    """404 unless SANDBOX_ENABLED, so production never exposes the sandbox."""

    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any):
        if not settings.SANDBOX_ENABLED:
            raise Http404("Sandbox is disabled")
        return view(request, *args, **kwargs)

    wrapper.__name__ = view.__name__
    wrapper.__doc__ = view.__doc__
    return wrapper


@csrf_exempt
@sandbox_only
@require_POST
def send_sms(request: HttpRequest) -> JsonResponse:
    """POST /sandbox/send-sms: answer as the SMS API (see the module docstring for test numbers)."""
    payload = _payload(request)
    to = payload.get("to") if isinstance(payload, dict) else None
    retried = _seen_before(SandboxReceipt.Endpoint.SMS, request.headers.get("Idempotency-Key", ""))
    headers: dict[str, str] = {}
    if not isinstance(payload, dict) or not to or not payload.get("message"):
        status, body = 400, {"error": "to and message are required"}
    elif to == FAIL_ALWAYS_400:
        status, body = 400, {"error": "Invalid recipient (sandbox test number +15005550400)"}
    elif to == FAIL_ALWAYS_500:
        status, body = 500, {"error": "Provider error (sandbox test number +15005550500)"}
    elif to == FAIL_ONCE_503 and not retried:
        status, body = 503, {"error": "Temporarily unavailable (sandbox test number +15005550503)"}
    elif to == FAIL_ONCE_429 and not retried:
        status, body, headers = 429, {"error": "Too many requests (sandbox)"}, {"Retry-After": "1"}
    else:
        status, body = 200, {"id": f"sbx_{uuid.uuid4().hex[:16]}", "status": "queued"}
    receipt_record(request, SandboxReceipt.Endpoint.SMS, payload, status)
    response = JsonResponse(body, status=status)
    for name, value in headers.items():
        response[name] = value
    return response

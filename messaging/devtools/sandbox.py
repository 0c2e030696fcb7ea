"""Built-in sandbox provider: answers as the SMS API, the Email API, an OpenAI-compatible chat-completions
API and a callback receiver that verifies Standard Webhooks signatures.

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
import time
import uuid
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ..models import SandboxReceipt
from .sandbox_logs import mark_deliberate

FAIL_ALWAYS_400 = "+15005550400"
FAIL_ONCE_429 = "+15005550429"
FAIL_ONCE_503 = "+15005550503"
FAIL_ALWAYS_500 = "+15005550500"
RECORDED_HEADERS = (
    "Content-Type",
    "Idempotency-Key",
    "X-Workspace-Id",
    "User-Agent",
    "Authorization",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
)


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
    """Store what the sandbox received at `endpoint` and the HTTP status it answers, and mark the
    request as answered on purpose (an error status is then not logged as a server error)."""
    mark_deliberate(request, status)
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


# --- Email API ------------------------------------------------------------------------------------

EMAIL_FAIL_ALWAYS_400 = "fail-400@sandbox.example.com"
EMAIL_FAIL_ONCE_503 = "fail-once-503@sandbox.example.com"
EMAIL_FAIL_ALWAYS_500 = "fail-500@sandbox.example.com"


@csrf_exempt
@sandbox_only
@require_POST
def send_email(request: HttpRequest) -> JsonResponse:
    """POST /sandbox/api/email/send: answer as the Email API.

    Needs `X-Workspace-Id` and JSON `{to, subject, content}` (else 400). Test addresses:
    fail-400@sandbox.example.com (400 every time), fail-once-503@sandbox.example.com (503 on a
    message's first try, then 200), fail-500@sandbox.example.com (500 every time).
    """
    payload = _payload(request)
    to = payload.get("to") if isinstance(payload, dict) else None
    retried = _seen_before(SandboxReceipt.Endpoint.EMAIL, request.headers.get("Idempotency-Key", ""))
    if not request.headers.get("X-Workspace-Id"):
        status, body = 400, {"error": "X-Workspace-Id header is required"}
    elif not isinstance(payload, dict) or not to or not payload.get("subject") or not payload.get("content"):
        status, body = 400, {"error": "to, subject and content are required"}
    elif to == EMAIL_FAIL_ALWAYS_400:
        status, body = 400, {"error": f"Invalid recipient (sandbox test address {to})"}
    elif to == EMAIL_FAIL_ALWAYS_500:
        status, body = 500, {"error": f"Provider error (sandbox test address {to})"}
    elif to == EMAIL_FAIL_ONCE_503 and not retried:
        status, body = 503, {"error": f"Temporarily unavailable (sandbox test address {to})"}
    else:
        status, body = 200, {"id": f"sbx_{uuid.uuid4().hex[:16]}", "status": "queued"}
    receipt_record(request, SandboxReceipt.Endpoint.EMAIL, payload, status)
    return JsonResponse(body, status=status)


# --- OpenAI-compatible chat completions -----------------------------------------------------------


def sandbox_reply(text: str) -> str:
    """The sandbox model's reply to `text`: deterministic, so tests and demos can predict it."""
    quoted = text if len(text) <= 200 else text[:200] + "…"
    return f'Sandbox reply: thanks for your message "{quoted}". (Deterministic text from the sandbox.)'


@csrf_exempt
@sandbox_only
@require_POST
def chat_completions(request: HttpRequest) -> JsonResponse:
    """POST /sandbox/chat/completions: a deterministic OpenAI-compatible chat-completions answer.

    Takes `{model, messages: [{role, content}, ...]}` and answers `{id, object, created, model,
    choices: [{index, message: {role, content}, finish_reason}], usage}` replying to the last user
    message. Token counts are word counts (the sandbox has no tokenizer).
    """
    payload = _payload(request)
    messages = payload.get("messages") if isinstance(payload, dict) else None
    user_texts = [
        m.get("content")
        for m in messages or []
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)
    ]
    if not user_texts:
        error = {"message": "messages must include a user message", "type": "invalid_request"}
        status, body = 400, {"error": error}
    else:
        reply = sandbox_reply(user_texts[-1])
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict))
        completion_tokens = len(reply.split())
        status = 200
        body = {
            "id": f"chatcmpl-sbx{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(payload.get("model") or "sandbox"),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    receipt_record(request, SandboxReceipt.Endpoint.AI, payload, status)
    return JsonResponse(body, status=status)


# --- Callback receiver ----------------------------------------------------------------------------


def signature_check(request: HttpRequest) -> bool | None:
    """Verify the request's Standard Webhooks signature with CALLBACK_SIGNING_SECRET.

    Returns True (valid), False (missing, wrong or outside the 5-minute tolerance) or None when no
    secret is configured. Source: the `standardwebhooks` library's `Webhook.verify`.
    """
    if not settings.CALLBACK_SIGNING_SECRET:
        return None
    try:
        webhook = Webhook(settings.CALLBACK_SIGNING_SECRET)
        webhook.verify(request.body, dict(request.headers), json_parse=False)
    except (WebhookVerificationError, ValueError):
        return False
    return True


@csrf_exempt
@sandbox_only
@require_POST
def callback(request: HttpRequest, rest: str) -> JsonResponse:
    """POST /sandbox/callback/<anything>: receive an AI-reply callback and record it.

    Records the payload and whether its signature verified (SandboxReceipt.signature_valid). Answers
    200, except: 401 when a signing secret is set and the signature does not verify; 400 for a
    `/send-sms` callback without `message`; and a path containing `fail-once` answers 503 to a
    message's first callback (to show a callback retry without a second generation).
    """
    payload = _payload(request)
    valid = signature_check(request)
    retried = _seen_before(SandboxReceipt.Endpoint.CALLBACK, request.headers.get("Idempotency-Key", ""))
    if valid is False:
        status, body = 401, {"error": "signature does not verify"}
    elif rest.rstrip("/").endswith("send-sms") and not (isinstance(payload, dict) and payload.get("message")):
        status, body = 400, {"error": "message is required"}
    elif "fail-once" in rest and not retried:
        status, body = 503, {"error": "Temporarily unavailable (sandbox fail-once callback)"}
    else:
        status, body = 200, {"received": True}
    receipt_record(request, SandboxReceipt.Endpoint.CALLBACK, payload, status, signature_valid=valid)
    return JsonResponse(body, status=status)

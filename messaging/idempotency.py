"""Idempotency keys for POST endpoints: a client's retry returns the first response and creates nothing.

Semantics follow the IETF draft "The Idempotency-Key HTTP Header Field"
(draft-ietf-httpapi-idempotency-key-header) and Stripe's practice:

- The key is the `Idempotency-Key` request header (1-255 printable ASCII characters), scoped to the
  API key that sent it.
- The first request with a key first stores an in-progress record (committed, so a concurrent repeat
  sees it), then runs the view, then stores its response (status and JSON body). A repeat with the
  same method, path and body gets that response again (header `Idempotent-Replayed: true`) and the
  view is not run. The view runs outside any wrapping transaction on purpose: its enqueue happens on
  commit and the answer must show the real outcome (`accepted` when Redis is down).
- The same key with a different body (or another endpoint) answers 422; while the first request is
  still being handled, 409 with `Retry-After: 1`.
- Only completed answers below 500 (except 429) are kept: when the view fails (validation error,
  rate limit, database or Redis outage) the key is released so a retry is handled afresh, as Stripe does
  for requests that fail validation.
- Records are kept IDEMPOTENCY_KEY_TTL_HOURS (at least 24) and then deleted by the periodic retention
  job (retention.idempotency_records_prune).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

from .models import IdempotencyRecord

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


def request_fingerprint(request: HttpRequest) -> str:
    """Return the SHA-256 hex digest of method, path and body.

    A JSON body is hashed in canonical form (sorted keys, no insignificant whitespace), so a client
    that re-serialises the same object differently still matches; any other body is hashed as bytes.
    """
    body = request.body
    try:
        canonical = json.dumps(
            json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except (ValueError, RecursionError):
        canonical = body
    digest = hashlib.sha256()
    digest.update(f"{request.method} {request.path}\n".encode())
    digest.update(canonical)
    return digest.hexdigest()


def _error(status: int, message: str, **headers: str) -> JsonResponse:
    response = JsonResponse({"success": False, "message": message}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _replay(record: IdempotencyRecord) -> JsonResponse:
    response = JsonResponse(record.response_body, status=record.response_status, safe=False)
    response["Idempotent-Replayed"] = "true"
    return response


def _claim(api_key: Any, key: str, fingerprint: str) -> IdempotencyRecord | JsonResponse:
    """Insert the in-progress record, or return the answer owed to a repeat of an earlier request."""
    try:
        with transaction.atomic():
            return IdempotencyRecord.objects.create(api_key=api_key, key=key, request_hash=fingerprint)
    except IntegrityError:
        pass
    record = IdempotencyRecord.objects.filter(api_key=api_key, key=key).first()
    if record is None:  # deleted (released or pruned) in between: one more try
        try:
            with transaction.atomic():
                return IdempotencyRecord.objects.create(api_key=api_key, key=key, request_hash=fingerprint)
        except IntegrityError:
            return _error(
                409, f"A request with this {HEADER} is being handled; retry shortly.", Retry_After="1"
            )
    if record.request_hash != fingerprint:
        return _error(
            422,
            f"This {HEADER} was already used for a different request (another body or endpoint). "
            "Use a new key for a new request.",
        )
    if record.response_status is not None:
        return _replay(record)
    stale = timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_LOCK_SECONDS)
    if record.created_at < stale:
        # The process handling the first request died before answering. Almost always before its
        # view committed anything (the window between the view's commit and storing the response is
        # one UPDATE), so this request takes the key over rather than leaving it blocked for a day.
        taken = IdempotencyRecord.objects.filter(
            pk=record.pk, response_status__isnull=True, created_at=record.created_at
        ).update(created_at=timezone.now())
        if taken:
            record.refresh_from_db()
            return record
    return _error(409, f"A request with this {HEADER} is being handled; retry shortly.", Retry_After="1")


def _release(record: IdempotencyRecord) -> None:
    try:
        IdempotencyRecord.objects.filter(pk=record.pk, response_status__isnull=True).delete()
    except DatabaseError:
        logger.warning(
            "could not release idempotency key %s; it frees itself after %ss",
            record.key,
            settings.IDEMPOTENCY_LOCK_SECONDS,
        )


def _storable(response: HttpResponse) -> bool:
    return response.status_code < 500 and response.status_code != 429 and isinstance(response, JsonResponse)


def idempotent(view: Callable) -> Callable:
    """Decorate a POST API view (under `http.api_view`, which sets request.api_key) with Idempotency-Key.

    Without the header the view runs as usual. With it: see the module docstring. Answers 400 for a
    malformed key, 409 while the first request is in progress, 422 for a key reused with another body.
    Database errors propagate (api_view answers 503).
    """

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        key = request.headers.get(HEADER)
        api_key = getattr(request, "api_key", None)
        if key is None or request.method != "POST" or api_key is None:
            return view(request, *args, **kwargs)
        if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
            message = f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters."
            return JsonResponse(
                {"success": False, "message": message, "errors": {HEADER: [message + " A UUID works well."]}},
                status=400,
            )
        claimed = _claim(api_key, key, request_fingerprint(request))
        if not isinstance(claimed, IdempotencyRecord):
            return claimed
        record = claimed
        try:
            response = view(request, *args, **kwargs)
        except BaseException:
            _release(record)
            raise
        if _storable(response):
            IdempotencyRecord.objects.filter(pk=record.pk).update(
                response_status=response.status_code, response_body=json.loads(response.content)
            )
        else:
            _release(record)
        return response

    return wrapper

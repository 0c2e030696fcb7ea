"""JSON API views. Thin: authenticate, parse, validate, call a service, shape the response.

Errors always answer JSON `{success: false, message, errors?: {field: [reason, ...]}}`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import uuid
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views import defaults
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from . import openapi, queues, ratelimit, services, workspaces
from .idempotency import idempotent
from .models import ApiKey, Message, Status
from .reporting import queue_stats, selectors
from .validation import RequestInvalid, clean_ai_request, clean_email_request, clean_sms_request

logger = logging.getLogger(__name__)

QUEUE_BACKEND_UNAVAILABLE = "Queue backend unavailable. Try again."


class ApiError(Exception):
    """An error answer: HTTP `status`, a `message`, optional per-field `errors` and headers."""

    def __init__(self, status: int, message: str, errors: dict | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.errors, self.headers = status, message, errors, headers or {}


def error_response(
    status: int, message: str, errors: dict | None = None, headers: dict | None = None
) -> JsonResponse:
    """Return the JSON error shape with HTTP `status`."""
    body: dict[str, Any] = {"success": False, "message": message}
    if errors:
        body["errors"] = errors
    response = JsonResponse(body, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _authenticate(request: HttpRequest) -> ApiKey:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    key = workspaces.api_key_authenticate(token.strip()) if scheme.lower() == "bearer" and token else None
    if key is None:
        # One message for missing, malformed, unknown and revoked keys: no oracle.
        raise ApiError(401, "Missing or invalid API key. Send Authorization: Bearer <key>.")
    return key


def _check_rate_limit(api_key: ApiKey) -> None:
    """Count one request against API_RATE_LIMIT_PER_KEY for `api_key`; over it, ApiError 429 + Retry-After.

    When Redis cannot be reached the request is let through (logged): the API keeps accepting and
    storing messages while Redis is down, and the sweep enqueues them later.
    """
    try:
        with queues.unless_recently_unreachable():
            result = ratelimit.hit(settings.API_RATE_LIMIT_PER_KEY, "api-key", str(api_key.pk))
    except redis.exceptions.RedisError as exc:
        logger.warning("rate limit not checked, Redis unavailable: %s", exc)
        return
    if not result.allowed:
        retry_after = max(1, math.ceil(result.retry_after))
        raise ApiError(
            429,
            f"Too many requests for this API key (limit {settings.API_RATE_LIMIT_PER_KEY}). "
            f"Retry after {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )


def parse_json_body(request: HttpRequest) -> dict[str, Any]:
    """Return the request body as a JSON object.

    Raises ApiError 415 (not application/json), 413 (over API_MAX_BODY_BYTES) or 400 (malformed JSON,
    not an object, or nested deeper than MAX_JSON_DEPTH).
    """
    if request.content_type != "application/json":
        raise ApiError(415, "Content-Type must be application/json.")
    length = request.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > settings.API_MAX_BODY_BYTES:
        raise ApiError(413, f"Request body is larger than {settings.API_MAX_BODY_BYTES} bytes.")
    body = request.body
    if len(body) > settings.API_MAX_BODY_BYTES:
        raise ApiError(413, f"Request body is larger than {settings.API_MAX_BODY_BYTES} bytes.")
    try:
        data = json.loads(body)
    except RecursionError as exc:
        raise ApiError(400, f"Request body is nested more than {MAX_JSON_DEPTH} levels deep.") from exc
    except ValueError as exc:
        raise ApiError(400, f"Request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "Request body must be a JSON object.")
    if json_depth(data) > MAX_JSON_DEPTH:
        raise ApiError(400, f"Request body is nested more than {MAX_JSON_DEPTH} levels deep.")
    return data


# Deepest nesting of objects and arrays a request body may have (the top-level object counts as 1).
MAX_JSON_DEPTH = 32


def json_depth(value: Any) -> int:
    """Return how deeply JSON objects and arrays nest in `value` (a scalar is 0, {} or [] is 1).

    Iterative, so a hostile body cannot exhaust the interpreter's recursion limit.
    """
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def api_view(methods: tuple[str, ...], *, auth: bool = True) -> Callable:
    """Decorate an API view: allowed methods, API-key auth (sets request.api_key), the per-key rate
    limit (429 with Retry-After), JSON errors.

    RequestInvalid becomes 400 with field errors; ApiError its own status; a database or Redis
    outage 503. Other exceptions are logged and answered with a JSON 500.
    """

    def decorator(view: Callable) -> Callable:
        @csrf_exempt
        @never_cache
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
            try:
                if request.method not in methods:
                    raise ApiError(
                        405, f"Method {request.method} not allowed.", headers={"Allow": ", ".join(methods)}
                    )
                if auth:
                    request.api_key = _authenticate(request)
                    _check_rate_limit(request.api_key)
                return view(request, *args, **kwargs)
            except ApiError as exc:
                return error_response(exc.status, exc.message, exc.errors, exc.headers)
            except RequestInvalid as exc:
                return error_response(400, exc.message, exc.errors)
            except DatabaseError:
                logger.exception("database error in %s", request.path)
                return error_response(503, "Database unavailable; nothing was stored. Try again.")
            except redis.exceptions.RedisError:
                logger.exception("Redis error in %s", request.path)
                return error_response(503, QUEUE_BACKEND_UNAVAILABLE)

        # Read by tests/test_openapi.py to compare with the OpenAPI document.
        wrapper.api_methods = methods
        wrapper.api_auth = auth
        return wrapper

    return decorator


def _allowed_workspaces(api_key: ApiKey) -> frozenset[str]:
    allowed = getattr(api_key, "allowed_workspaces", None)
    if allowed is None:
        allowed = frozenset(api_key.workspaces.values_list("external_id", flat=True))
    return allowed


def _check_workspace_scope(api_key: ApiKey, workspace_external_id: str) -> None:
    allowed = _allowed_workspaces(api_key)
    if allowed:
        workspace = workspaces.workspace_lookup(workspace_external_id)
        if workspace is None or workspace.external_id not in allowed:
            raise ApiError(403, f"This API key may not send for workspace {workspace_external_id!r}.")


def _accepted(message: Message, noun: str) -> JsonResponse:
    if message.status == Status.SCHEDULED:
        text = f"{noun} scheduled successfully"
    elif message.status == Status.ACCEPTED:
        text = f"{noun} accepted; it will be queued as soon as the queue backend is reachable"
    else:
        text = f"{noun} queued for immediate delivery"
    return JsonResponse(
        {
            "success": True,
            "id": str(message.id),
            "jobId": message.rq_job_id,
            "status": message.status,
            "scheduledFor": message.scheduled_for.isoformat() if message.scheduled_for else None,
            "message": text,
        },
        status=202,
    )


def _accept_one(request: HttpRequest, cleaner: Callable[..., dict[str, Any]], noun: str) -> JsonResponse:
    """Validate one request body with `cleaner`, check the key's workspace scope, store and enqueue it."""
    cleaned = cleaner(parse_json_body(request))
    _check_workspace_scope(request.api_key, cleaned["workspace_external_id"])
    message = services.message_create(api_key=request.api_key, **cleaned)
    return _accepted(message, noun)


@api_view(("POST",))
@idempotent
def schedule_sms(request: HttpRequest) -> JsonResponse:
    """POST /api/schedule-sms: accept one SMS (earlier service's body), answer 202 with its id."""
    return _accept_one(request, clean_sms_request, "SMS")


def _item_result(message: Message) -> dict[str, Any]:
    return {
        "success": True,
        "id": str(message.id),
        "jobId": message.rq_job_id,
        "status": message.status,
        "scheduledFor": message.scheduled_for.isoformat() if message.scheduled_for else None,
    }


def bulk_accept(request: HttpRequest, cleaner: Callable[..., dict[str, Any]]) -> JsonResponse:
    """Validate `{messages: [item, ...]}` item by item and store the valid ones in one bulk insert.

    Answers 202 `{success, accepted, rejected, results: [...]}` where results[i] is the outcome of
    item i: `{success: true, id, jobId, status, scheduledFor}` or `{success: false, message, errors}`.
    Valid items are accepted even when others fail; when none is valid the answer is 400.
    """
    data = parse_json_body(request)
    items = data.get("messages")
    if not isinstance(items, list) or not items:
        raise ApiError(
            400, "Validation failed", {"messages": ["Must be a non-empty array of message objects."]}
        )
    if len(items) > settings.BULK_MAX_ITEMS:
        raise ApiError(
            400,
            "Validation failed",
            {"messages": [f"At most {settings.BULK_MAX_ITEMS} messages per request."]},
        )
    now = timezone.now()
    allowed = _allowed_workspaces(request.api_key)
    workspace_cache: dict = {}
    results: list[dict[str, Any] | None] = [None] * len(items)
    valid: list[tuple[int, dict[str, Any]]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            results[index] = {
                "success": False,
                "message": "Validation failed",
                "errors": {"": ["Must be an object."]},
            }
            continue
        try:
            cleaned = cleaner(item, now=now, workspace_cache=workspace_cache)
            if allowed:
                _check_workspace_scope(request.api_key, cleaned["workspace_external_id"])
        except RequestInvalid as exc:
            results[index] = {"success": False, "message": exc.message, "errors": exc.errors}
            continue
        except ApiError as exc:
            results[index] = {
                "success": False,
                "message": exc.message,
                "errors": {"workspaceId": [exc.message]},
            }
            continue
        valid.append((index, cleaned))
    if valid:
        messages = services.message_create_bulk(
            items=[cleaned for _, cleaned in valid], api_key=request.api_key
        )
        for (index, _), message in zip(valid, messages, strict=True):
            results[index] = _item_result(message)
    accepted = len(valid)
    return JsonResponse(
        {
            "success": accepted > 0,
            "accepted": accepted,
            "rejected": len(items) - accepted,
            "message": f"{accepted} of {len(items)} messages accepted",
            "results": [{"index": i, **r} for i, r in enumerate(results)],
        },
        status=202 if accepted else 400,
    )


@api_view(("POST",))
@idempotent
def schedule_sms_bulk(request: HttpRequest) -> JsonResponse:
    """POST /api/schedule-sms/bulk: up to BULK_MAX_ITEMS SMS bodies in `{messages: [...]}`."""
    return bulk_accept(request, clean_sms_request)


@api_view(("POST",))
@idempotent
def schedule_email(request: HttpRequest) -> JsonResponse:
    """POST /api/schedule-email: accept one email (earlier service's body), answer 202 with its id."""
    return _accept_one(request, clean_email_request, "Email")


def _check_ai_rate_limits(workspace_external_id: str, rate_limit_key: str) -> None:
    """Count one AI request against its rate_limit_key and its workspace; raise ApiError 429 when over.

    Limits: AI_RATE_LIMIT_PER_KEY and AI_RATE_LIMIT_PER_WORKSPACE (or the workspace's own
    `ai_per_minute`). The 429 carries `Retry-After` in whole seconds (rounded up). While Redis is
    unreachable the limits are not checked (logged), so the request is still accepted.
    """
    workspace = workspaces.workspace_lookup(workspace_external_id)
    workspace_key = workspace.external_id if workspace else workspace_external_id
    per_workspace = settings.AI_RATE_LIMIT_PER_WORKSPACE
    if workspace and workspace.ai_per_minute:
        per_workspace = f"{workspace.ai_per_minute}/minute"
    checks = [
        (settings.AI_RATE_LIMIT_PER_KEY, ("ai-key", rate_limit_key), f"rate_limit_key {rate_limit_key!r}"),
        (per_workspace, ("ai-workspace", workspace_key), f"workspace {workspace_key!r}"),
    ]
    for spec, identifiers, what in checks:
        if not spec:
            continue
        try:
            with queues.unless_recently_unreachable():
                outcome = ratelimit.hit(spec, *identifiers)
        except redis.exceptions.RedisError as exc:
            # The limits live in Redis. While it is down the request is still accepted (stored and
            # left for the sweep): refusing it would turn a queue outage into lost requests.
            logger.warning("AI rate limit %s not checked, Redis unavailable: %s", what, exc)
            return
        if not outcome.allowed:
            retry_after = max(1, math.ceil(outcome.retry_after))
            raise ApiError(
                429,
                f"Too many AI requests for {what} (limit {spec}). Retry after {retry_after} s.",
                headers={"Retry-After": str(retry_after)},
            )


@api_view(("POST",))
@idempotent
def ai_response(request: HttpRequest) -> JsonResponse:
    """POST /api/ai-response (and /api/ai-response/enqueue): accept an AI-reply request, answer 202.

    The reply is generated on queue `ai` and POSTed to `callback_url`. 429 with Retry-After when the
    request's rate_limit_key or workspace is over its limit.
    """
    cleaned = clean_ai_request(parse_json_body(request))
    _check_workspace_scope(request.api_key, cleaned["workspace_external_id"])
    _check_ai_rate_limits(cleaned["workspace_external_id"], cleaned["rate_limit_key"])
    message = services.ai_request_create(api_key=request.api_key, **cleaned)
    return _accepted(message, "AI response")


def _message_for_key(request: HttpRequest, message_id: str) -> Message:
    try:
        pk = uuid.UUID(message_id)
    except ValueError as exc:
        raise ApiError(404, "Message not found.") from exc
    message = Message.objects.select_related("workspace").filter(pk=pk).first()
    if message is None:
        raise ApiError(404, "Message not found.")
    allowed = _allowed_workspaces(request.api_key)
    if allowed and message.workspace.external_id not in allowed:
        raise ApiError(404, "Message not found.")
    return message


@api_view(("GET",))
def message_detail(request: HttpRequest, message_id: str) -> JsonResponse:
    """GET /api/messages/<id>: status, attempts, timestamps and last error of one message."""
    message = _message_for_key(request, message_id)
    return JsonResponse({"success": True, **selectors.message_as_dict(message)})


@api_view(("POST",))
@idempotent
def message_cancel(request: HttpRequest, message_id: str) -> JsonResponse:
    """POST /api/messages/<id>/cancel: cancel before sending; 409 once sending, sent or failed."""
    message = _message_for_key(request, message_id)
    try:
        message = services.message_cancel(message=message)
    except services.MessageStateError as exc:
        raise ApiError(409, str(exc)) from exc
    return JsonResponse(
        {"success": True, "message": "Message cancelled", **selectors.message_as_dict(message)}
    )


@api_view(("GET",))
def queue_counts(request: HttpRequest) -> JsonResponse:
    """GET /api/queues: per queue, job counts waiting, active, completed, failed and delayed.

    `delayed` counts scheduled messages and retries waiting for their time, from the database.
    503 when Redis does not answer (the counts would be incomplete).
    """
    numbers = queue_stats.queue_numbers()
    if not all(q.redis_answered for q in numbers):
        raise ApiError(503, QUEUE_BACKEND_UNAVAILABLE)
    result = {
        q.name: {
            "waiting": q.waiting,
            "active": q.active,
            "completed": q.completed,
            "failed": q.failed,
            "delayed": q.delayed,
        }
        for q in numbers
    }
    return JsonResponse({"success": True, "queues": result})


@api_view(("GET",), auth=False)
def health(request: HttpRequest) -> JsonResponse:
    """GET /health: liveness; answers 200 while the process serves requests."""
    return JsonResponse({"status": "ok", "time": timezone.now().isoformat()})


@api_view(("GET",), auth=False)
def health_ready(request: HttpRequest) -> JsonResponse:
    """GET /health/ready: 200 when the database and Redis both answer, else 503 naming which is down."""
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except DatabaseError as exc:
        checks["database"] = f"down: {type(exc).__name__}"
    try:
        queues.get_connection().ping()
        checks["redis"] = "ok"
    except redis.exceptions.RedisError as exc:
        checks["redis"] = f"down: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )


@api_view(("GET",), auth=False)
def openapi_document(request: HttpRequest) -> JsonResponse:
    """GET /api/openapi.json: the OpenAPI 3 document of this API (messaging/openapi.py)."""
    return JsonResponse(openapi.document())


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404 handler: the JSON error shape under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return error_response(404, "Not found.")
    return defaults.page_not_found(request, exception)


@csrf_exempt
def unknown_endpoint(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Catch-all under /api/: the JSON 404 also with DEBUG on (Django's handler404 is skipped then)."""
    return error_response(404, "Not found.")


def server_error(request: HttpRequest) -> HttpResponse:
    """500 handler: the JSON error shape under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return error_response(500, "Internal error; nothing about it was shown to you, and it was logged.")
    return defaults.server_error(request)

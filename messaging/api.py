"""JSON API endpoints. Thin: parse, check the key's workspace scope, validate, call a service, shape
the response. The plumbing (errors, authentication, rate limit, scope) is in messaging/http.py.

Every request that names a workspace goes one way: the workspace ID is read from the body, the API
key's scope is checked (403 before any other field is validated, so a key limited to some workspaces
learns nothing about another workspace's settings from 400s), the workspace is looked up once, and
that Workspace (None when it does not exist yet) is passed to validation, the rate limit and the
service.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import redis
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from . import openapi, queues, ratelimit, services
from .delivery import channels
from .formats import phone_numbers_memoized
from .http import (
    QUEUE_BACKEND_UNAVAILABLE,
    ApiError,
    ApiRequest,
    api_view,
    error_response,
    message_in_scope,
    parse_json_body,
    require_all_workspaces,
    workspace_for_key,
)
from .idempotency import idempotent
from .lib import strictjson
from .models import Message, Status, Workspace
from .reporting import queue_stats, selectors
from .validation import (
    RequestInvalid,
    workspace_id_of,
)


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


def _accept_one(request: ApiRequest, channel: str, noun: str) -> JsonResponse:
    """Check the key's workspace scope, validate one request body with the channel's validator, store
    and enqueue it with its intake service (messaging.delivery.channels)."""
    spec = channels.get(channel)
    data = parse_json_body(request)
    workspace = workspace_for_key(request.api_key, workspace_id_of(data, spec.workspace_field))
    cleaned = spec.clean_request(data, workspace=workspace)
    message = spec.create(api_key=request.api_key, **cleaned)
    return _accepted(message, noun)


@api_view(("POST",))
@idempotent
def schedule_sms(request: ApiRequest) -> JsonResponse:
    """POST /api/schedule-sms: accept one SMS (earlier service's body), answer 202 with its id."""
    return _accept_one(request, "sms", "SMS")


def _item_result(message: Message) -> dict[str, Any]:
    return {
        "success": True,
        "id": str(message.id),
        "jobId": message.rq_job_id,
        "status": message.status,
        "scheduledFor": message.scheduled_for.isoformat() if message.scheduled_for else None,
    }


def bulk_accept(request: ApiRequest, cleaner: Callable[..., dict[str, Any]]) -> JsonResponse:
    """Validate `{messages: [item, ...]}` item by item and store the valid ones in one bulk insert.

    Answers 202 `{success, accepted, rejected, results: [...]}` where results[i] is the outcome of
    item i: `{success: true, id, jobId, status, scheduledFor}` or `{success: false, message, errors}`.
    Valid items are accepted even when others fail; when none is valid the answer is 400. An item
    holding a value no column can store (NaN, a lone surrogate: messaging.lib.strictjson) is refused
    on its own, its errors named by paths within the item (`metadata.score`).
    """
    data = parse_json_body(request, items_field="messages")
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
    # One scope check and one lookup per distinct workspace ID in the request: ID -> Workspace
    # (None when it does not exist yet) or the ApiError refusing it.
    scoped: dict[str, Workspace | ApiError | None] = {}
    results: list[dict[str, Any] | None] = [None] * len(items)
    valid: list[tuple[int, dict[str, Any]]] = []
    # A recipient repeated within the request is parsed once.
    with phone_numbers_memoized():
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                results[index] = {
                    "success": False,
                    "message": "Validation failed",
                    "errors": {"": ["Must be an object."]},
                }
                continue
            unstorable = strictjson.unstorable_values(item)
            if unstorable:
                results[index] = {"success": False, "message": "Validation failed", "errors": unstorable}
                continue
            external_id = workspace_id_of(item, "workspaceId")
            if external_id not in scoped:
                try:
                    scoped[external_id] = workspace_for_key(request.api_key, external_id)
                except ApiError as exc:
                    scoped[external_id] = exc
            workspace = scoped[external_id]
            if isinstance(workspace, ApiError):
                results[index] = {
                    "success": False,
                    "message": workspace.message,
                    "errors": {"workspaceId": [workspace.message]},
                }
                continue
            try:
                cleaned = cleaner(item, now=now, workspace=workspace)
            except RequestInvalid as exc:
                results[index] = {"success": False, "message": exc.message, "errors": exc.errors}
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
def schedule_sms_bulk(request: ApiRequest) -> JsonResponse:
    """POST /api/schedule-sms/bulk: up to BULK_MAX_ITEMS SMS bodies in `{messages: [...]}`."""
    return bulk_accept(request, channels.get("sms").clean_request)


@api_view(("POST",))
@idempotent
def schedule_email(request: ApiRequest) -> JsonResponse:
    """POST /api/schedule-email: accept one email (earlier service's body), answer 202 with its id."""
    return _accept_one(request, "email", "Email")


@api_view(("POST",))
@idempotent
def ai_response(request: ApiRequest) -> JsonResponse:
    """POST /api/ai-response (and /api/ai-response/enqueue): accept an AI-reply request, answer 202.

    The reply is generated on queue `ai` and POSTed to `callback_url`. 429 with Retry-After when the
    request's rate_limit_key (in any spelling), its workspace or its API key is over its AI limit.
    """
    spec = channels.get("ai")
    data = parse_json_body(request)
    workspace = workspace_for_key(request.api_key, workspace_id_of(data, spec.workspace_field))
    cleaned = spec.clean_request(data, workspace=workspace)
    ratelimit.ai_request(
        workspace, cleaned["workspace_external_id"], cleaned["rate_limit_key"], api_key=request.api_key
    )
    message = spec.create(api_key=request.api_key, **cleaned)
    return _accepted(message, "AI response")


def _message_for_key(request: ApiRequest, message_id: str) -> Message:
    try:
        pk = uuid.UUID(message_id)
    except ValueError as exc:
        raise ApiError(404, "Message not found.") from exc
    message = Message.objects.select_related("workspace").filter(pk=pk).first()
    if message is None:
        raise ApiError(404, "Message not found.")
    if not message_in_scope(request.api_key, message):
        raise ApiError(404, "Message not found.")
    return message


@api_view(("GET",))
def message_detail(request: ApiRequest, message_id: str) -> JsonResponse:
    """GET /api/messages/<id>: status, attempts, timestamps and last error of one message."""
    message = _message_for_key(request, message_id)
    return JsonResponse({"success": True, **selectors.message_as_dict(message)})


@api_view(("POST",))
@idempotent
def message_cancel(request: ApiRequest, message_id: str) -> JsonResponse:
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
def queue_counts(request: ApiRequest) -> JsonResponse:
    """GET /api/queues: per queue, job counts waiting, active, completed, failed and delayed.

    `delayed` counts scheduled messages and retries waiting for their time, from the database.
    The numbers are the whole service's, so a key limited to some workspaces gets 403. 503 when
    Redis does not answer (the counts would be incomplete).
    """
    require_all_workspaces(request.api_key, "GET /api/queues")
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
    """GET /api/openapi.json: the OpenAPI 3 document of this API (messaging/openapi/)."""
    return JsonResponse(openapi.document())


@csrf_exempt
def unknown_endpoint(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Catch-all under /api/: the JSON 404 also with DEBUG on (Django's handler404 is skipped then)."""
    return error_response(404, "Not found.")

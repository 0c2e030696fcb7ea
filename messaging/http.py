"""The API's HTTP plumbing: the JSON error shape, body parsing, API-key authentication, the per-key
rate limit, workspace scope checks and the `api_view` decorator that ties them together.

Errors always answer JSON `{success: false, message, errors?: {field: [reason, ...]}}`. The endpoints
themselves are in messaging/api.py.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, cast

import redis
from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.http import http_date
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt

from . import ratelimit, workspaces
from .lib import strictjson
from .lib.groupcommit import CommitTimeout
from .models import ApiKey, Message, Workspace
from .validation import RequestInvalid

logger = logging.getLogger(__name__)

QUEUE_BACKEND_UNAVAILABLE = "Queue backend unavailable. Try again."
# Deepest nesting of objects and arrays a request body may have (the top-level object counts as 1).
MAX_JSON_DEPTH = 32


class ApiRequest(HttpRequest):
    """An authenticated API request (for annotations only; views get a plain HttpRequest).

    `api_view` sets `api_key` before the view runs, on views that require a key.
    """

    api_key: ApiKey


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


def parse_json_body(request: HttpRequest, *, items_field: str | None = None) -> dict[str, Any]:
    """Return the request body as a JSON object.

    Raises ApiError 415 (not application/json), 413 (over API_MAX_BODY_BYTES) or 400 (malformed JSON,
    not an object, or nested deeper than MAX_JSON_DEPTH). A value no column can store (NaN or
    Infinity, a lone surrogate, U+0000: see messaging.lib.strictjson) is a 400 naming its path, e.g.
    `metadata.score`; with `items_field` (bulk: "messages"), those inside `items_field[i]` are left for
    the caller to refuse item by item (strictjson.unstorable_values), and may still hold NonFinite
    markers.
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
        data = strictjson.loads(body)
    except RecursionError as exc:
        raise ApiError(400, f"Request body is nested more than {MAX_JSON_DEPTH} levels deep.") from exc
    except ValueError as exc:
        raise ApiError(400, f"Request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "Request body must be a JSON object.")
    if json_depth(data) > MAX_JSON_DEPTH:
        raise ApiError(400, f"Request body is nested more than {MAX_JSON_DEPTH} levels deep.")
    per_item = items_field is not None and isinstance(data.get(items_field), list)
    checked = {name: value for name, value in data.items() if not (per_item and name == items_field)}
    problems = strictjson.unstorable_values(checked)
    if problems:
        raise RequestInvalid(problems)
    return data


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


# What Django's never_cache sets, written directly: its patch_cache_control parses and rebuilds the
# header on every response, a sixth of the CPU of a GET /health.
_NEVER_CACHE = "max-age=0, no-cache, no-store, must-revalidate, private"


_expires: tuple[int, str] = (0, "")


def _never_cached(response: HttpResponse) -> HttpResponse:
    """Mark an API answer as never to be cached (the headers django.views.decorators.cache.never_cache
    sets: Expires now, Cache-Control max-age=0, no-cache, no-store, must-revalidate, private).

    The Expires date (whole seconds) is formatted once a second.
    """
    global _expires
    if not response.has_header("Expires"):
        now = int(time.time())
        if _expires[0] != now:
            _expires = (now, http_date(now))
        response.headers["Expires"] = _expires[1]
    response.headers["Cache-Control"] = _NEVER_CACHE
    return response


def api_view(methods: tuple[str, ...], *, auth: bool = True) -> Callable:
    """Decorate an API view: allowed methods, API-key auth (sets request.api_key, see ApiRequest),
    the per-key rate limit, JSON errors.

    RequestInvalid becomes 400 with field errors; ratelimit.RateLimited 429 with `Retry-After` (whole
    seconds); ApiError its own status; a database or Redis outage 503, as is a write the group
    committer did not confirm in time (groupcommit.CommitTimeout). Other exceptions propagate to
    Django's 500 handler (server_error: a JSON 500 under /api/).
    """

    def decorator(view: Callable) -> Callable:
        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
            return _never_cached(answer(request, *args, **kwargs))

        def answer(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
            try:
                if request.method not in methods:
                    raise ApiError(
                        405, f"Method {request.method} not allowed.", headers={"Allow": ", ".join(methods)}
                    )
                if auth:
                    api_request = cast(ApiRequest, request)
                    api_request.api_key = _authenticate(request)
                    ratelimit.api_key_ingress(api_request.api_key)
                return view(request, *args, **kwargs)
            except ApiError as exc:
                return error_response(exc.status, exc.message, exc.errors, exc.headers)
            except RequestInvalid as exc:
                return error_response(400, exc.message, exc.errors)
            except ratelimit.RateLimited as exc:
                return error_response(429, exc.message, headers={"Retry-After": str(exc.retry_after_seconds)})
            except CommitTimeout:
                logger.error("no commit confirmed in time in %s", request.path)
                return error_response(
                    503,
                    "The database did not confirm the write in time; the message may or may not be "
                    "stored. Retry with the same Idempotency-Key to be safe.",
                )
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


# --- Workspace scope ------------------------------------------------------------------------------


def workspace_for_key(api_key: ApiKey, external_id: str) -> Workspace | None:
    """Return the workspace a request names (by ID or alias), checking first that `api_key` may use it.

    Looks the workspace up once (workspaces.workspace_lookup, cached): None when `external_id` is ''
    (missing or not a valid ID: validation reports that) or names no workspace yet (it is created on
    first valid use). Raises ApiError 403 unless the key may use it (workspaces.api_key_may_use: a
    key for every workspace may use any; another key only those in its list, never an unknown one).
    """
    workspace = workspaces.workspace_lookup(external_id)
    if external_id and not workspaces.api_key_may_use(api_key, workspace.pk if workspace else None):
        raise ApiError(403, f"This API key may not send for workspace {external_id!r}.")
    return workspace


def message_in_scope(api_key: ApiKey, message: Message) -> bool:
    """True when `api_key` may see `message` (workspaces.api_key_may_use for its workspace)."""
    return workspaces.api_key_may_use(api_key, message.workspace_id)


def require_all_workspaces(api_key: ApiKey, what: str) -> None:
    """Raise ApiError 403 unless `api_key` is for every workspace; `what` names the refused endpoint.

    For answers about the whole service (GET /api/queues counts every workspace's jobs together),
    which a key limited to some workspaces must not see.
    """
    if not api_key.all_workspaces:
        raise ApiError(
            403, f"{what} shows every workspace's numbers: it needs an API key for every workspace."
        )


# --- Django's error handlers (config/urls.py) -----------------------------------------------------


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404 handler: the JSON error shape under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return error_response(404, "Not found.")
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """500 handler: the JSON error shape under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return error_response(500, "Internal error; nothing about it was shown to you, and it was logged.")
    return defaults.server_error(request)

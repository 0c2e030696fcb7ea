"""The OpenAPI 3.0 document of the JSON API, served at GET /api/openapi.json and fuzzed in CI.

Adding an endpoint (see README, "OpenAPI document"): write its operation as a dict in a new section at
the end of this file and register it with `operation(path, method, spec)`; reuse the shared `ERRORS`
responses and `SCHEMAS`. tests/test_openapi.py fails while a URL under /api/ has no operation here, and
tests/test_fuzz_api.py runs schemathesis against every documented operation.

Only declare constraints the API enforces: schemathesis sends data that breaks each declared rule and
expects a 4xx for it.
"""

from __future__ import annotations

import copy
from typing import Any

from django.conf import settings

from . import validation

JSON = "application/json"

# --- Shared schemas and responses -----------------------------------------------------------------

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["success", "message"],
        "properties": {
            "success": {"type": "boolean", "enum": [False]},
            "message": {"type": "string"},
            "errors": {
                "type": "object",
                "description": "Per field: the reasons it was refused.",
                "additionalProperties": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
    "Identifier": {
        "description": "An ID as the client sends it: a string or an integer, stored as its exact string.",
        "anyOf": [
            {"type": "string", "minLength": 1, "maxLength": validation.MAX_ID_LENGTH},
            {"type": "integer"},
        ],
    },
    "Accepted": {
        "type": "object",
        "required": ["success", "id", "jobId", "status", "scheduledFor", "message"],
        "properties": {
            "success": {"type": "boolean", "enum": [True]},
            "id": {"type": "string", "format": "uuid"},
            "jobId": {"type": "string"},
            "status": {"type": "string", "enum": ["accepted", "queued", "scheduled"]},
            "scheduledFor": {"type": "string", "nullable": True, "description": "ISO 8601, UTC."},
            "message": {"type": "string"},
        },
    },
    "DeliveryAttempt": {
        "type": "object",
        "required": ["number", "kind", "startedAt", "durationMs", "httpStatus", "outcome", "error"],
        "properties": {
            "number": {"type": "integer", "minimum": 1},
            "kind": {"type": "string", "enum": ["provider", "generation", "callback"]},
            "startedAt": {"type": "string"},
            "durationMs": {"type": "integer", "minimum": 0},
            "httpStatus": {"type": "integer", "nullable": True},
            "outcome": {"type": "string", "enum": ["success", "transient", "permanent"]},
            "error": {"type": "string", "nullable": True},
        },
    },
    "Message": {
        "type": "object",
        "required": ["id", "channel", "status", "workspaceId", "attempts", "acceptedAt"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "channel": {"type": "string", "enum": ["sms", "email", "ai"]},
            "status": {
                "type": "string",
                "enum": ["accepted", "queued", "scheduled", "sending", "sent", "failed", "cancelled"],
            },
            "workspaceId": {"type": "string"},
            "contactId": {"type": "string"},
            "recipient": {"type": "string"},
            "jobId": {"type": "string"},
            "attempts": {"type": "integer", "minimum": 0},
            "maxAttempts": {"type": "integer", "minimum": 0},
            "lastError": {"type": "string", "nullable": True},
            "scheduledFor": {"type": "string", "nullable": True},
            "nextAttemptAt": {"type": "string", "nullable": True},
            "acceptedAt": {"type": "string", "nullable": True},
            "queuedAt": {"type": "string", "nullable": True},
            "sentAt": {"type": "string", "nullable": True},
            "failedAt": {"type": "string", "nullable": True},
            "cancelledAt": {"type": "string", "nullable": True},
            "segments": {"type": "integer", "nullable": True},
            "encoding": {"type": "string"},
            "deliveryAttempts": {"type": "array", "items": {"$ref": "#/components/schemas/DeliveryAttempt"}},
        },
    },
    "QueueCounts": {
        "type": "object",
        "required": ["waiting", "active", "completed", "failed", "delayed"],
        "properties": {
            name: {"type": "integer", "minimum": 0}
            for name in ("waiting", "active", "completed", "failed", "delayed")
        },
    },
}


def _error(description: str, headers: dict | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        response["headers"] = headers
    return response


ERRORS: dict[str, dict[str, Any]] = {
    "400": _error("A field is missing or invalid (`errors` names it), or the body is not a JSON object."),
    "401": _error("Missing, malformed, unknown or revoked API key (one message for all)."),
    "403": _error("The API key is scoped to other workspaces."),
    "404": _error("No such message (or not visible to this API key)."),
    "405": _error("Method not allowed.", {"Allow": {"required": True, "schema": {"type": "string"}}}),
    "409": _error("The message's status does not allow the action."),
    "413": _error("The request body is larger than API_MAX_BODY_BYTES."),
    "415": _error("Content-Type is not application/json."),
    "429": _error(
        "More requests than API_RATE_LIMIT_PER_KEY for this API key.",
        {"Retry-After": {"required": True, "description": "Seconds to wait.", "schema": {"type": "integer"}}},
    ),
    "503": _error("The database or the queue backend is unavailable; try again."),
}


def errors(*codes: str) -> dict[str, Any]:
    """Return the shared error responses for the given status codes, as a `responses` fragment."""
    return {code: {"$ref": f"#/components/responses/E{code}"} for code in codes}


def ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    """Return a JSON response object with `schema`."""
    return {"description": description, "content": {JSON: {"schema": schema}}}


def json_body(schema: dict[str, Any], example: Any = None) -> dict[str, Any]:
    """Return a required JSON requestBody with `schema` (and `example` when given)."""
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"required": True, "content": {JSON: media}}


AUTHED = ("401", "405", "429", "503")

# --- Registry -------------------------------------------------------------------------------------

PATHS: dict[str, dict[str, Any]] = {}


def operation(path: str, method: str, spec: dict[str, Any]) -> None:
    """Register `spec` (an OpenAPI Operation object) for `method` on `path` (OpenAPI path template)."""
    PATHS.setdefault(path, {})[method.lower()] = spec


MESSAGE_ID = {
    "name": "message_id",
    "in": "path",
    "required": True,
    "description": "The id returned when the message was accepted (a UUID).",
    "schema": {"type": "string", "minLength": 1, "maxLength": 100},
}


def _metadata_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "nullable": True,
        "maxProperties": validation.MAX_METADATA_KEYS,
        "description": (
            f"Extra fields sent to the provider at the top level (never overriding core fields); at most "
            f"{validation.MAX_METADATA_KEYS} keys, {validation.MAX_METADATA_DEPTH} levels and "
            f"{settings.API_MAX_METADATA_BYTES} bytes."
        ),
    }


def _schedule_properties() -> dict[str, Any]:
    return {
        "delay": {
            "type": "number",
            "nullable": True,
            "minimum": 0,
            "maximum": settings.SCHEDULE_MAX_DAYS * 86_400_000,
            "description": "Milliseconds from now; 0 or absent sends now. Not together with scheduledFor.",
        },
        "scheduledFor": {
            "type": "string",
            "nullable": True,
            "description": (
                "ISO 8601 date-time; without an offset it is wall-clock time in the workspace's time zone. "
                f"A past time sends now; at most {settings.SCHEDULE_MAX_DAYS} days ahead."
            ),
        },
    }


# --- Health (no key) ------------------------------------------------------------------------------

operation(
    "/health",
    "get",
    {
        "operationId": "health",
        "summary": "Liveness",
        "security": [],
        "responses": {
            "200": ok(
                {
                    "type": "object",
                    "required": ["status", "time"],
                    "properties": {"status": {"type": "string", "enum": ["ok"]}, "time": {"type": "string"}},
                }
            ),
            **errors("405"),
        },
    },
)

_READY = {
    "type": "object",
    "required": ["status", "checks"],
    "properties": {
        "status": {"type": "string", "enum": ["ready", "unavailable"]},
        "checks": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
operation(
    "/health/ready",
    "get",
    {
        "operationId": "healthReady",
        "summary": "Readiness: the database and Redis both answer",
        "security": [],
        "responses": {"200": ok(_READY), "503": ok(_READY, "Database or Redis is down."), **errors("405")},
    },
)

operation(
    "/api/openapi.json",
    "get",
    {
        "operationId": "openapi",
        "summary": "This document",
        "security": [],
        "responses": {"200": ok({"type": "object"}), **errors("405")},
    },
)

# --- SMS (issue 2) --------------------------------------------------------------------------------


def _schedule_sms_request() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["phoneNumber", "message", "contactId", "workspaceId"],
        "properties": {
            "phoneNumber": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "description": "E.164 (+14155550123), or national in the workspace's default phone region.",
            },
            "message": {"type": "string", "minLength": 1, "maxLength": validation.MAX_SMS_LENGTH},
            "contactId": {"$ref": "#/components/schemas/Identifier"},
            "workspaceId": {"$ref": "#/components/schemas/Identifier"},
            "mediaUrl": {
                "type": "string",
                "nullable": True,
                "maxLength": 2000,
                "description": "http(s) URL (MMS).",
            },
            "metadata": _metadata_schema(),
            **_schedule_properties(),
        },
    }


operation(
    "/api/schedule-sms",
    "post",
    {
        "operationId": "scheduleSms",
        "summary": "Accept one SMS for delivery now or at a time",
        "requestBody": {"$ref": "#/components/requestBodies/ScheduleSms"},
        "responses": {
            "202": {
                **ok({"$ref": "#/components/schemas/Accepted"}, "Stored and queued or scheduled."),
                "links": {
                    "GetMessage": {
                        "operationId": "getMessage",
                        "parameters": {"message_id": "$response.body#/id"},
                    },
                    "CancelMessage": {
                        "operationId": "cancelMessage",
                        "parameters": {"message_id": "$response.body#/id"},
                    },
                },
            },
            **errors("400", "403", "413", "415", *AUTHED),
        },
    },
)

# --- Messages and queues (issue 2) ----------------------------------------------------------------

operation(
    "/api/messages/{message_id}",
    "get",
    {
        "operationId": "getMessage",
        "summary": "Status, attempts and timestamps of one message",
        "parameters": [MESSAGE_ID],
        "responses": {
            "200": ok(
                {
                    "allOf": [
                        {"$ref": "#/components/schemas/Message"},
                        {
                            "type": "object",
                            "required": ["success"],
                            "properties": {"success": {"enum": [True]}},
                        },
                    ]
                }
            ),
            **errors("404", *AUTHED),
        },
    },
)

operation(
    "/api/messages/{message_id}/cancel",
    "post",
    {
        "operationId": "cancelMessage",
        "summary": "Cancel a message before it is sent",
        "parameters": [MESSAGE_ID],
        "responses": {
            "200": ok(
                {
                    "allOf": [
                        {"$ref": "#/components/schemas/Message"},
                        {
                            "type": "object",
                            "required": ["success", "message"],
                            "properties": {"success": {"enum": [True]}, "message": {"type": "string"}},
                        },
                    ]
                }
            ),
            **errors("404", "409", *AUTHED),
        },
    },
)

operation(
    "/api/queues",
    "get",
    {
        "operationId": "queueCounts",
        "summary": "Job counts per queue",
        "responses": {
            "200": ok(
                {
                    "type": "object",
                    "required": ["success", "queues"],
                    "properties": {
                        "success": {"enum": [True]},
                        "queues": {
                            "type": "object",
                            "required": ["sms", "email", "ai"],
                            "additionalProperties": {"$ref": "#/components/schemas/QueueCounts"},
                        },
                    },
                }
            ),
            **errors(*AUTHED),
        },
    },
)

# --- Bulk SMS (issue 7) ---------------------------------------------------------------------------

SCHEMAS["BulkResult"] = {
    "type": "object",
    "required": ["success", "accepted", "rejected", "message", "results"],
    "properties": {
        "success": {"type": "boolean"},
        "accepted": {"type": "integer", "minimum": 0},
        "rejected": {"type": "integer", "minimum": 0},
        "message": {"type": "string"},
        "results": {
            "type": "array",
            "description": "One per item, in order: accepted (id, jobId, status) or refused (message, errors).",
            "items": {
                "type": "object",
                "required": ["index", "success"],
                "properties": {
                    "index": {"type": "integer", "minimum": 0},
                    "success": {"type": "boolean"},
                    "id": {"type": "string", "format": "uuid"},
                    "jobId": {"type": "string"},
                    "status": {"type": "string", "enum": ["accepted", "queued", "scheduled"]},
                    "scheduledFor": {"type": "string", "nullable": True},
                    "message": {"type": "string"},
                    "errors": {"type": "object"},
                },
            },
        },
    },
}


def _bulk_request() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["messages"],
        "properties": {
            "messages": {
                "type": "array",
                "minItems": 1,
                "maxItems": settings.BULK_MAX_ITEMS,
                # Items are not constrained here: each is validated on its own like a schedule-sms body
                # and a bad one is reported in `results` while the good ones are accepted.
                "items": {"description": "A schedule-sms body (see ScheduleSms)."},
            }
        },
    }


operation(
    "/api/schedule-sms/bulk",
    "post",
    {
        "operationId": "scheduleSmsBulk",
        "summary": "Accept up to BULK_MAX_ITEMS SMS in one request",
        "requestBody": {"$ref": "#/components/requestBodies/ScheduleSmsBulk"},
        "responses": {
            "202": ok({"$ref": "#/components/schemas/BulkResult"}, "At least one item was accepted."),
            "400": {
                "description": "No item was valid (the results say why), or `messages` is missing or too long.",
                "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
            **errors("413", "415", *AUTHED),
        },
    },
)

# --- Email and AI replies (issue 3) -------------------------------------------------------------


def _schedule_email_request() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["to", "subject", "html", "contactId", "workspaceId"],
        "properties": {
            "to": {
                "type": "string",
                "minLength": 1,
                "maxLength": 320,
                "description": "An address that can be sent to; an internationalised domain is IDNA-encoded.",
            },
            "subject": {
                "type": "string",
                "minLength": 1,
                "maxLength": validation.MAX_EMAIL_SUBJECT_LENGTH,
                "description": "No CR, LF or NUL.",
            },
            "html": {"type": "string", "minLength": 1, "maxLength": validation.MAX_EMAIL_HTML_LENGTH},
            "contactId": {"$ref": "#/components/schemas/Identifier"},
            "workspaceId": {"$ref": "#/components/schemas/Identifier"},
            "metadata": _metadata_schema(),
            **_schedule_properties(),
        },
    }


def _ai_response_request() -> dict[str, Any]:
    return {
        "type": "object",
        "required": [
            "workspace_id",
            "contact_id",
            "message_id",
            "message_text",
            "callback_url",
            "rate_limit_key",
        ],
        "properties": {
            "workspace_id": {"$ref": "#/components/schemas/Identifier"},
            "contact_id": {"$ref": "#/components/schemas/Identifier"},
            "message_id": {"$ref": "#/components/schemas/Identifier"},
            "message_text": {"type": "string", "minLength": 1, "maxLength": validation.MAX_AI_MESSAGE_LENGTH},
            "callback_url": {
                "type": "string",
                "minLength": 1,
                "maxLength": 2000,
                "description": (
                    "http(s) URL the reply is POSTed to; refused when its host is or resolves to a loopback, "
                    "private, link-local or other non-public address (unless in CALLBACK_ALLOWED_HOSTS)."
                ),
            },
            "rate_limit_key": {"type": "string", "minLength": 1, "maxLength": 200},
            "phone_number": {
                "type": "string",
                "nullable": True,
                "maxLength": 64,
                "description": "Optional: `to` of a callback whose URL ends in /send-sms.",
            },
        },
    }


operation(
    "/api/schedule-email",
    "post",
    {
        "operationId": "scheduleEmail",
        "summary": "Accept one email for delivery now or at a time",
        "requestBody": {"$ref": "#/components/requestBodies/ScheduleEmail"},
        "responses": {
            "202": ok({"$ref": "#/components/schemas/Accepted"}, "Stored and queued or scheduled."),
            **errors("400", "403", "413", "415", *AUTHED),
        },
    },
)

for _path, _operation_id in (
    ("/api/ai-response", "aiResponse"),
    ("/api/ai-response/enqueue", "aiResponseEnqueue"),
):
    operation(
        _path,
        "post",
        {
            "operationId": _operation_id,
            "summary": "Accept an AI-reply request; the reply is generated and POSTed to callback_url",
            "requestBody": {"$ref": "#/components/requestBodies/AiResponse"},
            "responses": {
                "202": ok({"$ref": "#/components/schemas/Accepted"}, "Stored and queued."),
                **errors("400", "403", "413", "415", *AUTHED),
            },
        },
    )

# --- Request bodies, referenced above (add yours here too) ----------------------------------------

REQUEST_BODIES: dict[str, Any] = {
    "ScheduleSms": _schedule_sms_request,
    "ScheduleSmsBulk": _bulk_request,
    "ScheduleEmail": _schedule_email_request,
    "AiResponse": _ai_response_request,
}
# A valid body per request, used by the fuzzer's example phase and in the rendered document.
REQUEST_EXAMPLES: dict[str, Any] = {
    "ScheduleEmail": {
        "to": "rita@example.com",
        "subject": "Your appointment",
        "html": "<p>See you on Monday.</p>",
        "contactId": "c-1",
        "workspaceId": "66338",
    },
    "AiResponse": {
        "workspace_id": "66338",
        "contact_id": "c-1",
        "message_id": "m-1",
        "message_text": "Do you open on Sundays?",
        "callback_url": "https://hooks.example.com/ai-reply",
        "rate_limit_key": "66338:c-1",
    },
    "ScheduleSms": {
        "phoneNumber": "+14155550123",
        "message": "Hello",
        "contactId": "c-1",
        "workspaceId": "66338",
    },
}


# --- Idempotency-Key (every POST operation) --------------------------------------------------------

IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "Makes a retry safe: a repeat with the same key (scoped to the API key) returns the first answer "
        "and creates nothing; the same key with another body is a 422, while the first is in progress a "
        f"409. Kept at least {settings.IDEMPOTENCY_KEY_TTL_HOURS} h. A UUID works well."
    ),
    "schema": {"type": "string", "pattern": "^[\\x21-\\x7E]([\\x20-\\x7E]{0,253}[\\x21-\\x7E])?$"},
}
IDEMPOTENCY_RESPONSES = {
    "EIdempotencyInProgress": _error(
        "A request with this Idempotency-Key is still being handled.",
        {"Retry-After": {"required": True, "description": "Seconds to wait.", "schema": {"type": "integer"}}},
    ),
    "EIdempotencyMismatch": _error("This Idempotency-Key was already used with another body or endpoint."),
}


def _with_idempotency_keys(paths: dict[str, Any]) -> dict[str, Any]:
    """Add the Idempotency-Key header and its 400/409/422 answers to every POST operation in `paths`."""
    for operations in paths.values():
        spec = operations.get("post")
        if spec is None:
            continue
        spec.setdefault("parameters", []).append(copy.deepcopy(IDEMPOTENCY_KEY))
        spec["responses"].setdefault("400", {"$ref": "#/components/responses/E400"})  # a malformed key
        spec["responses"].setdefault("409", {"$ref": "#/components/responses/EIdempotencyInProgress"})
        spec["responses"].setdefault("422", {"$ref": "#/components/responses/EIdempotencyMismatch"})
    return paths


def document() -> dict[str, Any]:
    """Return the whole OpenAPI 3.0.3 document as a dict (built per call: limits come from settings)."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Queue service API",
            "version": "1",
            "description": (
                "Outbound SMS, email and AI-reply requests. Every endpoint except the health checks and this "
                "document needs `Authorization: Bearer <key>`. Errors are `{success: false, message, errors?}`."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": _with_idempotency_keys(copy.deepcopy(PATHS)),
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "schemas": copy.deepcopy(SCHEMAS),
            "responses": {
                **{f"E{code}": copy.deepcopy(response) for code, response in ERRORS.items()},
                **copy.deepcopy(IDEMPOTENCY_RESPONSES),
            },
            "requestBodies": {
                name: json_body(build(), REQUEST_EXAMPLES.get(name)) for name, build in REQUEST_BODIES.items()
            },
        },
    }

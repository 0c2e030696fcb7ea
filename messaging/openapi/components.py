"""Shared parts of the OpenAPI document: schemas, error responses, small builders and the registry
of operations (`operation`, filled by openapi/paths.py)."""

from __future__ import annotations

from typing import Any

from .. import validation

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
        "description": (
            "An ID as the client sends it: a string or an integer, stored as its exact string. A string "
            "is not blank and holds printable characters only: no control characters (CR, LF, TAB, "
            "NUL, ...), format characters (bidi controls, zero-width characters) or separators other "
            "than the ASCII space."
        ),
        "anyOf": [
            {"type": "string", "minLength": 1, "maxLength": validation.MAX_ID_LENGTH},
            {"type": "integer"},
        ],
    },
    "WorkspaceId": {
        "description": (
            "A workspace ID: an Identifier that, as a number, is at least 1 and, as a string, does not "
            "start or end with whitespace (the earlier service's rule)."
        ),
        "anyOf": [
            {
                "type": "string",
                "minLength": 1,
                "maxLength": validation.MAX_ID_LENGTH,
                "pattern": r"^\S(.*\S)?$",
            },
            {"type": "integer", "minimum": 1},
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


def error_spec(description: str, headers: dict | None = None) -> dict[str, Any]:
    """Return a response object with the shared Error schema (and `headers` when given)."""
    response: dict[str, Any] = {
        "description": description,
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        response["headers"] = headers
    return response


ERRORS: dict[str, dict[str, Any]] = {
    "400": error_spec("A field is missing or invalid (`errors` names it), or the body is not a JSON object."),
    "401": error_spec("Missing, malformed, unknown or revoked API key (one message for all)."),
    "403": error_spec(
        "The API key is limited to other workspaces (GET /api/queues: it is not a key for every workspace)."
    ),
    "404": error_spec("No such message (or not visible to this API key)."),
    "405": error_spec("Method not allowed.", {"Allow": {"required": True, "schema": {"type": "string"}}}),
    "409": error_spec("The message's status does not allow the action."),
    "413": error_spec("The request body is larger than API_MAX_BODY_BYTES."),
    "415": error_spec("Content-Type is not application/json."),
    "429": error_spec(
        "More requests than API_RATE_LIMIT_PER_KEY for this API key (AI requests: also the AI limits per "
        "rate_limit_key, workspace and API key).",
        {"Retry-After": {"required": True, "description": "Seconds to wait.", "schema": {"type": "integer"}}},
    ),
    "503": error_spec("The database or the queue backend is unavailable; try again."),
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

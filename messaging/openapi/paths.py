"""The operations of the OpenAPI document, one `operation(path, method, spec)` call each, registered
when this module is imported. Request bodies are referenced by name (openapi/bodies.py)."""

from __future__ import annotations

from .components import AUTHED, JSON, SCHEMAS, errors, ok, operation

MESSAGE_ID = {
    "name": "message_id",
    "in": "path",
    "required": True,
    "description": "The id returned when the message was accepted (a UUID).",
    "schema": {"type": "string", "minLength": 1, "maxLength": 100},
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

# --- SMS ------------------------------------------------------------------------------------------

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

# --- Messages and queues --------------------------------------------------------------------------

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
            **errors("403", *AUTHED),
        },
    },
)

# --- Bulk SMS -------------------------------------------------------------------------------------

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

# --- Email and AI replies -------------------------------------------------------------------------

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

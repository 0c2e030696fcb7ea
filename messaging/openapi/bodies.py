"""Request bodies of the OpenAPI document: one builder per body (built per call, since limits come
from settings) and a valid example of each."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from .. import validation


def _metadata_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "nullable": True,
        "maxProperties": validation.MAX_METADATA_KEYS,
        "description": (
            f"Extra fields sent to the provider at the top level (never overriding core fields; keys the "
            f"provider reads as sender, recipients or routing are refused, see README); at most "
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
                f"A past time since 1970 sends now; at most {settings.SCHEDULE_MAX_DAYS} days ahead."
            ),
        },
    }


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
            "workspaceId": {"$ref": "#/components/schemas/WorkspaceId"},
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
            "workspaceId": {"$ref": "#/components/schemas/WorkspaceId"},
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
            "workspace_id": {"$ref": "#/components/schemas/WorkspaceId"},
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
            "rate_limit_key": {
                "type": "string",
                "minLength": 1,
                "maxLength": validation.MAX_RATE_LIMIT_KEY_LENGTH,
                "description": "Printable characters only (as Identifier).",
            },
            "phone_number": {
                "type": "string",
                "nullable": True,
                "maxLength": 64,
                "description": "Optional: `to` of a callback whose URL ends in /send-sms.",
            },
        },
    }


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

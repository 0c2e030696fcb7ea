"""Validation of incoming message requests: shapes, E.164 numbers, SMS segments, schedule times,
email addresses and AI callback URLs (the number, segment and address formats are in
messaging.formats).

Every validator collects problems per field and raises `RequestInvalid` with
`errors = {field: [reason, ...]}`, so the API can answer 400 with all of them at once. The dashboard's
test-send forms call the same functions. Validation does no database lookups: the caller passes the
request's Workspace (or None for one not created yet), whose time zone and default phone region
apply.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.utils import timezone

from .formats import (
    MAX_ID_LENGTH,
    check_identifier,
    check_workspace_id,
    normalize_email_address,
    normalize_phone_number,
    parse_scheduled_for,
    sms_segments,
)
from .lib import netguard, strictjson
from .models import Workspace
from .providers import metadata as provider_metadata

MAX_RATE_LIMIT_KEY_LENGTH = 200  # characters
MAX_SMS_LENGTH = 1600  # characters; about 10 concatenated segments of UCS-2, 20 of GSM-7 (Twilio's cap)
MAX_METADATA_KEYS = 50
MAX_METADATA_DEPTH = 5


class RequestInvalid(Exception):
    """Raised with `errors`: a dict of field name to a list of human-readable reasons."""

    def __init__(self, errors: dict[str, list[str]], message: str = "Validation failed"):
        super().__init__(message)
        self.errors = errors
        self.message = message


@dataclass
class Errors:
    """Collects field errors while validating; `raise_if_any()` raises RequestInvalid."""

    items: dict[str, list[str]] = field(default_factory=dict)

    def add(self, name: str, reason: str) -> None:
        self.items.setdefault(name, []).append(reason)

    def raise_if_any(self) -> None:
        if self.items:
            raise RequestInvalid(self.items)


# --- Identifiers ----------------------------------------------------------------------------------
# What an identifier may hold, and why: messaging.formats.check_identifier.


def clean_identifier(
    value: Any,
    name: str,
    errors: Errors,
    *,
    required: bool = True,
    max_length: int = MAX_ID_LENGTH,
    integers: bool = True,
) -> str:
    """Return an ID sent as a JSON string or integer as its exact string form ('' when absent or bad).

    Integers (when `integers`) become their decimal string (66338 -> "66338"); booleans, floats,
    objects and empty strings are errors. Strings are kept exactly (no trimming): at most
    `max_length` characters, not blank, every character printable (formats.check_identifier).
    Problems are recorded on `name`.
    """
    if value is None or value == "":
        if required:
            errors.add(name, "This field is required.")
        return ""
    if not integers and not isinstance(value, str):
        errors.add(name, "Must be a string.")
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        errors.add(name, "Must be a string or an integer.")
        return ""
    text = str(value)
    try:
        check_identifier(text, max_length)
    except ValueError as exc:
        errors.add(name, str(exc))
        return ""
    return text


def clean_workspace_id(value: Any, name: str, errors: Errors) -> str:
    """Return a workspace ID (field `name`) as its exact string, or '' after recording why it is bad.

    The earlier service's rule on top of clean_identifier's: an integer must be >= 1, and a string
    must not start or end with whitespace (so `0`, `-1`, `" "` and `" 66338"` are refused).
    """
    if isinstance(value, int) and not isinstance(value, bool) and value < 1:
        errors.add(name, "Must be at least 1 when it is a number.")
        return ""
    if isinstance(value, str) and value:
        try:
            check_workspace_id(value, MAX_ID_LENGTH)
        except ValueError as exc:
            errors.add(name, str(exc))
            return ""
        return value
    return clean_identifier(value, name, errors)


def clean_text(value: Any, name: str, errors: Errors, *, max_length: int, required: bool = True) -> str:
    """Return a string field, or '' after recording why it is missing, empty, not a string or too long."""
    if value is None:
        if required:
            errors.add(name, "This field is required.")
        return ""
    if not isinstance(value, str):
        errors.add(name, "Must be a string.")
        return ""
    if required and not value.strip():
        errors.add(name, "Must not be empty.")
        return ""
    if len(value) > max_length:
        errors.add(name, f"Must be at most {max_length} characters (got {len(value)}).")
        return ""
    return value


def clean_metadata(value: Any, errors: Errors, name: str = "metadata", *, channel: str = "") -> dict:
    """Return metadata as a dict: a JSON object of at most MAX_METADATA_KEYS keys, MAX_METADATA_DEPTH
    levels and API_MAX_METADATA_BYTES bytes of compact JSON; else record why and return {}.

    With `channel` ("sms", "email"), a top-level key on that provider's deny list (sender, recipients,
    routing: messaging.providers.metadata) is an error on `metadata.<key>`.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.add(name, "Must be a JSON object.")
        return {}
    if len(value) > MAX_METADATA_KEYS:
        errors.add(name, f"Must have at most {MAX_METADATA_KEYS} keys.")
        return {}
    if _depth(value) > MAX_METADATA_DEPTH:
        errors.add(name, f"Must be nested at most {MAX_METADATA_DEPTH} levels deep.")
        return {}
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > settings.API_MAX_METADATA_BYTES:
        errors.add(name, f"Must be at most {settings.API_MAX_METADATA_BYTES} bytes as JSON (got {size}).")
        return {}
    refused = provider_metadata.denied_keys(channel, value)
    for key in refused:
        errors.add(
            strictjson.path_join(name, key),
            "Not allowed in metadata: the provider would read it as the sender, recipients or routing "
            f"of the message ({provider_metadata.DENIED_KEYS_SETTING[channel]}).",
        )
    return {} if refused else value


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def clean_url(value: Any, name: str, errors: Errors, *, required: bool = False) -> str:
    """Return an absolute http(s) URL, or '' after recording why it is not one."""
    text = clean_text(value, name, errors, max_length=2000, required=required)
    if not text:
        return ""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        errors.add(name, "Must be an absolute http or https URL.")
        return ""
    return text


# --- Schedule times -------------------------------------------------------------------------------


def clean_schedule(
    delay: Any, scheduled_for: Any, tz_name: str, errors: Errors, *, now: datetime | None = None
) -> datetime | None:
    """Return the aware UTC send time, or None to send now.

    - `delay` is milliseconds from now (a non-negative number); 0 means now.
    - `scheduled_for` is ISO 8601. With an offset or "Z" it is exact; without one it is wall-clock time
      in the workspace's IANA zone `tz_name`. A wall-clock time that does not exist (skipped by a DST
      change) or occurs twice (repeated by one) is an error rather than a guess.
    - A time in the past sends now; more than SCHEDULE_MAX_DAYS ahead is an error, and so is one
      before 1970-01-01 UTC (a placeholder date) or one that leaves years 1-9999 in UTC; both
      fields at once is an error. Never raises: every problem is recorded on `errors`.
    """
    now = now or timezone.now()
    has_delay = delay is not None
    has_time = scheduled_for not in (None, "")
    if has_delay and has_time:
        errors.add("scheduledFor", "Send either delay or scheduledFor, not both.")
        return None
    when: datetime | None = None
    if has_delay:
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not math.isfinite(delay):
            errors.add("delay", "Must be a number of milliseconds.")
            return None
        if delay < 0:
            errors.add("delay", "Must not be negative.")
            return None
        if delay > settings.SCHEDULE_MAX_DAYS * 86_400_000:
            errors.add("delay", f"Must be at most {settings.SCHEDULE_MAX_DAYS} days.")
            return None
        if delay == 0:
            return None
        when = now + timedelta(milliseconds=delay)
    elif has_time:
        when = _parse_scheduled_for(scheduled_for, tz_name, errors)
        if when is None:
            return None
        if when - now > timedelta(days=settings.SCHEDULE_MAX_DAYS):
            errors.add("scheduledFor", f"Must be at most {settings.SCHEDULE_MAX_DAYS} days ahead.")
            return None
    if when is None or when <= now:
        return None
    return when.astimezone(UTC)


def _parse_scheduled_for(value: Any, tz_name: str, errors: Errors) -> datetime | None:
    """`value` as an aware UTC datetime (formats.parse_scheduled_for), or None after recording why not."""
    if not isinstance(value, str):
        errors.add("scheduledFor", "Must be an ISO 8601 date-time string.")
        return None
    try:
        return parse_scheduled_for(value, tz_name)
    except ValueError as exc:
        errors.add("scheduledFor", str(exc))
        return None


# --- Whole requests -------------------------------------------------------------------------------


def workspace_id_of(data: dict[str, Any], name: str) -> str:
    """Return the workspace ID that a request body names in field `name`, as its exact string, or ''
    when the field is missing or not a valid ID. Never raises.

    The API reads it before validating anything else, to check the API key's scope and look the
    workspace up once; the clean_* functions then report what is wrong with the field, if anything.
    """
    return clean_workspace_id(data.get(name), name, Errors())


def _zone_and_region(workspace: Workspace | None) -> tuple[str, str]:
    """(IANA time zone, default phone region) of `workspace`; UTC and none for a workspace not
    created yet."""
    return ("UTC", "") if workspace is None else (workspace.timezone, workspace.default_phone_region)


def clean_sms_request(
    data: dict[str, Any], *, workspace: Workspace | None, now: datetime | None = None
) -> dict[str, Any]:
    """Validate an SMS request body (the earlier service's shape) and return `message_create` kwargs.

    Input: `{phoneNumber, message, contactId, workspaceId, delay?(ms), scheduledFor?, mediaUrl?,
    metadata?}`. `workspace` is the one `workspaceId` names, looked up by the caller (None when it
    does not exist yet): its time zone reads `scheduledFor` without an offset and its default phone
    region reads numbers without a country code. Output keys: channel, workspace (as given),
    workspace_external_id, contact_id, recipient (E.164), body, media_url, metadata, scheduled_for
    (aware UTC or None), segments, encoding. Raises RequestInvalid with per-field reasons.
    """
    errors = Errors()
    workspace_id = clean_workspace_id(data.get("workspaceId"), "workspaceId", errors)
    contact_id = clean_identifier(data.get("contactId"), "contactId", errors)
    body = clean_text(data.get("message"), "message", errors, max_length=MAX_SMS_LENGTH)
    media_url = clean_url(data.get("mediaUrl"), "mediaUrl", errors)
    metadata = clean_metadata(data.get("metadata"), errors, channel="sms")
    tz_name, region = _zone_and_region(workspace)
    phone = clean_text(data.get("phoneNumber"), "phoneNumber", errors, max_length=64)
    recipient = ""
    if phone:
        try:
            recipient = normalize_phone_number(phone, region)
        except ValueError as exc:
            errors.add("phoneNumber", str(exc))
    scheduled_for = clean_schedule(data.get("delay"), data.get("scheduledFor"), tz_name, errors, now=now)
    errors.raise_if_any()
    encoding, segments = sms_segments(body)
    return {
        "channel": "sms",
        "workspace": workspace,
        "workspace_external_id": workspace_id,
        "contact_id": contact_id,
        "recipient": recipient,
        "body": body,
        "media_url": media_url,
        "metadata": metadata,
        "scheduled_for": scheduled_for,
        "segments": segments,
        "encoding": encoding,
    }


# --- Email ----------------------------------------------------------------------------------------

MAX_EMAIL_SUBJECT_LENGTH = 998  # RFC 5322 line limit
MAX_EMAIL_HTML_LENGTH = 1_000_000


def clean_email_request(
    data: dict[str, Any], *, workspace: Workspace | None, now: datetime | None = None
) -> dict[str, Any]:
    """Validate an email request body (the earlier service's shape) and return `message_create` kwargs.

    Input: `{to, subject, html, contactId, workspaceId, delay?(ms), scheduledFor?, metadata?}`.
    `workspace` is the one `workspaceId` names (None when it does not exist yet); its time zone reads
    `scheduledFor` without an offset. Output keys: channel, workspace (as given),
    workspace_external_id, contact_id, recipient (ASCII address), subject, body (the html), metadata,
    scheduled_for (aware UTC or None). A CR or LF in the subject is an error (it would let a client
    add mail headers). Raises RequestInvalid with per-field reasons.
    """
    errors = Errors()
    workspace_id = clean_workspace_id(data.get("workspaceId"), "workspaceId", errors)
    contact_id = clean_identifier(data.get("contactId"), "contactId", errors)
    subject = clean_text(data.get("subject"), "subject", errors, max_length=MAX_EMAIL_SUBJECT_LENGTH)
    if subject and any(c in subject for c in "\r\n\0"):
        errors.add("subject", "Must not contain line breaks (CR or LF) or NUL characters.")
        subject = ""
    html = clean_text(data.get("html"), "html", errors, max_length=MAX_EMAIL_HTML_LENGTH)
    metadata = clean_metadata(data.get("metadata"), errors, channel="email")
    address = clean_text(data.get("to"), "to", errors, max_length=320)
    recipient = ""
    if address:
        try:
            recipient = normalize_email_address(address.strip())
        except ValueError as exc:
            errors.add("to", str(exc))
    tz_name, _ = _zone_and_region(workspace)
    scheduled_for = clean_schedule(data.get("delay"), data.get("scheduledFor"), tz_name, errors, now=now)
    errors.raise_if_any()
    return {
        "channel": "email",
        "workspace": workspace,
        "workspace_external_id": workspace_id,
        "contact_id": contact_id,
        "recipient": recipient,
        "subject": subject,
        "body": html,
        "metadata": metadata,
        "scheduled_for": scheduled_for,
    }


# --- AI replies -----------------------------------------------------------------------------------

MAX_AI_MESSAGE_LENGTH = 8000


def clean_callback_url(value: Any, name: str, errors: Errors) -> str:
    """Return a callback URL that passes the SSRF guard (see messaging.lib.netguard), or '' after an error.

    A host that does not resolve right now is accepted: the guard runs again before every send, and
    a DNS outage should not refuse requests.
    """
    url = clean_url(value, name, errors, required=True)
    if not url:
        return ""
    try:
        netguard.check_url(url)
    except netguard.UnresolvableHost:
        pass
    except netguard.UnsafeUrl as exc:
        errors.add(name, f"Refused: {exc}.")
        return ""
    return url


def clean_ai_request(data: dict[str, Any], *, workspace: Workspace | None) -> dict[str, Any]:
    """Validate an AI-reply request (the earlier service's shape) and return `ai_request_create` kwargs.

    Input: `{workspace_id, contact_id, message_id, message_text, callback_url, rate_limit_key,
    phone_number?}` (`phone_number` is optional and only used as `to` of a `/send-sms` callback).
    `workspace` is the one `workspace_id` names (None when it does not exist yet); its default phone
    region reads a phone number without a country code. Output keys: workspace (as given),
    workspace_external_id, contact_id, external_message_id, body, callback_url, rate_limit_key,
    phone_number (E.164 or ''). Raises RequestInvalid with per-field reasons.
    """
    errors = Errors()
    workspace_id = clean_workspace_id(data.get("workspace_id"), "workspace_id", errors)
    contact_id = clean_identifier(data.get("contact_id"), "contact_id", errors)
    message_id = clean_identifier(data.get("message_id"), "message_id", errors)
    text = clean_text(data.get("message_text"), "message_text", errors, max_length=MAX_AI_MESSAGE_LENGTH)
    rate_limit_key = clean_identifier(
        data.get("rate_limit_key"),
        "rate_limit_key",
        errors,
        max_length=MAX_RATE_LIMIT_KEY_LENGTH,
        integers=False,
    )
    callback_url = clean_callback_url(data.get("callback_url"), "callback_url", errors)
    phone_number = ""
    phone = clean_text(data.get("phone_number"), "phone_number", errors, max_length=64, required=False)
    if phone:
        _, region = _zone_and_region(workspace)
        try:
            phone_number = normalize_phone_number(phone, region)
        except ValueError as exc:
            errors.add("phone_number", str(exc))
    errors.raise_if_any()
    return {
        "workspace": workspace,
        "workspace_external_id": workspace_id,
        "contact_id": contact_id,
        "external_message_id": message_id,
        "body": text,
        "callback_url": callback_url,
        "rate_limit_key": rate_limit_key,
        "phone_number": phone_number,
    }

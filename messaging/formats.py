"""Formats of what clients send, each checked or converted by one pure function: E.164 phone numbers,
SMS segment counts, sendable email addresses, identifiers, schedule times. They raise ValueError with a readable reason (or return
a value); messaging.validation turns those into field errors.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import zoneinfo
from collections.abc import Iterator
from datetime import UTC, datetime

import phonenumbers
from email_validator import EmailNotValidError, validate_email

# (number as sent, default region) -> E.164, or the ValueError reason; set while a bulk request is
# validated (see phone_numbers_memoized).
_phone_memo: contextvars.ContextVar[dict[tuple[str, str], tuple[bool, str]] | None] = contextvars.ContextVar(
    "phone_memo", default=None
)


@contextlib.contextmanager
def phone_numbers_memoized() -> Iterator[None]:
    """Within the block, normalize_phone_number parses each distinct (number, region) once.

    For a bulk request, whose items often repeat a recipient. The memo lives only as long as the
    block: phonenumbers' answer for a number is fixed for the process, but a memo kept across requests
    would only grow.
    """
    token = _phone_memo.set({})
    try:
        yield
    finally:
        _phone_memo.reset(token)


def normalize_phone_number(value: str, default_region: str = "") -> str:
    """Return `value` as an E.164 string ("+14155550123").

    A number without a country code is read in `default_region` (ISO 3166 alpha-2, e.g. "US").
    Raises ValueError with a readable reason when the number cannot be parsed or is not a valid number.
    Source: libphonenumber via the `phonenumbers` package.
    """
    memo = _phone_memo.get()
    if memo is None:
        return _normalize_phone_number(value, default_region)
    key = (value, default_region)
    known = memo.get(key)
    if known is None:
        try:
            known = memo[key] = (True, _normalize_phone_number(value, default_region))
        except ValueError as exc:
            memo[key] = (False, str(exc))
            raise
    valid, text = known
    if not valid:
        raise ValueError(text)
    return text


def _normalize_phone_number(value: str, default_region: str) -> str:
    try:
        number = phonenumbers.parse(value, default_region.upper() or None)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            raise ValueError(
                "Has no country code (start with + and the country code, e.g. +14155550123), "
                "and the workspace has no default phone region."
            ) from exc
        raise ValueError("Is not a phone number.") from exc
    if not phonenumbers.is_valid_number(number):
        raise ValueError("Is not a valid phone number.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# GSM 03.38 basic character set and the extension table (each extension character takes two septets).
_GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = set("^{}\\[~]|€\f")


def sms_segments(text: str) -> tuple[str, int]:
    """Return (encoding, segment count) for an SMS body.

    Encoding is "GSM-7" when every character is in the GSM 03.38 basic or extension table, else
    "UCS-2". One segment holds 160 septets (GSM-7) or 70 UTF-16 code units (UCS-2); a concatenated
    message spends a 6-byte user data header per part, leaving 153 septets or 67 code units.
    Source: 3GPP TS 23.038 and TS 23.040.
    """
    if all(c in _GSM7_BASIC or c in _GSM7_EXTENSION for c in text):
        units = sum(2 if c in _GSM7_EXTENSION else 1 for c in text)
        single, multi, encoding = 160, 153, "GSM-7"
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi, encoding = 70, 67, "UCS-2"
    if units <= single:
        return encoding, 1
    return encoding, math.ceil(units / multi)


def normalize_email_address(value: str) -> str:
    """Return a sendable form of an email address: the domain IDNA-encoded (bücher.de -> xn--bcher-kva.de).

    Raises ValueError with a readable reason when the address is malformed, has no dot in the domain,
    uses an IP literal, or needs SMTPUTF8 (non-ASCII before the @), which email APIs commonly refuse.
    Source: the `email-validator` package (RFC 5321/5322/6531 syntax, IDNA 2008 via `idna`).
    """
    try:
        validated = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from exc
    return validated.ascii_email or validated.normalized


# --- Identifiers ----------------------------------------------------------------------------------
#
# Identifiers (workspaceId / workspace_id, contactId / contact_id, message_id, rate_limit_key) end up
# in dashboard links, log lines, Redis keys and provider calls (the workspace ID in the Email API's
# `X-Workspace-Id` header), so each character must be printable: `str.isprintable()`, which refuses
# every Unicode "Other" (Cc controls such as CR, LF, TAB and NUL; Cf format characters such as bidi
# controls, zero-width characters and the BOM; Cs lone surrogates; Co private use; Cn unassigned) and
# "Separator" (Zl, Zp, and Zs other than the ASCII space). Non-ASCII letters are allowed: the dashboard
# percent-encodes IDs in its links (dashboard/converters.py) and the Email API client encodes the
# header (messaging.providers.email.workspace_header).


# Characters, for workspace, contact and client message IDs (and workspace aliases).
MAX_ID_LENGTH = 100


def check_printable(text: str) -> None:
    """Raise ValueError naming the first character of `text` that is not printable (see above)."""
    if not text.isprintable():
        bad = next(c for c in text if not c.isprintable())
        raise ValueError(
            f"Must contain only printable characters (found U+{ord(bad):04X}: control, format, "
            "line-separator and zero-width characters are refused)."
        )


def check_identifier(text: str, max_length: int = MAX_ID_LENGTH) -> None:
    """Raise ValueError with the reason when `text` is not an identifier: more than `max_length`
    characters, blank, or holding a character that is not printable (see the comment above)."""
    if len(text) > max_length:
        raise ValueError(f"Must be at most {max_length} characters.")
    if not text.strip():
        raise ValueError("Must not be blank.")
    check_printable(text)


def check_workspace_id(text: str, max_length: int = MAX_ID_LENGTH) -> None:
    """Raise ValueError with the reason when `text` is not a workspace ID the API takes as a string:
    check_identifier's rules, and no whitespace at either end (the earlier service's rule)."""
    if text.strip() and text != text.strip():
        raise ValueError("Must not start or end with whitespace.")
    check_identifier(text, max_length)


def check_phone_region(region: str) -> None:
    """Raise ValueError unless `region` is a region code the phonenumbers library can parse numbers
    for: two upper-case letters of ISO 3166-1 (e.g. "US", "FR"), as listed in
    phonenumbers.SUPPORTED_REGIONS."""
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(
            f"{region!r} is not a phone region: use an ISO 3166-1 alpha-2 code in capitals, such as US or FR."
        )


# --- Schedule times -------------------------------------------------------------------------------

# The earliest `scheduledFor` taken (UTC). Any time before it is a zero or placeholder date (Go's
# zero time is 0001-01-01T00:00:00Z), not a send time; later past times send now.
EARLIEST_SCHEDULED_FOR = datetime(1970, 1, 1, tzinfo=UTC)


def parse_scheduled_for(value: str, tz_name: str) -> datetime:
    """Return ISO 8601 `value` as an aware UTC datetime; raise ValueError with the reason otherwise.

    With an offset or "Z" the time is exact; without one it is wall-clock time in IANA zone `tz_name`
    ('' = UTC), and a wall-clock time that does not exist (skipped by a DST change) or occurs twice
    (repeated by one) is an error rather than a guess. A time before EARLIEST_SCHEDULED_FOR, or one
    that leaves years 1-9999 in UTC (0001-01-01T00:00:00 in Tokyo, 9999-12-31T23:59:59 in New York),
    is an error too.
    """
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("Is not an ISO 8601 date-time (e.g. 2030-03-27T09:30:00Z).") from None
    try:
        when = (parsed if parsed.tzinfo is not None else _wall_clock(parsed, tz_name, value)).astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value} is outside the range of times that can be scheduled.") from None
    if when < EARLIEST_SCHEDULED_FOR:
        raise ValueError("Must not be before 1970-01-01T00:00:00Z (a placeholder date?).")
    return when


def _wall_clock(parsed: datetime, tz_name: str, value: str) -> datetime:
    """Naive `parsed` read in zone `tz_name`. Raises ValueError for a DST gap or repeat, and
    OverflowError when the time leaves the datetime range in UTC."""
    zone = zoneinfo.ZoneInfo(tz_name or "UTC")
    first, second = parsed.replace(tzinfo=zone, fold=0), parsed.replace(tzinfo=zone, fold=1)
    round_trip = first.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    if round_trip != parsed:
        raise ValueError(f"{value} does not exist in {zone.key} (DST change); add an offset.")
    if first.utcoffset() != second.utcoffset():
        raise ValueError(f"{value} occurs twice in {zone.key} (DST change); add an offset.")
    return first

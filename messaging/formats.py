"""Formats of what clients send, each checked or converted by one pure function: E.164 phone numbers,
SMS segment counts, sendable email addresses. They raise ValueError with a readable reason (or return
a value); messaging.validation turns those into field errors.
"""

from __future__ import annotations

import math

import phonenumbers
from email_validator import EmailNotValidError, validate_email


def normalize_phone_number(value: str, default_region: str = "") -> str:
    """Return `value` as an E.164 string ("+14155550123").

    A number without a country code is read in `default_region` (ISO 3166 alpha-2, e.g. "US").
    Raises ValueError with a readable reason when the number cannot be parsed or is not a valid number.
    Source: libphonenumber via the `phonenumbers` package.
    """
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

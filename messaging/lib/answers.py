"""Reading what another server answered, defensively: every function here returns a value or None and
never raises, whatever the bytes (a provider, a model or a client's callback receiver may answer
anything).

What is refused and why: header values that are not the ASCII grammar of their field; JSON that does
not parse, nests too deep for the parser (RecursionError), has integers too long to convert, or is
not an object where one is expected; text with NUL characters or lone surrogates, which PostgreSQL
(and SQLite for surrogates) refuse to store, so such an answer would otherwise fail the write of
every delivery recorded with it.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

# Longest Retry-After date looked at (an IMF-fixdate is 29 characters).
_RETRY_AFTER_MAX_CHARS = 64
# delay-seconds = 1*DIGIT, ASCII digits only; optional whitespace around the field value.
_DELAY_SECONDS = re.compile(r"[ \t]*([0-9]+)[ \t]*", re.ASCII)
# Characters a database cannot store in text: NUL, and surrogates (a lone one cannot be encoded).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def parse_retry_after(value: object, *, cap: float, now: datetime | None = None) -> float | None:
    """Return the seconds to wait that a `Retry-After` header value asks for, at most `cap`; or None
    when the value is missing or not valid (the caller's own backoff applies then).

    Grammar (RFC 9110, section 10.2.3): `HTTP-date / delay-seconds`, where delay-seconds is
    `1*DIGIT` (ASCII 0-9 only: `str.isdigit()` also accepts superscripts and other scripts' digits,
    which `float()` then refuses or reads differently) and HTTP-date is an IMF-fixdate or one of the
    two obsolete forms of RFC 9110, section 5.6.7 (an asctime date, which has no zone, is UTC). A
    date in the past means 0. Anything else (negative or fractional numbers, NaN, non-ASCII
    characters, a date of more than 64 characters, impossible dates) is None; any number of
    digits is valid and capped. `now`: aware UTC, default now.
    """
    if not isinstance(value, str) or not value or not value.isascii():
        return None
    match = _DELAY_SECONDS.fullmatch(value)
    if match:
        digits = match.group(1).lstrip("0") or "0"
        # Past 15 digits (over 31 million years) it is the cap; int() of thousands would raise.
        return cap if len(digits) > 15 else min(float(int(digits)), cap)
    if len(value) > _RETRY_AFTER_MAX_CHARS:
        return None
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(0.0, seconds), cap)


def loads(text: str) -> Any:
    """Return `text` parsed as JSON, or None when it is not JSON the parser can take (invalid,
    nested deeper than the interpreter's recursion limit, integers over Python's digit limit)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError, TypeError):
        return None


def json_object(text: str) -> dict[str, Any] | None:
    """Return `text` parsed as a JSON object, or None when it is anything else (see `loads`)."""
    data = loads(text)
    return data if isinstance(data, dict) else None


def storable(text: str) -> str:
    """Return `text` with NUL characters and surrogates replaced by U+FFFD, so a database stores it."""
    return _UNSTORABLE.sub("\ufffd", text)


def decode(body: bytes, charset: str | None) -> str:
    """Decode a response body with its declared charset, or UTF-8 when none is declared or the
    charset is unknown or not a text encoding; undecodable bytes become U+FFFD. Never raises."""
    if charset:
        try:
            return storable(body.decode(charset, errors="replace"))
        except (LookupError, ValueError, TypeError):
            pass
    return storable(body.decode("utf-8", errors="replace"))


def count(value: object, *, maximum: int = 2**31 - 1) -> int | None:
    """Return `value` when it is a JSON integer from 0 to `maximum` (a token count), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= maximum:
        return value
    return None


def short_text(value: object, limit: int) -> str:
    """Return a JSON scalar (string or number) as storable text of at most `limit` characters, or ""
    for null, booleans, objects and arrays (an identifier that is not an identifier)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return ""
    try:
        text = value if isinstance(value, str) else str(value)
    except ValueError:  # an int over Python's digit limit for str()
        return ""
    return storable(text[:limit])

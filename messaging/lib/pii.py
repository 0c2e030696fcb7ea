"""Personal data in logs and lists: masking phone numbers and email addresses.

- `mask_phone("+14155550123")` → ``"+1415***0123"``; `mask_email("rita@example.com")` → ``"r***@example.com"``;
  `mask_recipient(value)` picks the right one (dashboards' lists use it; the detail page shows the full
  value to staff).
- `mask_text(text)` masks every phone number and email address found in free text: E.164-style numbers
  (``+`` then 7 to 15 digits, spaces, dots or dashes allowed between digit groups, ``%2B`` for a
  URL-encoded ``+``), bare runs of 10 to 15 digits (national numbers), and addresses (``@`` or ``%40``).
- `mask_url(target)` masks paths and query strings (request lines, Referer, Django's "Not Found: <path>"):
  each path segment and query key or value is percent-decoded (in a query, "+" is a space; nested
  encodings such as `?next=/messages/%3Fq%3D%252B1...` up to 3 levels), and a number in any spelling a
  browser or client sends, ``%2B1+415+555+0123``, ``%28415%29%20555-0123``, ``415.555.0123``, is masked
  there; other components stay exactly as they were. `mask_text` applies it to every token of free text
  that starts with "/" or "?".
- `PiiMaskingFilter` is a logging filter that rewrites a record's message, exception and stack text with
  `mask_text`. `install_log_masking()` (called when the messaging app loads, so in web, worker and
  scheduler processes alike) applies it to every record at creation through the log record factory, so
  no handler, whoever configured it (Django, rq, gunicorn's access log, pytest), sees the full values.

Message bodies are never passed to a logger, and jobs carry only message ids (the bodies stay in the
database), so masking the values above is enough.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from urllib.parse import quote, unquote, unquote_plus

# "+" (or its URL encoding) and 7-15 digits, optionally in groups separated by one space, dot or dash.
_PHONE_INTERNATIONAL = re.compile(r"(?:\+|%2[Bb])\d(?:[ .-]?\d){6,14}(?!\d)")
# A bare run of 10-15 digits that is not part of a longer word, UUID or hex string (a national number).
_PHONE_NATIONAL = re.compile(r"(?<![\w.%-])\d{10,15}(?![\w-])")
# Local part @ domain; "%40" is a URL-encoded "@". Deliberately loose: masking too much is harmless.
_EMAIL = re.compile(r"([A-Za-z0-9._%+'-]+)(@|%40)([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")

MASK = "***"

# In a decoded URL component: a number written with spaces, dots, dashes or brackets between digit
# groups, not inside a longer word, UUID or date-time (no word character or "-" on either side).
_PHONE_LOOSE = re.compile(r"(?<![\w-])(?:\+|00)?\(?\d[\d ().-]*\d(?![\w-])")
# Tokens of free text that are paths or query strings (a request line's target, a Referer URL).
_URL_TOKEN = re.compile(r"[/?][^\s\"'<>]*")
_URL_MAX_DEPTH = 3
# Characters left unencoded when a masked component is written back (those of mask_phone/mask_email).
_PATH_SAFE = "/:@!$'()*,;=+"
_QUERY_SAFE = "/:!$'()*,;"


def mask_phone(value: str) -> str:
    """Return a phone number with its middle digits replaced: "+14155550123" → "+1415***0123".

    Keeps a leading "+" (or "%2B") and, of the digits: 11 or more → the first four and last four;
    8 to 10 → the first two and last three ("4155550123" → "41***123"); fewer → one at each end.
    Separators are dropped.
    """
    prefix = ""
    text = value
    if text.startswith("+"):
        prefix, text = "+", text[1:]
    elif text[:3].upper() == "%2B":
        prefix, text = text[:3], text[3:]
    digits = re.sub(r"\D", "", text)
    if len(digits) >= 11:
        head, tail = digits[:4], digits[-4:]
    elif len(digits) >= 8:
        head, tail = digits[:2], digits[-3:]
    else:
        head, tail = digits[:1], digits[-1:]
    return f"{prefix}{head}{MASK}{tail}"


def mask_email(value: str) -> str:
    """Return an email address with its local part hidden: "rita@example.com" → "r***@example.com".

    The domain stays (it tells which mail provider a failure concerns). Text without "@" is returned
    masked as a whole ("***").
    """
    match = _EMAIL.fullmatch(value)
    if not match:
        local, sep, domain = value.rpartition("@")
        return f"{local[:1]}{MASK}@{domain}" if sep else MASK
    local, at, domain = match.groups()
    return f"{local[:1]}{MASK}{at}{domain}"


def mask_recipient(value: str | None) -> str:
    """Mask a message recipient for lists: an email address, a phone number, or other text.

    Email addresses and phone numbers as in `mask_email` / `mask_phone`; anything else (an AI
    callback host, an empty value) goes through `mask_text`, so a value that merely contains a number
    or address is masked too. None becomes "".
    """
    if not value:
        return ""
    if "@" in value:
        return mask_email(value)
    if re.fullmatch(r"\+?[\d ().-]{7,}", value) and sum(c.isdigit() for c in value) >= 7:
        return mask_phone(value.strip())
    return mask_text(value)


def mask_text(text: str, *, _url_depth: int = 0) -> str:
    """Return `text` with every email address and phone number in it masked (see the module docstring),
    including those in paths and query strings (mask_url)."""
    if not text:
        return text
    if "/" in text or "?" in text:
        text = _URL_TOKEN.sub(lambda m: mask_url(m.group(0), _depth=_url_depth), text)
    if "@" in text or "%40" in text:
        text = _EMAIL.sub(lambda m: f"{m.group(1)[:1]}{MASK}{m.group(2)}{m.group(3)}", text)
    if "+" in text or "%2" in text:
        text = _PHONE_INTERNATIONAL.sub(lambda m: mask_phone(m.group(0)), text)
    return _PHONE_NATIONAL.sub(lambda m: mask_phone(m.group(0)), text)


def _mask_loose_phone(match: re.Match) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    international = text.startswith(("+", "00"))
    if (digits >= 8 if international else digits >= 10) and digits <= 16:
        return mask_phone(text.strip())
    return text


def _mask_component(raw: str, *, query: bool, depth: int) -> str:
    """Return URL component `raw` unchanged, or masked and re-encoded when it holds a number or an
    address once decoded (see mask_url)."""
    decoded = unquote_plus(raw) if query else unquote(raw)
    # A value encoded more than once (an address in a query value that is itself a URL) is decoded
    # again until masking finds something; a URL inside is masked by mask_text's own URL pass.
    for _ in range(_URL_MAX_DEPTH):
        if not any(c.isdigit() for c in decoded) and "@" not in decoded and "%" not in decoded:
            return raw
        masked = mask_text(_PHONE_LOOSE.sub(_mask_loose_phone, decoded), _url_depth=depth + 1)
        if masked != decoded:
            return quote(masked, safe=_QUERY_SAFE if query else _PATH_SAFE, errors="backslashreplace")
        step = unquote(decoded)
        if step == decoded:
            break
        decoded = step
    return raw


def mask_url(target: str, *, _depth: int = 0) -> str:
    """Return a URL, path or request target with every phone number and email address in its path
    segments and query keys and values masked, however percent-encoded; other parts unchanged.

    "/api/messages/%2B1%20415%20555%200123?x=1" -> "/api/messages/+1415***0123?x=1". Never raises.
    """
    if (
        _depth >= _URL_MAX_DEPTH
        or not any(c.isdigit() for c in target)
        and "@" not in target
        and "%" not in target
    ):
        return target
    path, mark, query = target.partition("?")
    path = "/".join(_mask_component(segment, query=False, depth=_depth) for segment in path.split("/"))
    if mark:
        pairs = []
        for pair in query.split("&"):
            key, equals, value = pair.partition("=")
            key = _mask_component(key, query=True, depth=_depth)
            pairs.append(key + equals + _mask_component(value, query=True, depth=_depth))
        query = "&".join(pairs)
    return path + mark + query


class PiiMaskingFilter(logging.Filter):
    """Logging filter that masks phone numbers and email addresses in a record; never drops a record.

    The formatted message replaces `msg` (and `args` is cleared), and exception and stack text are
    formatted and masked now, so formatters print the masked text. Applying it twice is harmless.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        mask_record(record)
        return True


def mask_record(record: logging.LogRecord) -> logging.LogRecord:
    """Mask `record` in place (see PiiMaskingFilter) and return it."""
    if getattr(record, "pii_masked", False):
        return record
    if isinstance(record.args, tuple):
        # A path argument may be decoded, spaces and all (Django's "Not Found: %s"): mask it whole.
        record.args = tuple(
            mask_url(arg) if isinstance(arg, str) and arg.startswith("/") else arg for arg in record.args
        )
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: let logging report it as usual
        return record
    record.msg, record.args = mask_text(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
    if record.exc_text:
        record.exc_text = mask_text(record.exc_text)
    if record.stack_info:
        record.stack_info = mask_text(record.stack_info)
    record.pii_masked = True
    return record


_install_lock = threading.Lock()


def install_log_masking() -> None:
    """Mask every log record of this process at creation (wraps logging's record factory once)."""
    with _install_lock:
        factory = logging.getLogRecordFactory()
        if getattr(factory, "masks_pii", False):
            return

        def masking_factory(*args, **kwargs) -> logging.LogRecord:
            return mask_record(factory(*args, **kwargs))

        masking_factory.masks_pii = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(masking_factory)

"""JSON that can be stored: parse a request body and find the values no database column can hold.

Python's `json.loads` accepts what RFC 8259 does not, and what PostgreSQL's `jsonb` and text columns
refuse: the constants `NaN`, `Infinity` and `-Infinity` (RFC 8259, section 6: "Numeric values that
cannot be represented ... such as Infinity and NaN are not permitted") and a `\\ud800`-style escape of
a lone UTF-16 surrogate, which becomes a string that cannot be encoded as UTF-8 (RFC 8259, section
8.2). PostgreSQL also refuses U+0000 in text and in `jsonb` strings ("unsupported Unicode escape
sequence"). Stored as they are, they end in a database error (503) or an encoding error (500).

`loads(text)` parses like `json.loads` but returns each of those constants as a `NonFinite` marker
instead of a float, so the caller can name where it was; `unstorable_values(value)` returns those places
as `{path: [reason]}`, with paths such as `metadata.score`, `messages[3].message` or
`metadata["odd key"]`.
"""

from __future__ import annotations

import json
import re
from typing import Any

# A lone surrogate (a valid pair is joined into one character by the JSON decoder) or U+0000.
_UNSTORABLE_CHARACTER = re.compile("[\ud800-\udfff\x00]")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

NON_FINITE_REASON = "Must be a finite number (NaN and Infinity are not JSON numbers)."
SURROGATE_REASON = "Must not contain a lone UTF-16 surrogate (such as \\ud800); it is not valid Unicode."
NUL_REASON = "Must not contain the NUL character (U+0000)."
KEY_REASON_PREFIX = "Key: "


class NonFinite:
    """Marks where a body held `NaN`, `Infinity` or `-Infinity` (`constant` is that spelling)."""

    __slots__ = ("constant",)

    def __init__(self, constant: str):
        self.constant = constant

    def __repr__(self) -> str:
        return f"NonFinite({self.constant!r})"


def loads(text: str | bytes) -> Any:
    """Parse JSON `text` like json.loads, but `NaN`, `Infinity` and `-Infinity` become NonFinite markers.

    Raises ValueError (json.JSONDecodeError, UnicodeDecodeError) for text that is not JSON, and
    RecursionError for nesting deeper than the interpreter allows. A number too large for a float
    (`1e400`) is parsed as infinity by the decoder: it is also returned as a NonFinite marker.
    """
    return json.loads(text, parse_constant=NonFinite, parse_float=_parse_float)


def _parse_float(text: str) -> float | NonFinite:
    value = float(text)
    return NonFinite(text) if value in (float("inf"), float("-inf")) else value


def path_join(prefix: str, key: str | int) -> str:
    """Return the path of `key` under `prefix`: `a.b`, `a[3]`, or `a["odd key"]` for keys that are not
    plain names (quoted as JSON, so a key with a lone surrogate is shown escaped)."""
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    if _PLAIN_KEY.fullmatch(key):
        return f"{prefix}.{key}" if prefix else key
    quoted = json.dumps(key, ensure_ascii=bool(_UNSTORABLE_CHARACTER.search(key)))
    return f"{prefix}[{quoted}]"


def _string_reason(text: str) -> str | None:
    match = _UNSTORABLE_CHARACTER.search(text)
    if match is None:
        return None
    return NUL_REASON if match.group(0) == "\x00" else SURROGATE_REASON


def unstorable_values(value: Any, prefix: str = "") -> dict[str, list[str]]:
    """Return `{path: [reason]}` for every NonFinite marker, and every string or object key holding a
    lone surrogate or U+0000, in parsed JSON `value` (empty when it can all be stored).

    `prefix` is the path of `value` itself ('' for a whole body). A bad key is reported at the path it
    would have, with a reason starting "Key: ". Iterative, so depth is bounded only by the parser.
    """
    if _plainly_storable(value):
        return {}
    problems: dict[str, list[str]] = {}
    stack: list[tuple[Any, str]] = [(value, prefix)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                child_path = path_join(path, key)
                reason = _string_reason(key)
                if reason:
                    problems.setdefault(child_path, []).append(KEY_REASON_PREFIX + reason)
                stack.append((child, child_path))
        elif isinstance(item, list):
            stack.extend((child, path_join(path, index)) for index, child in enumerate(item))
        elif isinstance(item, NonFinite):
            problems.setdefault(path, []).append(NON_FINITE_REASON)
        elif isinstance(item, str):
            reason = _string_reason(item)
            if reason:
                problems.setdefault(path, []).append(reason)
    return problems


# Types json.loads returns that can always be stored (NonFinite and str are checked on their own).
_SCALARS = (int, float, bool, type(None))


def _plainly_storable(value: Any) -> bool:
    """True when parsed JSON `value` certainly holds nothing unstorable; False means "look closer".

    The common case, checked without building a path per value: every string and key is gathered and
    searched once (joining strings cannot pair two lone surrogates: a str holds code points). Exact
    types only; anything else (a NonFinite marker, a subclass) sends the caller to the full walk.
    """
    texts: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            for key, child in item.items():
                if type(key) is not str:
                    return False
                texts.append(key)
                child_kind = type(child)
                if child_kind is str:
                    texts.append(child)
                elif child_kind in (dict, list):
                    stack.append(child)
                elif child_kind not in _SCALARS:
                    return False
        elif kind is list:
            stack.extend(item)
        elif kind is str:
            texts.append(item)
        elif kind not in _SCALARS:
            return False
    return _UNSTORABLE_CHARACTER.search("".join(texts)) is None

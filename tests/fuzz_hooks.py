"""schemathesis hooks for tests/test_fuzz_api.py: hostile text and numbers in every field of every body.

Loaded by the `st` command through SCHEMATHESIS_HOOKS=tests.fuzz_hooks (schemathesis 4, "Extending
Schemathesis" and "Custom Serializers" guides). For half of the generated cases, each string of the body
(values and object keys, at any depth, bulk items included) may get control characters (U+0000,
CR, LF, ESC, DEL, ...), digits of another script (Arabic-Indic, Devanagari, fullwidth, ...) in place
of its ASCII digits, or a lone UTF-16 surrogate, and each number may become NaN, Infinity or
-Infinity. Path parameters get the same, except surrogates (a URL cannot carry them) and their names.

requests refuses to write NaN as JSON (it calls json.dumps with allow_nan=False), so a serializer for
application/json replaces schemathesis' own: Python's json.dumps writes `NaN`, `Infinity` and a lone
surrogate as the escape `\\ud800`, as a hostile client would.
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import quote

import schemathesis
from hypothesis import strategies as st

# Digit zeros of other scripts: Arabic-Indic, extended Arabic-Indic, Devanagari, Bengali, Thai,
# fullwidth and mathematical bold. Python's str.isdigit() and int() accept them all.
ZEROS = "\u0660\u06f0\u0966\u09e6\u0e50\uff10\U0001d7ce"
CONTROL = st.characters(categories=["Cc"])
SURROGATE = st.characters(categories=["Cs"])
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])


def _foreign_digits(text: str, zero: str) -> str:
    if not any(c in "0123456789" for c in text):
        return text + "".join(chr(ord(zero) + d) for d in (4, 1, 5))
    return "".join(chr(ord(zero) + int(c)) if c in "0123456789" else c for c in text)


@st.composite
def hostile_string(draw: st.DrawFn, text: str, *, surrogates: bool = True) -> str:
    """`text` with control characters, foreign digits or (when `surrogates`) a lone surrogate."""
    kinds = ["control", "digits", "replace"] + (["surrogate"] if surrogates else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "digits":
        return _foreign_digits(text, draw(st.sampled_from(ZEROS)))
    if kind == "replace":
        alphabet = st.one_of(CONTROL, st.sampled_from(ZEROS), SURROGATE) if surrogates else CONTROL
        return draw(st.text(alphabet=alphabet, min_size=1, max_size=6))
    char = draw(SURROGATE if kind == "surrogate" else CONTROL)
    at = draw(st.integers(0, len(text)))
    return text[:at] + char + text[at:]


@st.composite
def hostile_json(draw: st.DrawFn, value: Any, *, surrogates: bool = True, keys: bool = True) -> Any:
    """`value` (parsed JSON) with about one string or number in four made hostile, at any depth (object
    keys too, when `keys`)."""

    def spoil() -> bool:
        return draw(st.integers(0, 3)) == 0

    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            if keys and isinstance(key, str) and spoil():
                key = draw(hostile_string(key, surrogates=surrogates))
            result[key] = draw(hostile_json(item, surrogates=surrogates))
        return result
    if isinstance(value, list):
        return [draw(hostile_json(item, surrogates=surrogates)) for item in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return draw(NON_FINITE) if spoil() else value
    if isinstance(value, str):
        return draw(hostile_string(value, surrogates=surrogates)) if spoil() else value
    return value


@schemathesis.hook
def flatmap_body(context, body):
    """Half of the cases unchanged (so valid requests still reach the API), half made hostile."""
    return st.booleans().flatmap(lambda hostile: hostile_json(body) if hostile else st.just(body))


# Longest percent-encoded path parameter sent: a digit of another script takes 9 characters in a URL,
# and gunicorn answers a request line over 4094 bytes itself (414, not the API).
MAX_ENCODED_PARAMETER = 1000


def _within_url_limit(original: dict, spoiled: dict) -> dict:
    return {
        name: value if len(quote(str(value), safe="")) <= MAX_ENCODED_PARAMETER else original[name]
        for name, value in spoiled.items()
    }


@schemathesis.hook
def flatmap_path_parameters(context, path_parameters):
    """Half of the cases unchanged, half with control characters or other scripts' digits."""
    if not path_parameters:
        return st.just(path_parameters)
    spoiled = hostile_json(path_parameters, surrogates=False, keys=False).map(
        lambda value: _within_url_limit(path_parameters, value)
    )
    return st.booleans().flatmap(lambda hostile: spoiled if hostile else st.just(path_parameters))


@schemathesis.serializer("application/json")
def json_as_a_hostile_client_writes_it(ctx, value: Any) -> bytes:
    """JSON with NaN and Infinity as bare words and lone surrogates escaped (json.dumps defaults)."""
    return json.dumps(value, default=str).encode()

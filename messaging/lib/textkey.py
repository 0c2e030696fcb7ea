"""Folding free-text keys (such as an AI request's `rate_limit_key`) to one spelling, so that keys a
person would read as the same count as the same."""

from __future__ import annotations

import re
import unicodedata

# Default-ignorable code points that are not format characters (category Cf): the combining grapheme
# joiner, Hangul fillers, Mongolian free variation selectors and the variation selectors. They render
# as nothing. Source: Unicode's DerivedCoreProperties.txt, Default_Ignorable_Code_Point.
_IGNORABLE = re.compile(
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u3164\ufe00-\ufe0f\uffa0\U000e0100-\U000e01ef]"
)
_SPACES = re.compile(r"\s+")


def fold_key(value: str) -> str:
    """Return `value` folded to one spelling per key a person would read as the same.

    In order: drop format characters (Unicode category Cf: zero-width space and joiners, the byte
    order mark, soft hyphen, bidirectional marks), control characters (Cc) and the other
    default-ignorable code points; apply Unicode NFKC (fullwidth and compatibility forms, no-break
    spaces), casefold, and NFKC again (close to NFKC_Casefold, the Unicode Standard's section 3.13, with
    the standard library's tables); turn each run of white space into one space and strip both ends.
    The result may be '' (a key made only of invisible characters). Never raises.
    """
    visible = "".join(c for c in value if unicodedata.category(c) not in ("Cf", "Cc"))
    visible = _IGNORABLE.sub("", visible)
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", visible).casefold())
    return _SPACES.sub(" ", folded).strip()

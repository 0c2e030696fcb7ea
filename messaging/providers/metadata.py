"""Which `metadata` keys may reach a provider call.

For compatibility with the earlier service, a message's metadata keys are spread at the top level of
the SMS and Email API bodies (sms.sms_payload, email.email_payload). The provider accounts are shared
by every workspace, so a key that the provider reads as the sender (`from`), the recipients (`bcc`,
`To`), where it reports or fetches (`statusCallback`, a `mediaUrl` that skipped the http(s) check) or
extra mail headers (`headers`) would let one client rewrite a call made for everyone. Each provider
has a deny list, set per deployment: SMS_METADATA_DENIED_KEYS and EMAIL_METADATA_DENIED_KEYS (the
defaults are in config/settings.py). Other keys, plain data such as `campaignId`, pass as before.

Keys are compared folded: case-insensitively and ignoring everything but letters and digits, so
`statusCallback`, `StatusCallback`, `status_callback` and `Status-Callback` are one key. The API
refuses a denied key with a 400 naming it (validation.clean_metadata); the payload builders also drop
denied keys, for messages stored before a key was denied.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from django.conf import settings

_NOT_ALPHANUMERIC = re.compile(r"[\W_]+")

# Channel -> the setting holding that provider's deny list.
DENIED_KEYS_SETTING = {"sms": "SMS_METADATA_DENIED_KEYS", "email": "EMAIL_METADATA_DENIED_KEYS"}


def fold(key: str) -> str:
    """Return the spelling keys are compared in: casefolded, letters and digits only ("Reply-To" ->
    "replyto")."""
    return _NOT_ALPHANUMERIC.sub("", key.casefold())


def denied_keys(channel: str, metadata: dict[str, Any] | None) -> list[str]:
    """Return the top-level keys of `metadata`, as spelled there, that `channel`'s provider deny list
    refuses (empty for a channel without one, such as "ai")."""
    setting = DENIED_KEYS_SETTING.get(channel)
    if not setting or not metadata:
        return []
    denied = _folded(tuple(getattr(settings, setting)))
    return [key for key in metadata if fold(key) in denied]


@functools.lru_cache(maxsize=16)
def _folded(names: tuple[str, ...]) -> frozenset[str]:
    # Keyed by the list itself, so a deny list changed at run time (tests do) is folded afresh; a bulk
    # request folded the whole list once per item before.
    return frozenset(fold(name) for name in names)


def allowed_metadata(channel: str, metadata: dict[str, Any] | None) -> dict[str, Any]:
    """Return `metadata` without the keys `channel`'s deny list refuses (a new dict; {} for None)."""
    refused = set(denied_keys(channel, metadata))
    return {key: value for key, value in (metadata or {}).items() if key not in refused}

"""Template filters for personal data: `{% load privacy %}` then `{{ message.recipient|mask_recipient }}`.

Lists show masked recipients ("+1415***0123", "r***@example.com"); the message detail page shows the
full value to staff.
"""

from __future__ import annotations

from django import template

from messaging.lib.pii import mask_recipient as _mask_recipient
from messaging.lib.pii import mask_text as _mask_text

register = template.Library()


@register.filter
def mask_recipient(value: str | None) -> str:
    """Mask a phone number or email address (messaging.lib.pii.mask_recipient)."""
    return _mask_recipient(value)


@register.filter
def mask_pii(value: str | None) -> str:
    """Mask every phone number and email address inside free text (messaging.lib.pii.mask_text)."""
    return _mask_text(value or "")

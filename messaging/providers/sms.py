"""Client for the SMS API: `POST {SMS_API_URL}/send-sms`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings

from .base import CallResult, ProviderClient, ProviderError
from .metadata import allowed_metadata

if TYPE_CHECKING:
    from messaging.models import Message


def sms_payload(message: Message) -> dict:
    """Return the JSON body the SMS API expects.

    Shape (the earlier service's contract): `{to, message, contactId, workspaceId, mediaUrl?,
    ...metadata}`. Metadata keys are spread at the top level for compatibility but never override the
    core fields, and keys on SMS_METADATA_DENIED_KEYS (sender, recipients, routing) are left out
    (messaging.providers.metadata).
    """
    core = {
        "to": message.recipient,
        "message": message.body,
        "contactId": message.contact_id,
        "workspaceId": message.workspace.external_id,
    }
    if message.media_url:
        core["mediaUrl"] = message.media_url
    return {**allowed_metadata("sms", message.metadata), **core}


class SmsClient(ProviderClient):
    name = "sms"

    def __init__(self, base_url: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.base_url = (base_url if base_url is not None else settings.SMS_API_URL).rstrip("/")

    def send(self, message: Message) -> CallResult:
        """Send one SMS. Returns the CallResult of a 2xx; raises ProviderError otherwise.

        The `Idempotency-Key` header carries the message id so a provider can drop a resend.
        """
        result = self.post_json(
            f"{self.base_url}/send-sms",
            sms_payload(message),
            headers={"Idempotency-Key": str(message.id)},
        )
        if not result.ok:
            raise ProviderError(result)
        return result

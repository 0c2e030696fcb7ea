"""Client for the Email API: `POST {EMAIL_API_URL}{EMAIL_API_PATH}` (default path `/api/email/send`)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from django.conf import settings
from django.utils import timezone

from .base import CallResult, ProviderClient, ProviderError
from .metadata import allowed_metadata

if TYPE_CHECKING:
    from messaging.models import Message


# Visible ASCII but `%`: what an encoded header value carries as it is (RFC 9110, section 5.5: a field
# value is visible ASCII with inner spaces; obs-text bytes are not portable).
_HEADER_SAFE = "".join(chr(code) for code in range(0x21, 0x7F) if chr(code) != "%")


def workspace_header(external_id: str) -> str:
    """Return a workspace's external ID as the value of the `X-Workspace-Id` header.

    An ID of printable ASCII that does not start or end with a space (every numeric ID) is sent
    unchanged. Any other (non-ASCII letters; control characters or surrounding spaces in rows
    stored before messaging.validation refused them) is sent percent-encoded as UTF-8 (RFC 3986,
    section 2.1; `%` and spaces are encoded too), e.g. `bücher` as `b%C3%BCcher`: an HTTP header
    cannot carry it as it is, and the call must not fail over it.
    """
    if external_id.isascii() and external_id.isprintable() and external_id == external_id.strip():
        return external_id
    return quote(external_id, safe=_HEADER_SAFE)


def email_payload(message: Message) -> dict:
    """Return the JSON body the Email API expects.

    Shape (the earlier service's contract): `{to, contactId, subject, content, ...metadata}` where
    `content` is the HTML. Metadata keys are spread at the top level for compatibility but never
    override the core fields, and keys on EMAIL_METADATA_DENIED_KEYS (sender, recipients, headers,
    routing) are left out (messaging.providers.metadata). (The earlier service also let `metadata.callbackEndpoint` replace the
    URL path; this one does not: the path is EMAIL_API_PATH, so a client cannot point the worker
    elsewhere.)
    """
    core = {
        "to": message.recipient,
        "contactId": message.contact_id,
        "subject": message.subject,
        "content": message.body,
    }
    return {**allowed_metadata("email", message.metadata), **core}


class EmailClient(ProviderClient):
    name = "email"

    def __init__(self, base_url: str | None = None, path: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.base_url = (base_url if base_url is not None else settings.EMAIL_API_URL).rstrip("/")
        self.path = path if path is not None else settings.EMAIL_API_PATH

    @property
    def url(self) -> str:
        return f"{self.base_url}{self.path}"

    def send(self, message: Message) -> CallResult:
        """Send one email. Returns the CallResult of a 2xx; raises ProviderError otherwise.

        Headers: `X-Workspace-Id` (the workspace's external ID, see workspace_header) and
        `Idempotency-Key` (the message id, so a provider can drop a resend). An unset EMAIL_API_URL is a permanent error.
        """
        if not self.base_url:
            raise ProviderError(
                CallResult(
                    url=self.path,
                    started_at=timezone.now(),
                    error_kind="not_configured",
                    error="EMAIL_API_URL is not set; the email was not sent.",
                )
            )
        result = self.post_json(
            self.url,
            email_payload(message),
            headers={
                "X-Workspace-Id": workspace_header(message.workspace.external_id),
                "Idempotency-Key": str(message.id),
            },
        )
        if not result.ok:
            raise ProviderError(result)
        return result

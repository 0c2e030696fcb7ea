"""Client for AI-reply callbacks: POST the generated reply to the client's `callback_url`.

Safety (README, "How delivery works"): the URL is checked again at send time by `netguard` and the
connection is pinned to the checked address; redirects are not followed (a 3xx fails the attempt and
records the Location); at most 64 KB of the answer is read; the whole call (connect, send, answer) must end within CALLBACK_DEADLINE_SECONDS,
with connect and read timeouts of CALLBACK_CONNECT_TIMEOUT / CALLBACK_READ_TIMEOUT seconds within it
(a receiver that answers one byte at a time is cut off at the deadline). With CALLBACK_SIGNING_SECRET set every call
carries Standard Webhooks headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`) made by the
`standardwebhooks` library.
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django.conf import settings
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from messaging.lib import netguard

from .base import CallResult, ProviderClient, ProviderError

if TYPE_CHECKING:
    from messaging.models import Message


def is_sms_callback(callback_url: str) -> bool:
    """True when the callback URL's path ends in `/send-sms` (the reply then goes in the SMS shape)."""
    return urlsplit(callback_url).path.rstrip("/").endswith("/send-sms")


def callback_payload(message: Message) -> dict:
    """Return the JSON body of the callback for an AI message whose reply is generated.

    - path ends in `/send-sms`: the SMS shape `{to, message, workspaceId, contactId, metadata}`, where
      `to` is the request's optional `phone_number` (E.164) or null, and `metadata` is
      `{contactId, isAiGenerated: true, aiLogId, messageId, jobId}` as the earlier service sent it;
    - otherwise `{workspace_id, message_id, job_id, response_text, contact_id}`.

    `message_id` / `messageId` is the client's own message id; `job_id` / `jobId` the jobId this service
    answered when it accepted the request.
    """
    meta = message.metadata or {}
    job_id = meta.get("jobId") or message.rq_job_id
    workspace_id = message.workspace.external_id
    if is_sms_callback(message.callback_url):
        return {
            "to": meta.get("to"),
            "message": message.response_text,
            "workspaceId": workspace_id,
            "contactId": message.contact_id,
            "metadata": {
                "contactId": message.contact_id,
                "isAiGenerated": True,
                "aiLogId": str(message.id),
                "messageId": message.external_message_id,
                "jobId": job_id,
            },
        }
    return {
        "workspace_id": workspace_id,
        "message_id": message.external_message_id,
        "job_id": job_id,
        "response_text": message.response_text,
        "contact_id": message.contact_id,
    }


def signature_headers(
    msg_id: str, body: bytes, *, secret: str, now: datetime | None = None
) -> dict[str, str]:
    """Return Standard Webhooks headers signing `body` (bytes as sent) for delivery `msg_id`.

    `webhook-timestamp` is Unix seconds (UTC). Source: the Standard Webhooks specification, through
    the `standardwebhooks` library's `Webhook.sign`.
    """
    now = now or timezone.now()
    signature = Webhook(secret).sign(msg_id=msg_id, timestamp=now, data=body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(math.floor(now.timestamp())),
        "webhook-signature": signature,
    }


class CallbackClient(ProviderClient):
    name = "callback"

    def __init__(self):
        super().__init__(
            connect_timeout=settings.CALLBACK_CONNECT_TIMEOUT,
            read_timeout=settings.CALLBACK_READ_TIMEOUT,
            deadline_setting="CALLBACK_DEADLINE_SECONDS",
        )

    def send(self, message: Message) -> CallResult:
        """POST the reply of `message` to its callback_url; return the CallResult of a 2xx.

        Raises ProviderError: permanent when the URL is refused by the guard (e.g. its host now
        resolves to a private address) or answers a 3xx / 4xx; transient for 5xx, 429, timeouts, no
        complete answer within CALLBACK_DEADLINE_SECONDS (the DNS lookup included, which itself may take
        at most CALLBACK_RESOLVE_TIMEOUT_SECONDS), and a host that does not resolve (in time). The `webhook-id` and `Idempotency-Key` stay the same on every
        retry of a message, so a receiver can drop repeats.
        """
        url = message.callback_url
        started = time.monotonic()
        try:
            # The lookup is part of the call's deadline: a client's slow name server cannot stretch it.
            target = netguard.check_url(
                url, resolve_timeout=min(settings.CALLBACK_RESOLVE_TIMEOUT_SECONDS, self.deadline)
            )
        except netguard.UnresolvableHost as exc:
            raise ProviderError(self._refused(url, "dns_error", str(exc), transient=True)) from exc
        except netguard.UnsafeUrl as exc:
            raise ProviderError(self._refused(url, "refused_url", f"callback_url refused: {exc}")) from exc
        body = json.dumps(callback_payload(message), separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": str(message.id)}
        if settings.CALLBACK_SIGNING_SECRET:
            headers.update(
                signature_headers(f"msg_{message.id}", body, secret=settings.CALLBACK_SIGNING_SECRET)
            )
        session, pinned_url, host_header = netguard.pinned_request(target)
        try:
            result = self.post_bytes(
                pinned_url,
                body,
                headers={**headers, **host_header},
                session=session,
                seconds_left=max(0.001, self.deadline - (time.monotonic() - started)),
            )
        finally:
            session.close()
        result.url = url
        if not result.ok:
            raise ProviderError(result)
        return result

    @staticmethod
    def _refused(url: str, kind: str, error: str, *, transient: bool = False) -> CallResult:
        return CallResult(
            url=url, started_at=timezone.now(), transient=transient, error_kind=kind, error=error
        )

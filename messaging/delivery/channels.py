"""The channel registry: for each channel, what validates a request (and where its body names the
workspace), what stores it, its queue, what makes one delivery attempt, and the workspace field
holding its own delivery rate.

A new channel is one entry in CHANNELS plus one provider client under `messaging/providers/` (which
defines the shape of what is sent, as healthchecks maps each channel kind to its transport). The API
and the dashboard's test-send forms read the validator and the intake service from here. Senders run
in the worker's delivery threads and never touch the database: they take a Message already read
(with its workspace) and return an Attempt; the engine records it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.utils import timezone

from messaging import services, validation
from messaging.models import DeliveryAttempt, Message
from messaging.providers.ai import ChatClient, simulated_reply
from messaging.providers.base import CallResult, ProviderError
from messaging.providers.callback import CallbackClient
from messaging.providers.email import EmailClient
from messaging.providers.sms import SmsClient


@dataclass
class Attempt:
    """What one delivery attempt did.

    `calls`: the outbound calls in order (each becomes a DeliveryAttempt row; `extra["attempt_kind"]`
    names its kind, default provider). `fields`: Message fields to store whatever the outcome (an AI
    reply generated during the attempt, so a failed callback is retried without generating again).
    The attempt succeeded when its last call did.
    """

    calls: list[CallResult]
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.calls) and self.calls[-1].ok

    @property
    def last(self) -> CallResult:
        return self.calls[-1]


def _one_call(send: Callable[[Message], CallResult]) -> Callable[[Message], Attempt]:
    """Adapt a provider client's `send` (CallResult, or ProviderError) to an Attempt of one call."""

    def attempt(message: Message) -> Attempt:
        try:
            return Attempt([send(message)])
        except ProviderError as exc:
            return Attempt([exc.result])

    return attempt


def _send_ai(message: Message) -> Attempt:
    """Generate the reply (unless an earlier attempt stored one), then POST it to the callback URL.

    The generation is its own call (kind `generation`); the reply goes into `fields` so it is stored
    even when the callback fails.
    """
    calls: list[CallResult] = []
    fields: dict[str, Any] = {}
    if not message.response_text:
        if settings.AI_API_URL:
            prompt = message.workspace.ai_system_prompt or settings.AI_SYSTEM_PROMPT
            try:
                reply = ChatClient().generate(message, system_prompt=prompt)
            except ProviderError as exc:
                exc.result.extra["attempt_kind"] = DeliveryAttempt.Kind.GENERATION
                return Attempt([exc.result])
        else:
            reply = simulated_reply(message)
        reply.result.extra["attempt_kind"] = DeliveryAttempt.Kind.GENERATION
        calls.append(reply.result)
        fields = {
            "response_text": reply.text,
            "ai_model": reply.model,
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "generation_ms": reply.result.duration_ms,
            "generated_at": timezone.now(),
        }
        for name, value in fields.items():
            setattr(message, name, value)
    try:
        result = CallbackClient().send(message)
    except ProviderError as exc:
        result = exc.result
    result.extra["attempt_kind"] = DeliveryAttempt.Kind.CALLBACK
    calls.append(result)
    return Attempt(calls, fields)


@dataclass(frozen=True)
class Channel:
    """One channel.

    `name`: Message.channel. `workspace_field`: the request body's field naming the workspace.
    `clean_request(body, workspace=...)`: the validator (RequestInvalid with per-field reasons, else
    the keyword arguments of `create`). `create(**cleaned, api_key=...)`: the intake service that
    stores it. `queue`: the RQ queue its jobs go to. `send(message)`: one attempt (never raises for
    provider outcomes). `workspace_rate_field`: the Workspace field with the workspace's own calls per
    second, or "".
    """

    name: str
    workspace_field: str
    clean_request: Callable[..., dict[str, Any]]
    create: Callable[..., Message]
    queue: str
    send: Callable[[Message], Attempt]
    workspace_rate_field: str = ""


CHANNELS: dict[str, Channel] = {
    channel.name: channel
    for channel in (
        Channel(
            "sms",
            "workspaceId",
            validation.clean_sms_request,
            services.message_create,
            "sms",
            _one_call(lambda message: SmsClient().send(message)),
            "sms_per_second",
        ),
        Channel(
            "email",
            "workspaceId",
            validation.clean_email_request,
            services.message_create,
            "email",
            _one_call(lambda message: EmailClient().send(message)),
            "email_per_second",
        ),
        Channel(
            "ai", "workspace_id", validation.clean_ai_request, services.ai_request_create, "ai", _send_ai
        ),
    )
}


def get(name: str) -> Channel:
    """Return the registered channel `name`. Raises KeyError for an unknown one."""
    return CHANNELS[name]

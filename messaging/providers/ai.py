"""AI reply generation: an OpenAI-compatible `POST {AI_API_URL}/chat/completions`, or a simulated reply.

When AI_API_URL is empty no model is called and the reply is a fixed text that starts with
SIMULATED_PREFIX, so nobody mistakes it for a real answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils import timezone

from messaging.lib import answers

from .base import CallResult, ProviderClient, ProviderError

if TYPE_CHECKING:
    from messaging.models import Message

SIMULATED_PREFIX = "[simulated]"
SIMULATED_MODEL = "simulated"


@dataclass
class Reply:
    """A generated reply. Token counts are None when the API did not report them."""

    text: str
    model: str
    prompt_tokens: int | None
    completion_tokens: int | None
    result: CallResult


def simulated_reply(message: Message) -> Reply:
    """Return the labelled stand-in reply used when no AI API is configured (no outbound call)."""
    quoted = message.body if len(message.body) <= 200 else message.body[:200] + "…"
    text = (
        f"{SIMULATED_PREFIX} No AI API is configured (AI_API_URL is empty), so this reply was not "
        f'written by a model. Your message was: "{quoted}"'
    )
    result = CallResult(url="", started_at=timezone.now(), ok=True, response_text="simulated reply")
    return Reply(text=text, model=SIMULATED_MODEL, prompt_tokens=None, completion_tokens=None, result=result)


def chat_request(message: Message, system_prompt: str, model: str) -> dict:
    """Return the chat-completions request body: the system prompt and the client's message text."""
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": message.body},
        ],
        "max_tokens": settings.AI_MAX_TOKENS,
    }


class ChatClient(ProviderClient):
    """OpenAI-compatible chat completions. Reads wait up to AI_READ_TIMEOUT seconds, the whole call
    up to AI_DEADLINE_SECONDS."""

    name = "ai"

    def __init__(self, base_url: str | None = None, *, api_key: str | None = None, model: str | None = None):
        super().__init__(read_timeout=settings.AI_READ_TIMEOUT, deadline_setting="AI_DEADLINE_SECONDS")
        self.base_url = (base_url if base_url is not None else settings.AI_API_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else settings.AI_API_KEY
        self.model = model or settings.AI_MODEL

    def generate(self, message: Message, *, system_prompt: str) -> Reply:
        """Ask the model for a reply to `message.body`. Raises ProviderError when the call fails.

        5xx, 429 and timeouts are transient; other 4xx and a 2xx without a usable
        `choices[0].message.content` are permanent (retrying would pay for the same failure again).
        Source for the shapes: the OpenAI Chat Completions API reference.
        """
        headers = {"Idempotency-Key": str(message.id)}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        result = self.post_json(
            f"{self.base_url}/chat/completions",
            chat_request(message, system_prompt, self.model),
            headers=headers,
        )
        if not result.ok:
            raise ProviderError(result)
        data = answers.json_object(result.response_text)
        choices = data.get("choices") if data is not None else None
        first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        reply = first.get("message") if isinstance(first.get("message"), dict) else {}
        text = reply.get("content")
        if not isinstance(text, str) or not text.strip():
            why = "the body is not a JSON object" if data is None else "no choices[0].message.content text"
            result.ok, result.transient = False, False
            result.error_kind = "invalid_response"
            result.error = f"The AI API answered {result.http_status} without a reply text ({why})."
            raise ProviderError(result)
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        return Reply(
            text=answers.storable(text.strip()),
            model=answers.short_text(data.get("model"), 100) or self.model[:100],
            prompt_tokens=answers.count(usage.get("prompt_tokens")),
            completion_tokens=answers.count(usage.get("completion_tokens")),
            result=result,
        )

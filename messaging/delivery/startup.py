"""What a worker logs when it starts: its queues, concurrency, retry policy, rate limits and providers.

Secrets (API keys, the signing secret, passwords in URLs) are never logged: only base URLs, stripped
of credentials, query and fragment, and "set" / "not set".
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from django.conf import settings


def public_url(url: str) -> str:
    """Return `url` without user name, password, query or fragment (they may carry credentials)."""
    if not url:
        return ""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def startup_summary(queue_names: list[str], concurrency: int = 1) -> list[str]:
    """Return the lines a worker logs at start (queues, concurrency, retry policy, limits, providers).

    Times are in seconds.
    """
    limits = settings.DELIVERY_RATE_LIMITS
    ai_url = public_url(settings.AI_API_URL)
    return [
        f"Queues: {', '.join(queue_names)}; "
        + (f"up to {concurrency} deliveries in flight" if concurrency > 1 else "one job at a time"),
        (
            f"Retry policy: {settings.DELIVERY_MAX_ATTEMPTS} attempts per message; backoff "
            f"{settings.RETRY_BACKOFF_BASE:g}s x {settings.RETRY_BACKOFF_FACTOR:g}^(n-1), at most "
            f"{settings.RETRY_BACKOFF_MAX:g}s (or the provider's Retry-After); job timeout "
            f"{settings.RQ_JOB_TIMEOUT}s; provider timeouts {settings.PROVIDER_CONNECT_TIMEOUT:g}s connect / "
            f"{settings.PROVIDER_READ_TIMEOUT:g}s read, AI read {settings.AI_READ_TIMEOUT:g}s, callback "
            f"{settings.CALLBACK_CONNECT_TIMEOUT:g}s / {settings.CALLBACK_READ_TIMEOUT:g}s; whole call at most "
            f"{settings.PROVIDER_DEADLINE_SECONDS:g}s provider, {settings.AI_DEADLINE_SECONDS:g}s AI, "
            f"{settings.CALLBACK_DEADLINE_SECONDS:g}s callback"
        ),
        (
            "Rate limits: delivery "
            + ", ".join(f"{channel} {spec or 'off'}" for channel, spec in limits.items())
            + f" (guard {settings.DELIVERY_RATE_GUARD_MS:g} ms); AI requests per rate_limit_key "
            f"{settings.AI_RATE_LIMIT_PER_KEY or 'off'}, per workspace {settings.AI_RATE_LIMIT_PER_WORKSPACE or 'off'}"
            f", per API key {settings.AI_RATE_LIMIT_PER_API_KEY or 'off'}"
        ),
        (
            f"Providers: SMS {public_url(settings.SMS_API_URL) or '(not set)'}/send-sms; email "
            f"{public_url(settings.EMAIL_API_URL) or '(not set)'}{settings.EMAIL_API_PATH}; AI "
            + (
                f"{ai_url}/chat/completions model {settings.AI_MODEL}"
                if ai_url
                else "simulated (AI_API_URL not set)"
            )
            + f"; AI API key {'set' if settings.AI_API_KEY else 'not set'}"
        ),
        (
            f"Callbacks: signing {'on (Standard Webhooks)' if settings.CALLBACK_SIGNING_SECRET else 'off'}; "
            f"allowed private hosts {', '.join(settings.CALLBACK_ALLOWED_HOSTS) or 'none'}; sandbox "
            f"{'on' if settings.SANDBOX_ENABLED else 'off'}"
        ),
    ]

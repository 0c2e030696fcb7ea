"""What every outbound HTTP call shares: timeouts, headers, bounded reads, error classification.

Classification (README, "How delivery works"): 5xx, 429, timeouts and connection errors are
transient (retried with backoff, honouring Retry-After); a redirect or any other 4xx is permanent.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from django.conf import settings
from django.utils import timezone

# Bytes of a response body read at most; the rest is never downloaded.
MAX_RESPONSE_BYTES = 64 * 1024
# Characters of a response or error kept in the database.
EXCERPT_CHARS = 2000
USER_AGENT = "queue-service/0.1"

_local = threading.local()


# Environment variables through which requests configures proxies for a call.
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def http_session() -> requests.Session:
    """Return this thread's requests.Session (keeps provider connections alive between calls).

    When no proxy is configured in the environment, the session does not consult the environment on
    each call (`trust_env` off: requests otherwise scans it for proxy settings on every request, a
    third of its CPU time per call, measured in bench/run.py); a CA bundle named by REQUESTS_CA_BUNDLE
    or CURL_CA_BUNDLE is still used. With a proxy variable set, requests' usual behaviour applies.
    A provider's credentials come from settings, never from ~/.netrc.
    """
    session = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        session.headers["User-Agent"] = USER_AGENT
        if not any(os.environ.get(name) or os.environ.get(name.upper()) for name in _PROXY_VARIABLES):
            session.trust_env = False
            session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        _local.session = session
    return session


def http_session_close() -> None:
    """Close this thread's session and its keep-alive connections (tests whose provider is a live
    server call this, so the server's request threads end with the test)."""
    session = getattr(_local, "session", None)
    if session is not None:
        session.close()
        _local.session = None


def _post(
    session: requests.Session, url: str, body: bytes, headers: dict[str, str], timeout: tuple[float, float]
) -> requests.Response:
    """POST `body` to `url` without following redirects; the response is streamed (read it bounded).

    Session.post prepares every request from scratch (URL parsing and IDNA checks, merging headers
    and cookies, environment settings): more than half of a call's CPU time, measured in bench/run.py
    against a provider that answers at once. When the session does not consult the environment
    (no proxy configured, see http_session), each URL's request is prepared once per session and
    copied for each call, then handed to the session's transport adapter; cookies a provider sets
    are not sent back. Otherwise requests' usual path is taken.
    """
    if session.trust_env:
        return session.post(
            url, data=body, headers=headers, timeout=timeout, allow_redirects=False, stream=True
        )
    templates = session.__dict__.setdefault("prepared_by_url", {})
    template = templates.get(url)
    if template is None:
        template = templates[url] = requests.PreparedRequest()
        template.prepare(method="POST", url=url, headers=dict(session.headers), data=b"")
    prepared = template.copy()
    prepared.headers.update(headers)
    prepared.body = body
    prepared.headers["Content-Length"] = str(len(body))
    return session.get_adapter(url).send(
        prepared, stream=True, timeout=timeout, verify=session.verify, cert=session.cert, proxies={}
    )


@dataclass
class CallResult:
    """What one HTTP call did. Times: `started_at` aware UTC, `duration_ms` milliseconds."""

    url: str
    started_at: datetime
    duration_ms: int = 0
    http_status: int | None = None
    ok: bool = False
    transient: bool = False
    error_kind: str = ""
    error: str = ""
    response_text: str = ""
    retry_after: float | None = None  # seconds, from a Retry-After header
    location: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        """The response body parsed as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.response_text)
        except ValueError:
            return None


class ProviderError(Exception):
    """A failed outbound call. `transient` decides retry (True) versus fail now (False)."""

    def __init__(self, result: CallResult):
        super().__init__(result.error)
        self.result = result

    @property
    def transient(self) -> bool:
        return self.result.transient


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Return seconds to wait from a Retry-After header (delay-seconds or HTTP-date), or None.

    Source: RFC 9110, section 10.2.3.
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - (now or timezone.now())).total_seconds())


def excerpt(text: str) -> str:
    """Return at most EXCERPT_CHARS characters of `text`, marking the cut."""
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"


class ProviderClient:
    """Base for provider clients: POST JSON with timeouts, no redirects, and a bounded read.

    Timeouts (seconds) come from PROVIDER_CONNECT_TIMEOUT and PROVIDER_READ_TIMEOUT, both below the
    RQ job timeout, so a hung provider fails the attempt instead of the job being killed.
    """

    name = "provider"

    def __init__(self, *, connect_timeout: float | None = None, read_timeout: float | None = None):
        self.timeout = (
            connect_timeout or settings.PROVIDER_CONNECT_TIMEOUT,
            read_timeout or settings.PROVIDER_READ_TIMEOUT,
        )

    def post_json(self, url: str, payload: Any, *, headers: dict[str, str] | None = None) -> CallResult:
        """POST `payload` as JSON to `url` and return a CallResult; never raises for HTTP outcomes.

        `result.ok` is True for a 2xx. A 3xx is a permanent failure that records its Location.
        """
        body = json.dumps(payload, separators=(",", ":")).encode()
        return self.post_bytes(url, body, headers={"Content-Type": "application/json", **(headers or {})})

    def post_bytes(
        self, url: str, body: bytes, *, headers: dict[str, str], session: requests.Session | None = None
    ) -> CallResult:
        """POST raw `body` bytes; same contract as post_json.

        `session` replaces this thread's shared session (callbacks pass one pinned to a checked address).
        """
        result = CallResult(url=url, started_at=timezone.now())
        started = time.monotonic()
        try:
            response = _post(session or http_session(), url, body, headers, self.timeout)
            try:
                raw = response.raw.read(MAX_RESPONSE_BYTES, decode_content=True) or b""
            finally:
                response.close()
            result.http_status = response.status_code
            result.response_text = raw.decode(response.encoding or "utf-8", errors="replace")
            self.classify(result, response)
        except requests.Timeout as exc:
            result.transient, result.error_kind = True, type(exc).__name__
            result.error = f"{type(exc).__name__}: no answer within {self.timeout[0]:g}s connect / {self.timeout[1]:g}s read"
        except requests.RequestException as exc:
            result.transient, result.error_kind = True, type(exc).__name__
            result.error = excerpt(f"{type(exc).__name__}: {exc}")
        result.duration_ms = int((time.monotonic() - started) * 1000)
        return result

    def classify(self, result: CallResult, response: requests.Response) -> None:
        """Set ok / transient / error fields of `result` from the HTTP status."""
        status = response.status_code
        if 200 <= status < 300:
            result.ok = True
            return
        result.error_kind = f"http_{status}"
        reason = _reason_from_body(result.response_text) or response.reason or ""
        if 300 <= status < 400:
            result.location = response.headers.get("Location", "")
            result.error = excerpt(
                f"HTTP {status} redirect to {result.location or '(no Location)'}; redirects are not followed"
            )
        elif status == 429 or status >= 500:
            result.transient = True
            result.retry_after = parse_retry_after(response.headers.get("Retry-After"))
            result.error = excerpt(f"HTTP {status}: {reason}".rstrip(": "))
        else:
            result.error = excerpt(f"HTTP {status}: {reason}".rstrip(": "))


def _reason_from_body(text: str) -> str:
    """Pull a provider's reason out of a JSON error body ({"error": ...}, {"message": ...}), else the text."""
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:500]
    if isinstance(data, dict):
        for key in ("error", "message", "detail", "reason"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("message") or json.dumps(value)
            if value:
                return str(value)[:500]
    return text.strip()[:500]

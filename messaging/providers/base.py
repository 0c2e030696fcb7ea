"""What every outbound HTTP call shares: a total deadline, timeouts, headers, bounded reads, error
classification.

Classification (README, "How delivery works"): 5xx, 429, timeouts (per read or of the whole call)
and connection errors are transient (retried with backoff, honouring Retry-After); a redirect or any
other 4xx is permanent. Whatever the other side answers (headers, charset, body), a call ends in a
CallResult and never in an exception (messaging.lib.answers reads the answer defensively).
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import requests
import urllib3
from django.conf import settings
from django.utils import timezone

from messaging.lib import answers
from messaging.lib.deadline import Deadline, DeadlineAdapter

# Bytes of a response body read at most; the rest is never downloaded.
MAX_RESPONSE_BYTES = 64 * 1024
# Characters of a response or error kept in the database.
EXCERPT_CHARS = 2000
# Bytes read from the socket at a time, so the deadline is checked between reads.
READ_CHUNK_BYTES = 8 * 1024
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
    A provider's credentials come from settings, never from ~/.netrc. Its connections honour the
    calling thread's Deadline (messaging.lib.deadline).
    """
    session = getattr(_local, "session", None)
    if session is None:
        session = requests.Session()
        session.headers["User-Agent"] = USER_AGENT
        for prefix in ("http://", "https://"):
            session.mount(prefix, DeadlineAdapter())
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
        """The response body parsed as JSON, or None when it is not JSON (never raises, see
        messaging.lib.answers.loads)."""
        return answers.loads(self.response_text)


class ProviderError(Exception):
    """A failed outbound call. `transient` decides retry (True) versus fail now (False)."""

    def __init__(self, result: CallResult):
        super().__init__(result.error)
        self.result = result

    @property
    def transient(self) -> bool:
        return self.result.transient


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait asked by a Retry-After header value, at most RETRY_BACKOFF_MAX; None when it is
    missing or invalid. Source: RFC 9110, section 10.2.3 (see messaging.lib.answers)."""
    return answers.parse_retry_after(value, cap=settings.RETRY_BACKOFF_MAX, now=now)


def excerpt(text: str) -> str:
    """Return at most EXCERPT_CHARS characters of `text`, marking the cut, storable in the database
    (NUL characters and lone surrogates replaced)."""
    text = answers.storable(text)
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "…"


class DeadlineExceeded(Exception):
    """The whole call (connect, send, response headers and body) took longer than its deadline."""


class ProviderClient:
    """Base for provider clients: POST JSON within a total deadline, no redirects, a bounded read.

    Each call gets `deadline` seconds in all (PROVIDER_DEADLINE_SECONDS unless given; the name of
    the setting, `deadline_setting`, goes into the error), from the first connect to the last byte of
    the answer; within it, connecting waits at most `connect_timeout` (PROVIDER_CONNECT_TIMEOUT) and
    each read `read_timeout` (PROVIDER_READ_TIMEOUT) seconds. Settings keep the deadlines of one job
    below RQ_JOB_TIMEOUT, so a slow provider fails its attempt instead of the job being killed.
    """

    name = "provider"

    def __init__(
        self,
        *,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        deadline: float | None = None,
        deadline_setting: str = "PROVIDER_DEADLINE_SECONDS",
    ):
        self.timeout = (
            connect_timeout or settings.PROVIDER_CONNECT_TIMEOUT,
            read_timeout or settings.PROVIDER_READ_TIMEOUT,
        )
        self.deadline = deadline or getattr(settings, deadline_setting)
        self.deadline_setting = deadline_setting

    def post_json(self, url: str, payload: Any, *, headers: dict[str, str] | None = None) -> CallResult:
        """POST `payload` as JSON to `url` and return a CallResult; never raises for HTTP outcomes.

        `result.ok` is True for a 2xx. A 3xx is a permanent failure that records its Location.
        """
        body = json.dumps(payload, separators=(",", ":")).encode()
        return self.post_bytes(url, body, headers={"Content-Type": "application/json", **(headers or {})})

    def post_bytes(
        self,
        url: str,
        body: bytes,
        *,
        headers: dict[str, str],
        session: requests.Session | None = None,
        seconds_left: float | None = None,
    ) -> CallResult:
        """POST raw `body` bytes; same contract as post_json. Never raises for anything the other side
        does: a call over its deadline is a transient error of kind `deadline_exceeded` ("no
        complete answer within N s"), a connection or protocol failure (including a body that does
        not decompress) a transient error named after it.

        `session` replaces this thread's shared session (callbacks pass one pinned to a checked
        address); its adapter must be a DeadlineAdapter for the deadline to cut a dripping answer.
        `seconds_left`: seconds this call may take when less than the client's deadline is left (the
        callback's DNS lookup took the rest).
        """
        result = CallResult(url=url, started_at=timezone.now())
        started = time.monotonic()
        budget = self.deadline if seconds_left is None else min(seconds_left, self.deadline)
        with Deadline(budget) as deadline:
            # Neither the connect nor any single read may outlast the deadline.
            timeout = (min(self.timeout[0], budget), min(self.timeout[1], budget))
            try:
                response = _post(session or http_session(), url, body, headers, timeout)
                try:
                    raw = _read_bounded(response, deadline)
                finally:
                    response.close()
                result.http_status = response.status_code
                result.response_text = answers.decode(raw, response.encoding)
                self.classify(result, response)
            except (
                DeadlineExceeded,
                requests.RequestException,
                urllib3.exceptions.HTTPError,
                http.client.HTTPException,
                OSError,
            ) as exc:
                self._failed(result, exc, deadline)
        result.duration_ms = int((time.monotonic() - started) * 1000)
        return result

    def _failed(self, result: CallResult, exc: BaseException, deadline: Deadline) -> None:
        result.ok, result.transient, result.retry_after = False, True, None
        if deadline.expired or deadline.check():
            result.error_kind = "deadline_exceeded"
            result.error = (
                f"No complete answer within {self.deadline:g} s ({self.deadline_setting}: connect, send, "
                "response headers and body together); the call was cut off."
            )
        elif isinstance(exc, requests.Timeout | urllib3.exceptions.TimeoutError | TimeoutError):
            result.error_kind = type(exc).__name__
            result.error = (
                f"{type(exc).__name__}: no answer within {self.timeout[0]:g}s connect / "
                f"{self.timeout[1]:g}s read"
            )
        else:
            result.error_kind = type(exc).__name__[:64]
            result.error = excerpt(f"{type(exc).__name__}: {exc}")

    def classify(self, result: CallResult, response: requests.Response) -> None:
        """Set ok / transient / error fields of `result` from the HTTP status (and, for 429 and
        5xx, the Retry-After header, read by `parse_retry_after`)."""
        status = response.status_code
        if 200 <= status < 300:
            result.ok = True
            return
        result.error_kind = f"http_{status}"
        reason = _reason_from_body(result.response_text) or answers.storable(response.reason or "")
        if 300 <= status < 400:
            result.location = excerpt(response.headers.get("Location", ""))
            result.error = excerpt(
                f"HTTP {status} redirect to {result.location or '(no Location)'}; redirects are not followed"
            )
        elif status == 429 or status >= 500:
            result.transient = True
            result.retry_after = parse_retry_after(response.headers.get("Retry-After"))
            result.error = excerpt(f"HTTP {status}: {reason}".rstrip(": "))
        else:
            result.error = excerpt(f"HTTP {status}: {reason}".rstrip(": "))


def _read_bounded(response: requests.Response, deadline: Deadline) -> bytes:
    """Read at most MAX_RESPONSE_BYTES of the (decoded) body in chunks; raise DeadlineExceeded once
    the deadline has passed (the watcher also cuts the socket of a read blocked at that moment)."""
    chunks: list[bytes] = []
    size = 0
    while size < MAX_RESPONSE_BYTES:
        if deadline.check():
            raise DeadlineExceeded
        chunk = response.raw.read(min(READ_CHUNK_BYTES, MAX_RESPONSE_BYTES - size), decode_content=True)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if deadline.expired:
        raise DeadlineExceeded
    return b"".join(chunks)


def _reason_from_body(text: str) -> str:
    """Pull a provider's reason out of a JSON error body ({"error": "..."}, {"error": {"message":
    "..."}}, {"message": ...}, "detail", "reason"), else the start of the text."""
    data = answers.json_object(text)
    if data is not None:
        for key in ("error", "message", "detail", "reason"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("message")
            reason = answers.short_text(value, 500)
            if reason:
                return reason
    return answers.storable(text.strip()[:500])

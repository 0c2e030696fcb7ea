"""Settings for the queue service, read from the environment with django-environ.

Every variable is listed with a comment in `.env.example`. `DJANGO_ENV` picks the defaults:

- ``development``: DEBUG and the built-in sandbox provider on; a random SECRET_KEY per process when
  none is set (sessions then end on restart, so `make run` writes one to `.env`).
- ``test``: like development but quiet, with fast retries; used by pytest (see pyproject.toml).
- ``production`` (the default): no secret has a default; a missing or malformed value stops the
  process at start with ImproperlyConfigured.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured
from limits import parse as limits_parse

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A local .env (written by `make run`) is read when present; real environment variables win. The test
# suite ignores it so a developer's settings cannot change test results.
if os.environ.get("DJANGO_ENV") != "test":
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DJANGO_ENV = env.str("DJANGO_ENV", default="production")
if DJANGO_ENV not in {"development", "test", "production"}:
    raise ImproperlyConfigured(f"DJANGO_ENV must be development, test or production, not {DJANGO_ENV!r}")
IS_PRODUCTION = DJANGO_ENV == "production"
IS_TEST = DJANGO_ENV == "test"

DEBUG = env.bool("DEBUG", default=DJANGO_ENV == "development")

_secret = env.str("SECRET_KEY", default="")
if not _secret:
    if IS_PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY is required in production (generate one with `make .env`).")
    _secret = secrets.token_urlsafe(50)
elif IS_PRODUCTION and (len(_secret) < 32 or _secret.startswith(("change-me", "django-insecure"))):
    raise ImproperlyConfigured("SECRET_KEY is a placeholder or shorter than 32 characters.")
SECRET_KEY = _secret

ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=[] if IS_PRODUCTION else ["localhost", "127.0.0.1", "[::1]", "testserver"]
)
if IS_PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS is required in production (comma-separated host names).")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    # Before django_rq: its `rqworker` command is extended here (--concurrency).
    "messaging",
    "django_rq",
    "axes",
    "csp",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes requires: turns a locked-out login into its lockout response.
    "axes.middleware.AxesMiddleware",
]
# Machine endpoints (config/wsgi.py): paths answered to programs, and the only middleware they get.
# SecurityMiddleware keeps HTTPS redirects and HSTS; CommonMiddleware checks the Host header against
# ALLOWED_HOSTS. No sessions, CSRF, login lockout, messages or Content-Security-Policy: no HTML here.
MACHINE_PATHS = ("/api/", "/health", "/metrics")
MACHINE_MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboard.context_processors.service",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while a worker writes; IMMEDIATE transactions take the write lock
    # up front so concurrent writers wait (up to `timeout` seconds) instead of failing with
    # "database is locked" half-way through.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    )
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / "test_db.sqlite3")}
# Keep connections between requests: opening one (and, on SQLite, running the PRAGMAs) costs more than
# a whole API request. Not in development: `runserver` handles each request on a new thread, so kept
# connections are never reused and pile up until PostgreSQL refuses new clients.
DATABASES["default"]["CONN_MAX_AGE"] = env.int(
    "DATABASE_CONN_MAX_AGE", default=0 if DJANGO_ENV == "development" else 60
)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis and queues -----------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
if IS_TEST:
    # Tests flush their Redis database: keep them off the one a developer's `make run` uses.
    REDIS_URL = env.str("TEST_REDIS_URL", default="redis://127.0.0.1:6379/15")
# Seconds; a Redis call that takes longer fails instead of hanging a web request.
REDIS_SOCKET_TIMEOUT = env.float("REDIS_SOCKET_TIMEOUT", default=2.0)
# Seconds to wait for a TCP connection to Redis; short, so an unreachable Redis costs a request little.
REDIS_CONNECT_TIMEOUT = env.float("REDIS_CONNECT_TIMEOUT", default=1.0)
# Seconds the web and workers stop trying Redis for enqueueing after a connection failure (messages
# stay `accepted` for the sweep meanwhile), so an outage does not slow every request down.
REDIS_RETRY_AFTER_SECONDS = env.float("REDIS_RETRY_AFTER_SECONDS", default=2.0)
# Milliseconds a write made inside a caller's transaction (not through the group committer) waits
# to be enqueued with others in one Redis pipeline (RQ's enqueue_many, off the request's path); 0
# enqueues at once. Messages are committed first, so a process that dies before its flush leaves them
# to the sweep.
ENQUEUE_BATCH_MS = env.float("ENQUEUE_BATCH_MS", default=0.0 if IS_TEST else 5.0)
# Group commit (messaging.lib.groupcommit): a web process stores the single-message requests of its
# threads together, one transaction per group, and answers each 202 after the commit holding its row.
# Off: each request commits on its own. Seconds a request waits for its commit before answering 503.
GROUP_COMMIT = env.bool("GROUP_COMMIT", default=True)
GROUP_COMMIT_TIMEOUT_SECONDS = env.float("GROUP_COMMIT_TIMEOUT_SECONDS", default=20.0)
# Milliseconds the committer gathers requests after the first of a group arrives: a little latency
# for fewer, larger transactions and shared delivery jobs (README, "Performance").
GROUP_COMMIT_WAIT_MS = env.float("GROUP_COMMIT_WAIT_MS", default=2.0)
# Seconds a delivery job may run before RQ kills it; every outbound timeout is shorter than this.
RQ_JOB_TIMEOUT = env.int("RQ_JOB_TIMEOUT", default=60)
_queue = {"URL": REDIS_URL, "DEFAULT_TIMEOUT": RQ_JOB_TIMEOUT}
# The delivery queues only: `manage.py rqscheduler` (messaging's) runs on the sms queue's connection.
RQ_QUEUES = {name: dict(_queue) for name in ("sms", "email", "ai")}

RQ_SHOW_ADMIN_LINK = True
# `manage.py rqworker` uses the concurrent worker (messaging/delivery/worker.py): many deliveries in
# flight per process; it logs queues, retry policy, rate limits and provider URLs at start, and waits
# for Redis to come back instead of exiting. Every job gets the retention of
# messaging.queues.RetainedJob unless it sets its own; the scheduler survives Redis restarts and
# re-registers the periodic jobs (messaging/delivery/periodic.py).
RQ = {
    "JOB_CLASS": "messaging.queues.RetainedJob",
    "WORKER_CLASS": "messaging.delivery.worker.Worker",
    "SCHEDULER_CLASS": "messaging.delivery.periodic.MaintainingScheduler",
}
# Deliveries (provider calls) one worker process keeps in flight (`rqworker --concurrency N` too).
# Chosen by measurement (README, "Performance"): 32 keeps a 100 ms provider busy from one process
# without the threads fighting over the interpreter; a batch job of a bulk send uses the same
# threads. BULK_DELIVERY_CONCURRENCY is its earlier name.
WORKER_CONCURRENCY = env.int("WORKER_CONCURRENCY", default=env.int("BULK_DELIVERY_CONCURRENCY", default=32))
# Threads for the other jobs a worker runs (the sweep, retention); each may hold a database connection.
WORKER_JOB_THREADS = env.int("WORKER_JOB_THREADS", default=2)
if WORKER_CONCURRENCY < 1 or WORKER_JOB_THREADS < 1:
    raise ImproperlyConfigured("WORKER_CONCURRENCY and WORKER_JOB_THREADS must be at least 1.")

# --- Recovery, idempotency and retention ----------------------------------------------------------
# Seconds between runs of the outbox sweep (a periodic rq-scheduler job; also `manage.py sweep_messages`).
SWEEP_INTERVAL_SECONDS = env.int("SWEEP_INTERVAL_SECONDS", default=5)
# Seconds a message must have been waiting before the sweep touches it (covers the enqueue-after-commit gap).
SWEEP_GRACE_SECONDS = env.float("SWEEP_GRACE_SECONDS", default=5.0)
# Seconds past its time a scheduled job may still sit in rq-scheduler before the sweep queues it directly.
SWEEP_OVERDUE_SECONDS = env.int("SWEEP_OVERDUE_SECONDS", default=30)
# Seconds past RQ_JOB_TIMEOUT after which a message still `sending` (worker killed) is retried or failed.
SWEEP_SENDING_GRACE_SECONDS = env.int("SWEEP_SENDING_GRACE_SECONDS", default=30)
# Hours an Idempotency-Key and its first response are kept (at least 24).
IDEMPOTENCY_KEY_TTL_HOURS = env.int("IDEMPOTENCY_KEY_TTL_HOURS", default=24)
if IDEMPOTENCY_KEY_TTL_HOURS < 24:
    raise ImproperlyConfigured("IDEMPOTENCY_KEY_TTL_HOURS must be at least 24.")
# Seconds after which a request still marked in progress (its process died) no longer blocks its key.
IDEMPOTENCY_LOCK_SECONDS = env.int("IDEMPOTENCY_LOCK_SECONDS", default=60)
# Days after which recipients and contents of finished messages are cleared (counts stay); 0 = never.
MESSAGE_RETENTION_DAYS = env.int("MESSAGE_RETENTION_DAYS", default=30)
# Finished RQ jobs kept per queue at most (results also expire after 7 days).
RQ_FINISHED_JOBS_MAX = env.int("RQ_FINISHED_JOBS_MAX", default=10_000)
# Bearer token for GET /metrics (Prometheus); unset = the endpoint answers 404.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# --- Delivery policy ------------------------------------------------------------------------------
DELIVERY_MAX_ATTEMPTS = env.int("DELIVERY_MAX_ATTEMPTS", default=3)
# Backoff before retry n (1-based) is BASE * FACTOR**(n-1) seconds, capped at MAX, unless the provider
# sent Retry-After. The earlier service used exponential backoff from 1 s.
RETRY_BACKOFF_BASE = env.float("RETRY_BACKOFF_BASE", default=0.5 if IS_TEST else 1.0)
RETRY_BACKOFF_FACTOR = env.float("RETRY_BACKOFF_FACTOR", default=2.0)
RETRY_BACKOFF_MAX = env.float("RETRY_BACKOFF_MAX", default=300.0)
# Seconds to connect to the SMS / Email API and to wait for each read of its answer.
PROVIDER_CONNECT_TIMEOUT = env.float("PROVIDER_CONNECT_TIMEOUT", default=5.0)
PROVIDER_READ_TIMEOUT = env.float("PROVIDER_READ_TIMEOUT", default=15.0)
# Seconds one SMS / Email API call may take in all (connect, send, headers and body): the read
# timeout applies to each read, so without this a provider sending a byte at a time holds the call.
PROVIDER_DEADLINE_SECONDS = env.float(
    "PROVIDER_DEADLINE_SECONDS", default=PROVIDER_CONNECT_TIMEOUT + PROVIDER_READ_TIMEOUT
)
if not 0 < PROVIDER_DEADLINE_SECONDS < RQ_JOB_TIMEOUT:
    raise ImproperlyConfigured("PROVIDER_DEADLINE_SECONDS must be above 0 and below RQ_JOB_TIMEOUT.")
# Seconds an API process caches API keys and workspaces: a revoked key or a workspace edited in admin
# takes effect everywhere within this time.
API_KEY_CACHE_SECONDS = env.float("API_KEY_CACHE_SECONDS", default=5.0)
WORKSPACE_CACHE_SECONDS = env.float("WORKSPACE_CACHE_SECONDS", default=30.0)
# Bulk sends: messages per request at most, and per batch job.
BULK_MAX_ITEMS = env.int("BULK_MAX_ITEMS", default=1000)
BULK_BATCH_SIZE = env.int("BULK_BATCH_SIZE", default=100)
# Longest a message may be scheduled ahead, in days.
SCHEDULE_MAX_DAYS = env.int("SCHEDULE_MAX_DAYS", default=366)
# Largest request body the API accepts, in bytes (a 1,000-item bulk request fits).
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=2_000_000)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES + 1

# --- Providers ------------------------------------------------------------------------------------
SANDBOX_ENABLED = env.bool("SANDBOX_ENABLED", default=not IS_PRODUCTION)
# Base URL the sandbox is reachable at from the workers (used as the provider default in development):
# by default this machine on PORT, the port `make run` serves on.
SANDBOX_BASE_URL = env.str(
    "SANDBOX_BASE_URL", default=f"http://127.0.0.1:{env.int('PORT', default=8000)}/sandbox"
)
_provider_default = SANDBOX_BASE_URL if SANDBOX_ENABLED else ""
SMS_API_URL = env.str("SMS_API_URL", default=_provider_default).rstrip("/")
EMAIL_API_URL = env.str("EMAIL_API_URL", default=_provider_default).rstrip("/")
EMAIL_API_PATH = env.str("EMAIL_API_PATH", default="/api/email/send")
if IS_PRODUCTION and not SMS_API_URL:
    raise ImproperlyConfigured("SMS_API_URL is required in production.")

# AI replies: an OpenAI-compatible chat-completions API ({AI_API_URL}/chat/completions). Empty means
# replies are simulated (clearly labelled). Development defaults to the sandbox's deterministic one.
AI_API_URL = env.str(
    "AI_API_URL", default=SANDBOX_BASE_URL if SANDBOX_ENABLED and DJANGO_ENV == "development" else ""
).rstrip("/")
AI_API_KEY = env.str("AI_API_KEY", default="")
AI_MODEL = env.str("AI_MODEL", default="gpt-4o-mini")
# Largest reply, in tokens, asked of the model.
AI_MAX_TOKENS = env.int("AI_MAX_TOKENS", default=300)
# System prompt when the workspace has none of its own (Workspace.ai_system_prompt in admin).
AI_SYSTEM_PROMPT = env.str(
    "AI_SYSTEM_PROMPT",
    default="You reply to a customer's text message on behalf of a business. Be brief, friendly and accurate.",
)
# Seconds to wait for each read of the model's answer (generation is slower than a provider call),
# and for the whole call (connecting with PROVIDER_CONNECT_TIMEOUT).
AI_READ_TIMEOUT = env.float("AI_READ_TIMEOUT", default=30.0)
AI_DEADLINE_SECONDS = env.float("AI_DEADLINE_SECONDS", default=PROVIDER_CONNECT_TIMEOUT + AI_READ_TIMEOUT)

# Callbacks (AI replies POSTed to the client's callback_url).
# Standard Webhooks signing secret, "whsec_" + base64 of 24-64 random bytes; empty sends unsigned callbacks.
CALLBACK_SIGNING_SECRET = env.str("CALLBACK_SIGNING_SECRET", default="")
if CALLBACK_SIGNING_SECRET:
    try:
        _raw_secret = base64.b64decode(CALLBACK_SIGNING_SECRET.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImproperlyConfigured("CALLBACK_SIGNING_SECRET must be whsec_ followed by base64.") from exc
    if not 24 <= len(_raw_secret) <= 64:
        raise ImproperlyConfigured("CALLBACK_SIGNING_SECRET must encode 24 to 64 random bytes.")
# "host" or "host:port" entries a callback may target even when they resolve to a loopback or private
# address. Development and test allow the sandbox (host:port of SANDBOX_BASE_URL).
CALLBACK_ALLOWED_HOSTS = [
    host.lower()
    for host in env.list(
        "CALLBACK_ALLOWED_HOSTS",
        default=[urlsplit(SANDBOX_BASE_URL).netloc] if SANDBOX_ENABLED and not IS_PRODUCTION else [],
    )
]
# Seconds to wait for a callback target to accept the connection and for each read of its answer,
# and for the whole callback (a receiver answering a byte at a time is cut off then).
CALLBACK_CONNECT_TIMEOUT = env.float("CALLBACK_CONNECT_TIMEOUT", default=3.0)
CALLBACK_READ_TIMEOUT = env.float("CALLBACK_READ_TIMEOUT", default=10.0)
CALLBACK_DEADLINE_SECONDS = env.float(
    "CALLBACK_DEADLINE_SECONDS", default=CALLBACK_CONNECT_TIMEOUT + CALLBACK_READ_TIMEOUT
)
# Seconds a callback host's DNS lookup may take, at the API (then the request is accepted and the
# host checked again at send) and at send (within CALLBACK_DEADLINE_SECONDS; then a retry). The OS
# resolver has no timeout of its own and the name server may be the client's.
CALLBACK_RESOLVE_TIMEOUT_SECONDS = env.float("CALLBACK_RESOLVE_TIMEOUT_SECONDS", default=2.0)
if not 0 < CALLBACK_RESOLVE_TIMEOUT_SECONDS <= 30:
    raise ImproperlyConfigured("CALLBACK_RESOLVE_TIMEOUT_SECONDS must be above 0 and at most 30.")
if AI_DEADLINE_SECONDS <= 0 or CALLBACK_DEADLINE_SECONDS <= 0:
    raise ImproperlyConfigured("AI_DEADLINE_SECONDS and CALLBACK_DEADLINE_SECONDS must be above 0.")
if AI_DEADLINE_SECONDS + CALLBACK_DEADLINE_SECONDS >= RQ_JOB_TIMEOUT:
    raise ImproperlyConfigured(
        "An AI job (generation then callback) must fit in RQ_JOB_TIMEOUT: AI_DEADLINE_SECONDS + "
        "CALLBACK_DEADLINE_SECONDS must be below it (lower them, or raise RQ_JOB_TIMEOUT)."
    )

# --- Rate limits (the `limits` library's notation, e.g. "5/minute", "50/second"; empty turns one off) -
# Defaults are the earlier service's. AI requests are counted at the API (429 with Retry-After);
# delivery rates in the workers, where a job over the limit is deferred without using an attempt.
AI_RATE_LIMIT_PER_KEY = env.str("AI_RATE_LIMIT_PER_KEY", default="5/minute")
AI_RATE_LIMIT_PER_WORKSPACE = env.str("AI_RATE_LIMIT_PER_WORKSPACE", default="100/minute")
# Per API key, over all its workspaces and rate_limit_keys (workspaces are created on first use, so
# the per-workspace limit alone does not bound a key). The default matches DELIVERY_RATE_AI's: a key
# cannot queue AI work faster than the workers deliver it.
AI_RATE_LIMIT_PER_API_KEY = env.str("AI_RATE_LIMIT_PER_API_KEY", default="600/minute")
DELIVERY_RATE_LIMITS = {
    "sms": env.str("DELIVERY_RATE_SMS", default="50/second"),
    "email": env.str("DELIVERY_RATE_EMAIL", default="100/second"),
    "ai": env.str("DELIVERY_RATE_AI", default="10/second"),
}
# Milliseconds added to every delivery-rate window. A call starts within half of it after its
# reserved slot (or is given a new slot), and the other half covers the time until it reaches the
# provider, so no window of the limit's length at the provider sees more calls than the limit. At
# 20/second that means 20 calls in any 1.1 s (about 18 a second sustained); 100 ms held on this
# project's 2-core test machine with every core busy, 50 ms did not always.
DELIVERY_RATE_GUARD_MS = env.float("DELIVERY_RATE_GUARD_MS", default=100.0)
if not 0 <= DELIVERY_RATE_GUARD_MS <= 1000:
    raise ImproperlyConfigured("DELIVERY_RATE_GUARD_MS must be between 0 and 1000.")
for _name, _spec in [
    ("AI_RATE_LIMIT_PER_KEY", AI_RATE_LIMIT_PER_KEY),
    ("AI_RATE_LIMIT_PER_WORKSPACE", AI_RATE_LIMIT_PER_WORKSPACE),
    ("AI_RATE_LIMIT_PER_API_KEY", AI_RATE_LIMIT_PER_API_KEY),
    *[(f"DELIVERY_RATE_{channel.upper()}", spec) for channel, spec in DELIVERY_RATE_LIMITS.items()],
]:
    if _spec:
        try:
            limits_parse(_spec)
        except ValueError as exc:
            raise ImproperlyConfigured(f"{_name}={_spec!r} is not a rate limit such as 50/second.") from exc

# --- Static files ---------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=str(BASE_DIR / "staticfiles"))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if IS_TEST
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# --- Auth, i18n -----------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"
# django-axes first: it refuses a locked-out client before any password is checked. Anything that calls
# authenticate() must pass the request (tests use client.force_login, not client.login).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

if IS_PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# --- Security: login lockout, Content-Security-Policy, API ingress limits -------------------------
# django-axes: this many wrong passwords in a row from one client address are answered as usual; the
# next one, and every login attempt for LOGIN_LOCKOUT_MINUTES after it, gets the lockout page (429).
LOGIN_MAX_FAILURES = env.int("LOGIN_MAX_FAILURES", default=5)
AXES_FAILURE_LIMIT = LOGIN_MAX_FAILURES + 1
AXES_COOLOFF_TIME = timedelta(minutes=env.float("LOGIN_LOCKOUT_MINUTES", default=15))
AXES_RESET_ON_SUCCESS = True
# The client address is REMOTE_ADDR (not a header a client could forge); behind a reverse proxy, have
# the proxy set it to the real client (see README, "Security").
AXES_LOCKOUT_PARAMETERS = ["ip_address"]
AXES_LOCKOUT_TEMPLATE = "registration/lockout.html"
AXES_VERBOSE = False

# django-csp 4 format. Pages load scripts, styles, images and fonts from this site only; no inline
# script or style, no eval, no framing, forms post only here.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'none'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
        "object-src": ["'none'"],
    }
}

# Requests per API key (limits' notation: "100/second", "6000/minute"); over it the API answers 429
# with Retry-After.
API_RATE_LIMIT_PER_KEY = env.str("API_RATE_LIMIT_PER_KEY", default="100/second")
try:
    limits_parse(API_RATE_LIMIT_PER_KEY)
except ValueError as exc:
    raise ImproperlyConfigured(
        f"API_RATE_LIMIT_PER_KEY {API_RATE_LIMIT_PER_KEY!r} is not a rate like 100/second."
    ) from exc
# Largest `metadata` object, in bytes of compact JSON.
API_MAX_METADATA_BYTES = env.int("API_MAX_METADATA_BYTES", default=16_384)
# `metadata` keys refused per provider (400 naming the key; dropped from the call for older messages):
# metadata is spread into the provider body, and these would change its sender, recipients or routing
# on an account every workspace shares (messaging/providers/metadata.py). Compared ignoring case and
# everything but letters and digits. Setting one replaces its whole list.
SMS_METADATA_DENIED_KEYS = env.list(
    "SMS_METADATA_DENIED_KEYS",
    default=[
        "from", "sender", "senderId", "originator", "src", "fromNumber", "messagingServiceSid",
        "to", "recipient", "recipients", "phoneNumber", "dst", "destination", "destinations",
        "cc", "bcc", "mediaUrl", "mediaUrls", "media", "statusCallback", "statusCallbackUrl",
        "callbackUrl", "webhookUrl", "headers",
    ],
)  # fmt: skip
EMAIL_METADATA_DENIED_KEYS = env.list(
    "EMAIL_METADATA_DENIED_KEYS",
    default=[
        "from", "fromEmail", "fromName", "sender", "replyTo", "returnPath", "to", "recipient",
        "recipients", "cc", "bcc", "headers", "envelope", "personalizations", "smtpapi", "xSmtpApi",
        "statusCallback", "callbackUrl", "webhookUrl",
    ],
)  # fmt: skip

_log_level = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        # Django's own format for runserver's request lines.
        "django.server": {
            "()": "django.utils.log.ServerFormatter",
            "format": "[{server_time}] {message}",
            "style": "{",
        },
    },
    # Phone numbers and email addresses are masked in every record (messaging.lib.pii); the filter on the
    # handler repeats that for records created before the messaging app loaded.
    "filters": {
        "mask_pii": {"()": "messaging.lib.pii.PiiMaskingFilter"},
        # The sandbox's deliberate error answers are not server errors (messaging.devtools.sandbox_logs).
        "sandbox_answers": {"()": "messaging.devtools.sandbox_logs.SandboxAnswerFilter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["mask_pii"]},
        "django.server": {
            "class": "logging.StreamHandler",
            "formatter": "django.server",
            "filters": ["mask_pii"],
        },
    },
    "root": {"handlers": ["console"], "level": _log_level},
    # Each line is written once: Django's default "django" logger and rq-scheduler's logger otherwise
    # carry handlers of their own besides the root's (rq-scheduler adds one when its logger has none).
    "loggers": {
        "django": {"level": _log_level},
        "django.db.backends": {"level": "WARNING"},
        "django.request": {"filters": ["sandbox_answers"]},
        "django.server": {
            "handlers": ["django.server"],
            "level": "INFO",
            "propagate": False,
            "filters": ["sandbox_answers"],
        },
        "rq_scheduler.scheduler": {"handlers": ["console"], "propagate": False},
    },
}

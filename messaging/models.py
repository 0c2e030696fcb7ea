"""Durable records of the service. The database, not Redis, is the source of truth."""

from __future__ import annotations

import uuid
import zoneinfo

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from .formats import check_phone_region, check_printable, check_workspace_id


def validate_timezone(value: str) -> None:
    """Raise ValidationError unless `value` is an IANA time zone name known to zoneinfo."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(f"{value!r} is not an IANA time zone name.") from exc


def validate_workspace_id(value: str) -> None:
    """Raise ValidationError unless `value` is a workspace ID (or alias) a client can send to the API
    (messaging.formats.check_workspace_id)."""
    try:
        check_workspace_id(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from exc


def validate_printable(value: str) -> None:
    """Raise ValidationError when `value` holds a character that is not printable (controls, format
    and zero-width characters, line separators): a display name shown in the dashboard and logs."""
    try:
        check_printable(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from exc


def validate_phone_region(value: str) -> None:
    """Raise ValidationError unless `value` is a phone region code (messaging.formats.check_phone_region)."""
    try:
        check_phone_region(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from exc


class Workspace(models.Model):
    """A client's workspace, known by the ID its backend sends (kept as the exact string)."""

    external_id = models.CharField(max_length=100, unique=True, validators=[validate_workspace_id])
    name = models.CharField(
        max_length=200,
        blank=True,
        validators=[validate_printable],
        help_text="Shown in the dashboard instead of the ID.",
    )
    timezone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[validate_timezone],
        help_text="IANA name; a scheduledFor without an offset is read in this zone.",
    )
    default_phone_region = models.CharField(
        max_length=2,
        blank=True,
        validators=[validate_phone_region],
        help_text="ISO 3166 region (e.g. US) used for phone numbers sent without a country code.",
    )
    ai_system_prompt = models.TextField(blank=True)
    sms_per_second = models.PositiveIntegerField(null=True, blank=True)
    email_per_second = models.PositiveIntegerField(null=True, blank=True)
    ai_per_minute = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "external_id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.external_id})" if self.name else self.external_id

    @property
    def display_name(self) -> str:
        return self.name or self.external_id


class WorkspaceAlias(models.Model):
    """Another ID (e.g. a generic "workspace-1") that resolves to the same workspace."""

    alias = models.CharField(max_length=100, unique=True, validators=[validate_workspace_id])
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="aliases")

    class Meta:
        verbose_name_plural = "workspace aliases"

    def __str__(self) -> str:
        return f"{self.alias} → {self.workspace.external_id}"


class ApiKey(models.Model):
    """An API key. Only the SHA-256 of the secret is stored; the key is shown once at creation."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    # Scope fails closed: a key may use every workspace only when `all_workspaces` says so, set
    # explicitly at creation; otherwise only the workspaces listed, and none when the list is empty
    # (deleting a key's last workspace never widens it).
    all_workspaces = models.BooleanField(
        default=False, help_text="The key may use every workspace (then leave the list below empty)."
    )
    workspaces = models.ManyToManyField(
        Workspace,
        blank=True,
        related_name="api_keys",
        help_text="The only workspaces the key may use, unless it is for every workspace. Empty: none.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    # Not a column: the primary keys of `workspaces`, filled in by workspaces.api_key_authenticate and
    # cached with the key, so the API's scope check costs no query (see workspaces.api_key_may_use).
    scope_workspace_pks: frozenset[int] | None = None

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class Channel(models.TextChoices):
    SMS = "sms", "SMS"
    EMAIL = "email", "Email"
    AI = "ai", "AI reply"


class Status(models.TextChoices):
    ACCEPTED = "accepted", "Accepted"
    QUEUED = "queued", "Queued"
    SCHEDULED = "scheduled", "Scheduled"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


WAITING_STATUSES = (Status.ACCEPTED, Status.QUEUED, Status.SCHEDULED)
FINAL_STATUSES = (Status.SENT, Status.FAILED, Status.CANCELLED)


class Message(models.Model):
    """One accepted request: an SMS, an email or an AI reply, with its delivery state.

    Times are aware UTC datetimes. `scheduled_for` is when the client asked for delivery;
    `next_attempt_at` is the earliest time the next delivery attempt may start (the scheduled time,
    or the end of a retry backoff); a job that arrives earlier defers itself.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    channel = models.CharField(max_length=8, choices=Channel.choices)
    # No index of its own: msg_ws_accepted starts with it (see Meta).
    workspace = models.ForeignKey(
        Workspace, on_delete=models.PROTECT, related_name="messages", db_index=False
    )
    # Not indexed: nothing reads messages by API key (see Meta).
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    contact_id = models.CharField(max_length=200, blank=True)
    # E.164 phone number, email address, or (AI) the callback URL's host.
    recipient = models.CharField(max_length=320, blank=True)
    subject = models.CharField(max_length=998, blank=True)
    body = models.TextField(blank=True)
    media_url = models.URLField(max_length=2000, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # SMS: segment count and encoding ("GSM-7" or "UCS-2").
    segments = models.PositiveIntegerField(null=True, blank=True)
    encoding = models.CharField(max_length=8, blank=True)
    # AI: the client's message id, callback target, rate-limit key and the generated reply.
    external_message_id = models.CharField(max_length=200, blank=True)
    callback_url = models.URLField(max_length=2000, blank=True)
    rate_limit_key = models.CharField(max_length=200, blank=True)
    response_text = models.TextField(blank=True)
    ai_model = models.CharField(max_length=100, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    generation_ms = models.PositiveIntegerField(null=True, blank=True)
    generated_at = models.DateTimeField(null=True, blank=True)

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACCEPTED)
    scheduled_for = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    last_error = models.TextField(blank=True)
    # For grouping failures: "http_400", "http_503", "ConnectTimeout", ...
    error_kind = models.CharField(max_length=64, blank=True)
    provider_status = models.PositiveIntegerField(null=True, blank=True)
    provider_response = models.TextField(blank=True)
    provider_message_id = models.CharField(max_length=200, blank=True)
    rq_job_id = models.CharField(max_length=64, blank=True)

    accepted_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    sending_started_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Set when the retention job cleared recipient and content; the counts for metrics remain.
    redacted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-accepted_at"]
        # Every index here costs each POST that stores a message (one B-tree insert per index that
        # holds the new row), so each one names the reads that need it. Partial indexes on `sent` and
        # `failed` rows cost nothing on intake: a message enters them only when it is delivered or
        # fails. The workspace foreign key has no index of its own (msg_ws_accepted starts with it);
        # api_key has none at all (no read filters on it; deleting an API key, which admin allows but
        # revoking makes unnecessary, scans the table once to clear the column).
        # The partial indexes on one status keep `status` as their last column although it is constant
        # in each: SQLite reads a query from an index alone only when the index holds every column the
        # query names, the condition's included. Not first: PostgreSQL drops `status = ...` from a scan
        # of a partial index on that status, and would then read the whole index to find a range of
        # the column after it.
        indexes = [
            # Messages page, unfiltered or by date, newest first (keyset on accepted_at); the earliest
            # message (rollup.first_activity: the start of "all time").
            models.Index(fields=["accepted_at"], name="msg_accepted"),
            # Messages page and workspace page for one workspace, newest first; a workspace's first
            # message (its all-time chart); the check for messages before a workspace is deleted.
            models.Index(fields=["workspace", "accepted_at"], name="msg_ws_accepted"),
            # Messages page filtered by status, newest first; the sweep's reads of accepted, sending,
            # queued and scheduled messages in accepted_at order; retention's finished messages.
            models.Index(fields=["status", "accepted_at"], name="msg_status_accepted"),
            # Waiting messages only: the overview's waiting counts per workspace and channel
            # (numbers.waiting_counts) and the queue strip's delayed counts (queue_stats.delayed_counts),
            # both read from the index alone.
            models.Index(
                fields=["status", "workspace", "channel", "next_attempt_at"],
                name="msg_waiting",
                condition=Q(status="accepted") | Q(status="queued") | Q(status="scheduled"),
            ),
            # Scheduled messages only: /scheduled/, soonest first (selectors.scheduled_messages).
            models.Index(
                fields=["scheduled_for", "status"], name="msg_scheduled_for", condition=Q(status="scheduled")
            ),
            # Sent messages only: sent counts of the hours the rollup has not closed and of its
            # recompute (rollup._live_rows), the last hour's per-minute chart; read from the index alone.
            models.Index(
                fields=["sent_at", "workspace", "channel", "status"],
                name="msg_sent_at",
                condition=Q(status="sent"),
            ),
            # Failed messages only: failed counts like msg_sent_at, and a workspace page's failure
            # groups over its window (selectors.failed_message_groups with workspace and since).
            models.Index(
                fields=["failed_at", "workspace", "channel", "error_kind", "status"],
                name="msg_failed_at",
                condition=Q(status="failed"),
            ),
            # Failed messages only, by group: /failures/ and a workspace page's errors (counts, first
            # and last seen, latest example; read from the index alone), a group's count and retry
            # (failed_group_count, services.failed_group_retry), failed messages per queue
            # (queue_stats.failed_message_counts).
            models.Index(
                fields=["channel", "error_kind", "failed_at", "workspace", "status"],
                name="msg_failed_group",
                condition=Q(status="failed"),
            ),
            # Failed messages only, newest first: the messages page filtered to failed messages. Without
            # it SQLite prefers msg_failed_group (fewer rows) and sorts every failed message.
            models.Index(
                fields=["accepted_at", "status"], name="msg_failed_accepted", condition=Q(status="failed")
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} {self.id} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class DeliveryAttempt(models.Model):
    """One outbound call made for a message: the provider call, the AI generation or the callback."""

    class Kind(models.TextChoices):
        PROVIDER = "provider", "Provider"
        GENERATION = "generation", "AI generation"
        CALLBACK = "callback", "Callback"

    class Outcome(models.TextChoices):
        SUCCESS = "success", "Success"
        TRANSIENT = "transient", "Transient error"
        PERMANENT = "permanent", "Permanent error"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="delivery_attempts")
    number = models.PositiveIntegerField(help_text="1-based attempt number of the message.")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.PROVIDER)
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    url = models.CharField(max_length=2000, blank=True)
    http_status = models.PositiveIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    error_kind = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    response_excerpt = models.TextField(blank=True)

    class Meta:
        ordering = ["started_at"]
        indexes = [
            models.Index(fields=["message", "started_at"], name="attempt_msg_started"),
            models.Index(fields=["started_at"], name="attempt_started"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.message_id}: {self.outcome}"


class SandboxReceipt(models.Model):
    """A request the built-in sandbox received while acting as a provider or callback target."""

    class Endpoint(models.TextChoices):
        SMS = "sms", "SMS API"
        EMAIL = "email", "Email API"
        AI = "ai", "AI chat completions"
        CALLBACK = "callback", "Callback receiver"

    endpoint = models.CharField(max_length=10, choices=Endpoint.choices)
    received_at = models.DateTimeField(auto_now_add=True)
    path = models.CharField(max_length=500)
    headers = models.JSONField(default=dict)
    idempotency_key = models.CharField(max_length=255, blank=True, db_index=True)
    payload = models.JSONField(null=True, blank=True)
    response_status = models.PositiveIntegerField()
    signature_valid = models.BooleanField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_endpoint_display()} {self.received_at:%Y-%m-%d %H:%M:%S} → {self.response_status}"


class IdempotencyRecord(models.Model):
    """The first response to a request sent with an `Idempotency-Key` header, scoped to the API key.

    `response_status` is null while the first request is still being handled.
    """

    api_key = models.ForeignKey(ApiKey, null=True, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    response_status = models.PositiveIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["api_key", "key"], name="idempotency_key_per_api_key")]
        indexes = [models.Index(fields=["created_at"], name="idem_created")]

    def __str__(self) -> str:
        return self.key


# Upper bounds (ms) of the provider-latency histogram buckets kept per hour; a last bucket holds the rest.
LATENCY_BUCKETS_MS = (50, 100, 200, 300, 500, 750, 1000, 1500, 2500, 5000, 10000)


class StatCounts(models.Model):
    """Counts shared by the hourly and daily rollups (see MessageStat for their meaning)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    sent = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    latency_0 = models.PositiveIntegerField(default=0)
    latency_1 = models.PositiveIntegerField(default=0)
    latency_2 = models.PositiveIntegerField(default=0)
    latency_3 = models.PositiveIntegerField(default=0)
    latency_4 = models.PositiveIntegerField(default=0)
    latency_5 = models.PositiveIntegerField(default=0)
    latency_6 = models.PositiveIntegerField(default=0)
    latency_7 = models.PositiveIntegerField(default=0)
    latency_8 = models.PositiveIntegerField(default=0)
    latency_9 = models.PositiveIntegerField(default=0)
    latency_10 = models.PositiveIntegerField(default=0)
    latency_11 = models.PositiveIntegerField(default=0)

    class Meta:
        abstract = True


class MessageStat(StatCounts):
    """Exact counts for one hour, workspace and channel, kept by `messaging.reporting.rollup`.

    `sent` / `failed`: messages whose `sent_at` / `failed_at` falls in the hour and that are still
    sent / failed. `latency_0` .. `latency_11`: how many successful provider calls (DeliveryAttempt of
    kind provider or generation) started in the hour took at most LATENCY_BUCKETS_MS[i] ms (the last
    bucket: longer). Rows exist only for closed hours listed as clean in MessageStatHour.
    """

    hour = models.DateTimeField(help_text="Start of the hour, UTC.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hour", "workspace", "channel"], name="stat_hour_ws_chan"),
        ]
        indexes = [models.Index(fields=["workspace", "hour"], name="stat_ws_hour")]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H:00} {self.workspace_id} {self.channel}: {self.sent} sent, {self.failed} failed"


LATENCY_FIELDS = tuple(f"latency_{i}" for i in range(len(LATENCY_BUCKETS_MS) + 1))


class MessageStatDay(StatCounts):
    """The sum of MessageStat over one whole UTC day (24 closed hours), per workspace and channel.

    Rewritten whenever an hour of the day is recomputed, so long windows add up a few rows per day
    instead of 24. Same fields and meaning as MessageStat.
    """

    day = models.DateTimeField(help_text="Start of the day, UTC.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["day", "workspace", "channel"], name="statday_day_ws_chan")
        ]
        indexes = [models.Index(fields=["workspace", "day"], name="statday_ws_day")]

    def __str__(self) -> str:
        return (
            f"{self.day:%Y-%m-%d} {self.workspace_id} {self.channel}: {self.sent} sent, {self.failed} failed"
        )


class MessageStatHour(models.Model):
    """One closed hour of the MessageStat rollup: computed (clean) or waiting to be recomputed (dirty).

    A write that changes the counts of an hour already rolled up (a retry of a message that failed
    then) marks the hour dirty in the same transaction; the next read recomputes it.
    """

    hour = models.DateTimeField(unique=True, help_text="Start of the hour, UTC.")
    dirty = models.BooleanField(default=True)
    computed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H:00} ({'dirty' if self.dirty else 'clean'})"

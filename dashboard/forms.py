"""Dashboard forms. Test-send forms only collect fields: validation is the API's (messaging.validation)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django import forms
from django.conf import settings

from messaging.lib import strictjson
from messaging.models import Channel, Status, Workspace
from messaging.reporting.selectors import NO_ERROR_KIND
from messaging.workspaces import workspace_lookup


class MessageFilterForm(forms.Form):
    """Filters of the messages page (GET)."""

    channel = forms.ChoiceField(choices=[("", "Any channel"), *Channel.choices], required=False)
    status = forms.ChoiceField(choices=[("", "Any status"), *Status.choices], required=False)
    # Not stripped: a workspace page links here with its exact ID, and older rows may hold IDs with
    # surrounding spaces; a typed ID with stray spaces still finds its workspace (clean_workspace).
    workspace = forms.CharField(required=False, max_length=100, label="Workspace ID", strip=False)
    recipient = forms.CharField(required=False, max_length=320, label="Recipient contains")
    error = forms.CharField(required=False, max_length=200, label="Error contains")
    error_kind = forms.CharField(
        required=False,
        max_length=64,
        label="Error kind",
        help_text=f"Exact, e.g. http_503; {NO_ERROR_KIND} for none.",
    )
    date_from = forms.DateField(
        required=False, label="From (UTC)", widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        required=False, label="To (UTC)", widget=forms.DateInput(attrs={"type": "date"})
    )

    failed_since = forms.DateTimeField(
        required=False,
        label="Failed since (UTC)",
        input_formats=["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local", "step": "1"}, format="%Y-%m-%dT%H:%M:%S"),
    )

    def clean_failed_since(self) -> datetime | None:
        value = self.cleaned_data["failed_since"]
        if value is None:
            return None
        # The label says UTC: read a wall-clock time as UTC whatever TIME_ZONE is.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def clean_workspace(self) -> Workspace | None:
        value = self.cleaned_data["workspace"]
        if not value.strip():
            return None
        workspace = workspace_lookup(value) or workspace_lookup(value.strip())
        if workspace is None:
            raise forms.ValidationError(f"No workspace with ID {value!r}.")
        return workspace


class RescheduleForm(forms.Form):
    """New send time for a waiting message, as a UTC wall-clock time."""

    scheduled_for = forms.DateTimeField(
        label="New time (UTC)",
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )

    def clean_scheduled_for(self) -> datetime:
        value = self.cleaned_data["scheduled_for"]
        # The input has no zone; the page says UTC, so read it as UTC whatever TIME_ZONE is.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# The picker sends a wall-clock time without an offset ("2026-12-24T09:30"), which the API reads in
# the workspace's time zone (messaging.validation, scheduledFor).
SEND_AT_HELP = (
    "Optional; empty sends now. Date and time in the workspace's own time zone (set in admin, UTC "
    "when unset), not your browser's and not UTC."
)


def sandbox_callback_url() -> str:
    """The built-in sandbox's callback receiver (settings.SANDBOX_BASE_URL + /callback/ai-reply)."""
    return f"{settings.SANDBOX_BASE_URL.rstrip('/')}/callback/ai-reply"


class _TestSendForm(forms.Form):
    """Base of the test-send forms: field names are the API's, so its field errors land on them."""

    channel: str = ""
    json_fields: tuple[str, ...] = ()

    def api_body(self) -> dict[str, Any]:
        """The form's raw values as an API request body (empty fields left out; JSON fields parsed).

        Raises ValueError naming the field when a JSON field does not parse or holds a value that cannot
        be stored (messaging.lib.strictjson).
        """
        body: dict[str, Any] = {}
        for name in self.fields:
            value = self.data.get(name, "")
            if value in ("", None):
                continue
            if name in self.json_fields:
                try:
                    value = strictjson.loads(value)
                except ValueError as exc:
                    raise ValueError(name) from exc
                if strictjson.unstorable_values(value):  # NaN, a lone surrogate, U+0000
                    raise ValueError(name)
            body[name] = value
        return body


def _text(label: str, **kwargs: Any) -> forms.CharField:
    return forms.CharField(label=label, required=False, **kwargs)


class SmsTestForm(_TestSendForm):
    channel = "sms"
    json_fields = ("metadata",)
    workspaceId = _text("Workspace ID", initial="66338")
    contactId = _text("Contact ID", initial="dashboard-test")
    phoneNumber = _text(
        "Phone number",
        help_text="E.164, e.g. +14155550123, or a national number when the workspace has a default phone region.",
    )
    message = _text("Message", widget=forms.Textarea(attrs={"rows": 3}))
    mediaUrl = _text("Media URL")
    scheduledFor = _text(
        "Send at",
        help_text=SEND_AT_HELP,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    metadata = _text("Metadata (JSON object)", widget=forms.Textarea(attrs={"rows": 2}))


class EmailTestForm(_TestSendForm):
    channel = "email"
    json_fields = ("metadata",)
    workspaceId = _text("Workspace ID", initial="66338")
    contactId = _text("Contact ID", initial="dashboard-test")
    to = _text("To")
    subject = _text("Subject")
    html = _text("HTML body", widget=forms.Textarea(attrs={"rows": 4}))
    scheduledFor = _text(
        "Send at",
        help_text=SEND_AT_HELP,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    metadata = _text("Metadata (JSON object)", widget=forms.Textarea(attrs={"rows": 2}))


class AiTestForm(_TestSendForm):
    channel = "ai"
    workspace_id = _text("Workspace ID", initial="66338")
    contact_id = _text("Contact ID", initial="dashboard-test")
    message_id = _text("Message ID", help_text="The client's id for the incoming message.")
    message_text = _text("Incoming message", widget=forms.Textarea(attrs={"rows": 3}))
    callback_url = _text("Callback URL", help_text="Where the generated reply is POSTed.")
    rate_limit_key = _text("Rate-limit key", initial="dashboard-test")
    phone_number = _text(
        "Phone number", help_text="Optional: sent as “to” when the callback URL ends in /send-sms."
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if settings.SANDBOX_ENABLED:
            # Offer the sandbox's receiver, which CALLBACK_ALLOWED_HOSTS allows by default outside
            # production; the reply then shows on the sandbox page.
            url = sandbox_callback_url()
            field = self.fields["callback_url"]
            field.initial = url
            field.help_text = (
                f"Where the generated reply is POSTed. The sandbox receives it at {url} "
                "(see the Sandbox page); end the path in /send-sms for the SMS shape."
            )

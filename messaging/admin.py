from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.cache import add_never_cache_headers

from .lib.pii import mask_recipient
from .models import (
    ApiKey,
    DeliveryAttempt,
    IdempotencyRecord,
    Message,
    MessageStat,
    MessageStatDay,
    MessageStatHour,
    SandboxReceipt,
    Workspace,
    WorkspaceAlias,
)
from .workspaces import api_key_cache_clear, api_key_create, api_key_revoke


class WorkspaceAliasInline(admin.TabularInline):
    model = WorkspaceAlias
    extra = 1


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ("external_id", "name", "timezone", "default_phone_region", "created_at")
    search_fields = ("external_id", "name", "aliases__alias")
    inlines = [WorkspaceAliasInline]

    # A deleted or renamed workspace leaves the keys' scopes and the workspace caches at once in this
    # process (others: within WORKSPACE_CACHE_SECONDS / API_KEY_CACHE_SECONDS).
    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        api_key_cache_clear()

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        api_key_cache_clear()

    def delete_queryset(self, request, queryset):
        super().delete_queryset(request, queryset)
        api_key_cache_clear()


@admin.register(WorkspaceAlias)
class WorkspaceAliasAdmin(admin.ModelAdmin):
    list_display = ("alias", "workspace")
    search_fields = ("alias", "workspace__external_id", "workspace__name")
    autocomplete_fields = ("workspace",)


class ApiKeyForm(forms.ModelForm):
    """Scope fails closed and is explicit: a key is for every workspace or for the workspaces listed,
    exactly one of the two (messaging.workspaces.api_key_create)."""

    class Meta:
        model = ApiKey
        fields = ("name", "all_workspaces", "workspaces")

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("all_workspaces") and cleaned.get("workspaces"):
            raise forms.ValidationError(
                "A key is for either every workspace or a list of workspaces: untick "
                '"all workspaces" or empty the list.'
            )
        if not cleaned.get("all_workspaces") and not cleaned.get("workspaces"):
            raise forms.ValidationError(
                'Say which workspaces the key may use: tick "all workspaces" or choose workspaces.'
            )
        return cleaned


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """API keys: created here through workspaces.api_key_create, the full key shown once on the page
    that answers the "Save" (never stored, never put in a cookie or the session); revoked with the
    list action or the "Revoke" button of a key's page (workspaces.api_key_revoke)."""

    form = ApiKeyForm
    list_display = ("name", "prefix", "all_workspaces", "created_at", "last_used_at", "revoked_at")
    list_filter = ("all_workspaces",)
    filter_horizontal = ("workspaces",)
    actions = ("revoke",)
    change_form_template = "admin/messaging/apikey/change_form.html"

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("prefix", "created_at", "last_used_at", "revoked_at")

    def get_urls(self):
        revoke = self.admin_site.admin_view(self.revoke_view)
        return [path("<int:key_id>/revoke/", revoke, name="messaging_apikey_revoke"), *super().get_urls()]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        key, full_key = api_key_create(
            name=form.cleaned_data["name"],
            workspace_ids=[ws.external_id for ws in form.cleaned_data["workspaces"]],
            all_workspaces=form.cleaned_data["all_workspaces"],
        )
        # The admin goes on with `obj` (log entry, answer): make it the created row.
        for field in ApiKey._meta.concrete_fields:
            setattr(obj, field.attname, getattr(key, field.attname))
        obj._state.adding, obj._state.db = False, key._state.db
        request.new_api_key = full_key

    def save_related(self, request, form, formsets, change):
        if change:  # on add, api_key_create has set the workspaces
            super().save_related(request, form, formsets, change)
        api_key_cache_clear()  # a scope change: this process at once; others within API_KEY_CACHE_SECONDS

    def response_add(self, request, obj, post_url_continue=None):
        full_key = getattr(request, "new_api_key", None)
        if full_key is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "key": obj,
            "full_key": full_key,
            "workspaces": list(obj.workspaces.all()),
            "title": "API key created",
        }
        response = TemplateResponse(request, "admin/messaging/apikey/created.html", context)
        add_never_cache_headers(response)  # the key must not stay in any cache
        return response

    def revoke_view(self, request, key_id: int):
        """GET: confirm revoking one key. POST: revoke it (workspaces.api_key_revoke)."""
        key = get_object_or_404(ApiKey, pk=key_id)
        if not self.has_change_permission(request, key):
            raise PermissionDenied
        change_url = reverse("admin:messaging_apikey_change", args=[key.pk])
        if request.method == "POST":
            if api_key_revoke(key_ids=[key.pk]):
                self.log_change(request, key, "Revoked.")
                self.message_user(request, f"Revoked {key}.", messages.SUCCESS)
            else:
                self.message_user(request, f"{key} was already revoked.", messages.WARNING)
            return redirect(change_url)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "key": key,
            "change_url": change_url,
            "title": f"Revoke {key}?",
        }
        return TemplateResponse(request, "admin/messaging/apikey/revoke.html", context)

    @admin.action(description="Revoke selected API keys")
    def revoke(self, request, queryset):
        count = api_key_revoke(key_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)


class SystemWrittenAdmin(admin.ModelAdmin):
    """Records only the service writes: staff may look, never add or edit by hand (`can_delete`:
    whether deleting one by hand is harmless)."""

    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return self.can_delete and super().has_delete_permission(request, obj)


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    readonly_fields = (
        "number",
        "kind",
        "started_at",
        "duration_ms",
        "http_status",
        "outcome",
        "error_kind",
        "error",
    )
    fields = readonly_fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Message)
class MessageAdmin(SystemWrittenAdmin):
    """Messages come from the API or test-send; retry, cancel and reschedule are dashboard actions
    (messaging.services). Deleting one by hand is allowed (as retention does)."""

    can_delete = True
    list_display = (
        "id",
        "channel",
        "workspace",
        "masked_recipient",
        "status",
        "attempts",
        "accepted_at",
        "scheduled_for",
    )
    list_filter = ("channel", "status")
    search_fields = ("=id", "recipient", "contact_id", "workspace__external_id", "workspace__name")

    @admin.display(description="recipient", ordering="recipient")
    def masked_recipient(self, obj: Message) -> str:
        # Lists show masked recipients; the change page shows the full value to staff.
        return mask_recipient(obj.recipient)

    list_select_related = ("workspace",)
    inlines = [DeliveryAttemptInline]
    show_full_result_count = False


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(SystemWrittenAdmin):
    """A message's history: never added, edited or deleted by hand."""

    list_display = ("message", "number", "kind", "started_at", "duration_ms", "http_status", "outcome")
    list_filter = ("kind", "outcome")
    show_full_result_count = False


@admin.register(SandboxReceipt)
class SandboxReceiptAdmin(SystemWrittenAdmin):
    """What the sandbox received (development only); deleting some is harmless."""

    can_delete = True
    list_display = ("received_at", "endpoint", "path", "response_status", "signature_valid")
    list_filter = ("endpoint", "response_status")


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(SystemWrittenAdmin):
    """Stored answers to Idempotency-Key requests: deleting one would let a client's retry create the
    message again, so they go only by retention (IDEMPOTENCY_KEY_TTL_HOURS)."""

    list_display = ("key", "api_key", "response_status", "created_at")


@admin.register(MessageStat)
class MessageStatAdmin(SystemWrittenAdmin):
    """The hourly rollup (messaging.reporting.rollup), rebuilt from messages; read-only."""

    list_display = ("hour", "workspace", "channel", "sent", "failed")
    list_filter = ("channel",)
    show_full_result_count = False


@admin.register(MessageStatDay)
class MessageStatDayAdmin(SystemWrittenAdmin):
    """The daily sums of the hourly rollup; read-only."""

    list_display = ("day", "workspace", "channel", "sent", "failed")
    list_filter = ("channel",)
    show_full_result_count = False


@admin.register(MessageStatHour)
class MessageStatHourAdmin(SystemWrittenAdmin):
    """Which hours the rollup has computed, and which a retry marked for recomputing; read-only."""

    list_display = ("hour", "dirty", "computed_at")
    list_filter = ("dirty",)

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.utils import timezone

from .lib.pii import mask_recipient
from .models import (
    ApiKey,
    DeliveryAttempt,
    IdempotencyRecord,
    Message,
    SandboxReceipt,
    Workspace,
    WorkspaceAlias,
)
from .workspaces import api_key_cache_clear


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
    """Scope fails closed: a key is for every workspace or for the workspaces listed, never both."""

    class Meta:
        model = ApiKey
        fields = ("name", "all_workspaces", "workspaces", "revoked_at")

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("all_workspaces") and cleaned.get("workspaces"):
            raise forms.ValidationError(
                "A key is for either every workspace or a list of workspaces: untick "
                '"all workspaces" or empty the list.'
            )
        return cleaned


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ("name", "prefix", "all_workspaces", "created_at", "last_used_at", "revoked_at")
    list_filter = ("all_workspaces",)
    readonly_fields = ("prefix", "secret_hash", "created_at", "last_used_at")
    filter_horizontal = ("workspaces",)
    actions = ("revoke",)

    def has_add_permission(self, request):
        # A key's secret is shown once by `manage.py create_api_key`; admin cannot show it.
        return False

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        api_key_cache_clear()  # a scope change: this process at once; others within API_KEY_CACHE_SECONDS

    @admin.action(description="Revoke selected API keys")
    def revoke(self, request, queryset):
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        api_key_cache_clear()  # this process at once; others within API_KEY_CACHE_SECONDS
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)


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


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
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
    readonly_fields = [f.name for f in Message._meta.fields]
    inlines = [DeliveryAttemptInline]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(admin.ModelAdmin):
    list_display = ("message", "number", "kind", "started_at", "duration_ms", "http_status", "outcome")
    list_filter = ("kind", "outcome")
    readonly_fields = [f.name for f in DeliveryAttempt._meta.fields]
    show_full_result_count = False


@admin.register(SandboxReceipt)
class SandboxReceiptAdmin(admin.ModelAdmin):
    list_display = ("received_at", "endpoint", "path", "response_status", "signature_valid")
    list_filter = ("endpoint", "response_status")
    readonly_fields = [f.name for f in SandboxReceipt._meta.fields]


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(admin.ModelAdmin):
    list_display = ("key", "api_key", "response_status", "created_at")
    readonly_fields = [f.name for f in IdempotencyRecord._meta.fields]

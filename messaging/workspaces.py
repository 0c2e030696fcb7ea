"""Workspaces and API keys: lookups on the API's hot path (cached per process), key creation and
authentication.

A workspace is known to clients by its external ID or by one of its aliases. Workspaces are created
on first valid use (workspace_get_or_create); an unknown ID is not an error.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .lib.ttlcache import TTLCache
from .models import ApiKey, Workspace, WorkspaceAlias

# Per-process caches for the API's hot path. A workspace edited in admin (time zone, region) and a
# revoked API key take effect in every process within these many seconds.
_workspaces = TTLCache(ttl=settings.WORKSPACE_CACHE_SECONDS)
_workspaces_by_pk = TTLCache(ttl=settings.WORKSPACE_CACHE_SECONDS)
_api_keys = TTLCache(ttl=settings.API_KEY_CACHE_SECONDS)


def workspace_lookup(external_id: str) -> Workspace | None:
    """Return the workspace for an ID or alias as sent by a client, or None when unknown or ''.

    Found workspaces are cached for WORKSPACE_CACHE_SECONDS; unknown IDs are not.
    """
    if not external_id:
        return None
    workspace = _workspaces.get(external_id)
    if workspace is not None:
        return workspace
    workspace = Workspace.objects.filter(external_id=external_id).order_by().first()
    if workspace is None:
        alias = (
            WorkspaceAlias.objects.select_related("workspace").filter(alias=external_id).order_by().first()
        )
        workspace = alias.workspace if alias else None
    if workspace is not None:
        _workspaces.set(external_id, workspace)
    return workspace


def workspace_get(pk: int) -> Workspace:
    """Return the workspace with primary key `pk`, cached for WORKSPACE_CACHE_SECONDS (the workers'
    hot path: its external ID, per-second rates and AI prompt). Raises Workspace.DoesNotExist."""
    workspace = _workspaces_by_pk.get(pk)
    if workspace is None:
        workspace = Workspace.objects.get(pk=pk)
        _workspaces_by_pk.set(pk, workspace)
    return workspace


def workspace_get_or_create(*, external_id: str) -> Workspace:
    """Return the workspace for an ID or alias, creating one with an empty name when unknown."""
    workspace = workspace_lookup(external_id)
    if workspace is None:
        workspace, _ = Workspace.objects.get_or_create(external_id=external_id)
        _workspaces.set(external_id, workspace)
    return workspace


API_KEY_PREFIX = "mq"  # pragma: allowlist secret (a fixed tag, not a secret)


def _hash_secret(secret: str) -> str:
    # The secret has 256 bits of entropy, so a single SHA-256 is enough; a slow password hash would
    # only cost time on every request.
    return hashlib.sha256(secret.encode()).hexdigest()


@transaction.atomic
def api_key_create(*, name: str, workspace_ids: list[str] | None = None) -> tuple[ApiKey, str]:
    """Create an API key and return (record, full key). The full key is not stored anywhere.

    Key format: `mq_<prefix>_<secret>` where prefix is 8 hex characters used for lookup and secret is
    43 URL-safe characters; only the SHA-256 of the secret is stored. `workspace_ids` (IDs or aliases;
    unknown ones are created) limit the key to those workspaces; none means every workspace.
    """
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    key = ApiKey.objects.create(name=name, prefix=prefix, secret_hash=_hash_secret(secret))
    for external_id in workspace_ids or []:
        key.workspaces.add(workspace_get_or_create(external_id=external_id))
    return key, f"{API_KEY_PREFIX}_{prefix}_{secret}"


def api_key_authenticate(raw_key: str) -> ApiKey | None:
    """Return the active ApiKey matching `raw_key`, or None (unknown, malformed or revoked alike).

    The returned key has `allowed_workspaces` filled in: a frozenset of workspace external IDs it may
    use (empty = all). Keys are cached per process for API_KEY_CACHE_SECONDS, so authentication
    usually costs one SHA-256 and no query; `last_used_at` is written at most once a minute per key.
    """
    parts = raw_key.split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX:
        return None
    key = _api_keys.get(parts[1])
    if key is None:
        key = ApiKey.objects.filter(prefix=parts[1], revoked_at__isnull=True).order_by().first()
        if key is None:
            return None
        key.allowed_workspaces = frozenset(key.workspaces.values_list("external_id", flat=True))
        _api_keys.set(parts[1], key)
    if not hmac.compare_digest(key.secret_hash, _hash_secret(parts[2])):
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > timedelta(minutes=1):
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def api_key_allowed_workspaces(api_key: ApiKey) -> frozenset[str]:
    """Return the external IDs of the workspaces `api_key` may use; empty means every workspace.

    Free for a key from api_key_authenticate (filled in and cached); one query for any other key.
    """
    if api_key.allowed_workspaces is None:
        api_key.allowed_workspaces = frozenset(api_key.workspaces.values_list("external_id", flat=True))
    return api_key.allowed_workspaces

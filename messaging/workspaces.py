"""Workspaces and API keys: lookups on the API's hot path (cached per process), key creation and
authentication.

A workspace is known to clients by its external ID or by one of its aliases. Workspaces are created
on first valid use (workspace_get_or_create); an unknown ID is not an error.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .lib.ttlcache import TTLCache
from .models import ApiKey, Workspace, WorkspaceAlias

# Per-process caches for the API's hot path. A workspace edited in admin (time zone, region) and a
# revoked API key or a key's changed scope take effect in every process within these many seconds
# (at once in the process that made the change in admin, see api_key_cache_clear).
_workspaces = TTLCache(ttl=settings.WORKSPACE_CACHE_SECONDS)
_workspaces_by_pk = TTLCache(ttl=settings.WORKSPACE_CACHE_SECONDS)
_api_keys = TTLCache(ttl=settings.API_KEY_CACHE_SECONDS)
# Prefixes that matched no active key, so that a client repeating an unknown, revoked or guessed key
# costs no more than a known key (no query per request). Its own cache, so that a flood of distinct
# prefixes cannot push known keys out.
_unknown_prefixes = TTLCache(ttl=settings.API_KEY_CACHE_SECONDS)


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
# What api_key_create makes as a key's prefix (8 lowercase hex digits; up to 16 accepted). Anything
# else names no key and is refused without asking the database.
_PREFIX_RE = re.compile(r"[0-9a-f]{1,16}")


def _hash_secret(secret: str) -> str:
    # The secret has 256 bits of entropy, so a single SHA-256 is enough; a slow password hash would
    # only cost time on every request.
    return hashlib.sha256(secret.encode()).hexdigest()


@transaction.atomic
def api_key_create(
    *, name: str, workspace_ids: list[str] | None = None, all_workspaces: bool = False
) -> tuple[ApiKey, str]:
    """Create an API key and return (record, full key). The full key is not stored anywhere.

    Key format: `mq_<prefix>_<secret>` where prefix is 8 hex characters used for lookup and secret is
    43 URL-safe characters; only the SHA-256 of the secret is stored. The scope is explicit, exactly
    one of: `all_workspaces=True` (every workspace, including ones created later) or `workspace_ids`
    (IDs or aliases; unknown ones are created), the only workspaces the key may use.
    Raises ValueError when both or neither is given.
    """
    if all_workspaces and workspace_ids:
        raise ValueError("A key is either for every workspace or for a list of workspaces, not both.")
    if not all_workspaces and not workspace_ids:
        raise ValueError("Name the key's workspaces, or pass all_workspaces=True for every workspace.")
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        name=name, prefix=prefix, secret_hash=_hash_secret(secret), all_workspaces=all_workspaces
    )
    for external_id in workspace_ids or []:
        key.workspaces.add(workspace_get_or_create(external_id=external_id))
    _unknown_prefixes.delete(prefix)  # forget a miss this process may have cached for it
    return key, f"{API_KEY_PREFIX}_{prefix}_{secret}"


def api_key_authenticate(raw_key: str) -> ApiKey | None:
    """Return the active ApiKey matching `raw_key`, or None (unknown, malformed or revoked alike).

    The returned key has `scope_workspace_pks` filled in (see api_key_may_use). Keys are cached per
    process for API_KEY_CACHE_SECONDS, so authentication usually costs one SHA-256 and no query; a
    prefix that matched no active key is remembered as such for as long, so repeating it costs no
    query either, and a prefix that is not one this service makes costs none at all.
    `last_used_at` is written at most once a minute per key.
    """
    parts = raw_key.split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not _PREFIX_RE.fullmatch(parts[1]):
        return None
    prefix = parts[1]
    key = _api_keys.get(prefix)
    if key is None:
        if _unknown_prefixes.get(prefix):
            return None
        key = ApiKey.objects.filter(prefix=prefix, revoked_at__isnull=True).order_by().first()
        if key is None:
            _unknown_prefixes.set(prefix, True)
            return None
        key.scope_workspace_pks = frozenset(key.workspaces.values_list("pk", flat=True))
        _api_keys.set(prefix, key)
    if not hmac.compare_digest(key.secret_hash, _hash_secret(parts[2])):
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > timedelta(minutes=1):
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def api_key_may_use(api_key: ApiKey, workspace_pk: int | None) -> bool:
    """True when `api_key` may act for the workspace with primary key `workspace_pk`.

    A key for every workspace (`all_workspaces`) may use any, including one not created yet (None).
    Any other key may use only the workspaces in its list, which may be empty (then none), and never
    one not created yet. Free for a key from api_key_authenticate (its scope is cached with it); one
    query the first time for any other key.
    """
    if api_key.all_workspaces:
        return True
    if api_key.scope_workspace_pks is None:
        api_key.scope_workspace_pks = frozenset(api_key.workspaces.values_list("pk", flat=True))
    return workspace_pk is not None and workspace_pk in api_key.scope_workspace_pks


def api_key_cache_clear() -> None:
    """Forget this process's cached keys, misses and workspaces, so that a revocation, a scope change
    or a deleted workspace takes effect here at once (other processes: within their cache times)."""
    for cache in (_api_keys, _unknown_prefixes, _workspaces, _workspaces_by_pk):
        cache.clear()


def api_key_revoke(*, key_ids: Iterable[int]) -> int:
    """Revoke the API keys with these primary keys: set `revoked_at` (now, UTC) on those not revoked
    yet; return how many were revoked. A revoked key is refused at once in this process and within
    API_KEY_CACHE_SECONDS in others; revoking is final (nothing un-revokes a key)."""
    count = ApiKey.objects.filter(pk__in=list(key_ids), revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    api_key_cache_clear()
    return count

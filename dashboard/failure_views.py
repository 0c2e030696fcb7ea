"""Dashboard views of failed messages: groups by channel and error kind, and retrying a whole group."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages as flash
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from messaging import services
from messaging.models import Channel, Status, Workspace
from messaging.reporting import selectors

from .access import staff_required


def with_messages_urls(
    groups: list[selectors.FailureGroup], *, workspace: Workspace | None = None, failed_since: str = ""
) -> list[selectors.FailureGroup]:
    """Give each failure group `messages_url`: the messages page filtered to exactly its messages."""
    for group in groups:
        query = {"status": Status.FAILED, "channel": group.channel, "error_kind": group.error_kind_filter}
        if workspace is not None:
            query["workspace"] = workspace.external_id
        if failed_since:
            query["failed_since"] = failed_since
        group.messages_url = f"{reverse('dashboard:messages')}?{urlencode(query)}"
    return groups


@require_GET
@staff_required
@never_cache
def failures(request: HttpRequest) -> HttpResponse:
    """Failed messages grouped by channel and error kind, with a sample and retry-all."""
    groups = with_messages_urls(selectors.failed_message_groups())
    return render(
        request, "dashboard/failures.html", {"groups": groups, "total": sum(group.count for group in groups)}
    )


def _group_params(request: HttpRequest) -> tuple[str, str]:
    source = request.POST if request.method == "POST" else request.GET
    channel = source.get("channel", "")
    if channel not in Channel.values:
        raise Http404("Unknown channel")
    return channel, source.get("error_kind", "")


@staff_required
@never_cache
def failures_retry(request: HttpRequest) -> HttpResponse:
    """GET: confirm retrying a whole failure group. POST: retry it (services.failed_group_retry)."""
    channel, error_kind = _group_params(request)
    if request.method == "POST":
        retried = services.failed_group_retry(channel=channel, error_kind=error_kind)
        flash.success(request, f"{retried} {Channel(channel).label} message(s) queued again.")
        return redirect("dashboard:failures")
    if request.method != "GET":
        return HttpResponse(status=405, headers={"Allow": "GET, POST"})
    ctx = {
        "channel": channel,
        "channel_label": Channel(channel).label,
        "error_kind": error_kind,
        "count": selectors.failed_group_count(channel=channel, error_kind=error_kind),
        "group": next(
            (
                g
                for g in selectors.failed_message_groups()
                if g.channel == channel and g.error_kind == error_kind
            ),
            None,
        ),
    }
    return render(request, "dashboard/failures_retry.html", ctx)

"""Operator dashboard views (staff only)."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from messaging.models import Message


@staff_member_required
def overview(request: HttpRequest) -> HttpResponse:
    """Per-workspace, per-channel message counts by status."""
    rows = (
        Message.objects.values("workspace__external_id", "workspace__name", "channel", "status")
        .annotate(n=Count("id"))
        .order_by("workspace__external_id", "channel", "status")
    )
    return render(request, "dashboard/overview.html", {"rows": rows})

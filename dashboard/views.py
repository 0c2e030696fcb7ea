"""Operator dashboard views (staff only). Thin: read through messaging.reporting, write through services."""

from __future__ import annotations

import uuid
from datetime import UTC, timedelta

import redis
from django.conf import settings
from django.contrib import messages as flash
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST
from django_rq.settings import get_queues_map
from rq.job import Job

from messaging import queues, services, validation
from messaging.delivery import channels as channel_registry
from messaging.models import Channel, Message, SandboxReceipt, Status, Workspace
from messaging.reporting import numbers, queue_stats, selectors
from messaging.workspaces import workspace_lookup

from .access import staff_required
from .failure_views import with_messages_urls
from .forms import AiTestForm, EmailTestForm, MessageFilterForm, RescheduleForm, SmsTestForm

# channel -> its form; the validator and the intake service come from the channel registry
# (messaging.delivery.channels), the same ones the API view of that channel calls.
TEST_SEND_FORMS = {"sms": SmsTestForm, "email": EmailTestForm, "ai": AiTestForm}


def _window(request: HttpRequest) -> str:
    window = request.GET.get("window", numbers.DEFAULT_WINDOW)
    return window if window in numbers.WINDOWS else numbers.DEFAULT_WINDOW


def _overview_context(request: HttpRequest) -> dict:
    window = _window(request)
    now = timezone.now()
    metrics = numbers.workspace_metrics(window, now=now)
    return {
        "window_since": numbers.window_start(window, now),
        "window": window,
        "windows": [(key, label) for key, (label, _length) in numbers.WINDOWS.items()],
        "window_label": numbers.WINDOWS[window][0],
        "metrics": metrics,
        "channels": Channel.choices,
        "queues": queue_stats.queue_numbers(),
        "updated_at": timezone.now(),
    }


@require_GET
@staff_required
@never_cache
def overview(request: HttpRequest) -> HttpResponse:
    """Per-workspace numbers per channel over a window, totals, and the queue strip."""
    return render(request, "dashboard/overview.html", _overview_context(request))


@require_GET
@staff_required
@never_cache
def overview_live(request: HttpRequest) -> HttpResponse:
    """The overview's numbers as an HTML fragment; static/js/live.js polls it."""
    return render(request, "dashboard/_overview_numbers.html", _overview_context(request))


@require_GET
@staff_required
@never_cache
def workspace_detail(request: HttpRequest, external_id: str) -> HttpResponse:
    """One workspace over the selected window: numbers per channel, sent/failed charts, the errors
    of the messages that failed in the window and the messages accepted in it."""
    workspace = get_object_or_404(Workspace, external_id=external_id)
    window = _window(request)
    now = timezone.now()
    since = numbers.window_start(window, now)
    chart = numbers.workspace_chart(workspace, window, now=now)
    # The messages page's filter for "failed in this window" (whole seconds, like window_start).
    failed_since = since.strftime("%Y-%m-%dT%H:%M:%S") if since else ""
    ctx = {
        "workspace": workspace,
        "window": window,
        "windows": [(key, label) for key, (label, _length) in numbers.WINDOWS.items()],
        "window_label": numbers.WINDOWS[window][0],
        "window_since": since,
        "summary": numbers.workspace_summary(workspace, window, now=now),
        "chart": chart,
        "charts": [(label, chart.series[value]) for value, label in Channel.choices],
        "recent": selectors.workspace_recent_messages(workspace, since=since),
        "errors": with_messages_urls(
            selectors.failed_message_groups(workspace_id=workspace.pk, since=since)[:10],
            workspace=workspace,
            failed_since=failed_since,
        ),
        "channels": Channel.choices,
    }
    return render(request, "dashboard/workspace.html", ctx)


@require_GET
@staff_required
@never_cache
def message_list(request: HttpRequest) -> HttpResponse:
    """Messages filtered by channel, status, workspace, recipient, dates and error text; newest first."""
    form = MessageFilterForm(request.GET or None)
    filters = selectors.MessageFilters()
    if form.is_bound and form.is_valid():
        data = form.cleaned_data
        filters = selectors.MessageFilters(
            channel=data["channel"],
            status=data["status"],
            workspace=data["workspace"],
            recipient=data["recipient"].strip(),
            error=data["error"].strip(),
            error_kind=data["error_kind"].strip(),
            date_from=data["date_from"],
            date_to=data["date_to"],
            failed_since=data["failed_since"],
        )
    page = selectors.message_search(filters, cursor=request.GET.get("cursor", ""))
    next_query = None
    if page.next_cursor:
        query = request.GET.copy()
        query["cursor"] = page.next_cursor
        next_query = query.urlencode()
    first_query = request.GET.copy()
    first_query.pop("cursor", None)
    ctx = {
        "form": form,
        "page": page,
        "next_query": next_query,
        "first_query": first_query.urlencode(),
        "is_first_page": not request.GET.get("cursor"),
    }
    return render(request, "dashboard/messages.html", ctx)


def _message_or_404(message_id: str) -> Message:
    try:
        pk = uuid.UUID(message_id)
    except ValueError as exc:
        raise Http404("No such message") from exc
    return get_object_or_404(Message.objects.select_related("workspace"), pk=pk)


def _message_url(key: str) -> str | None:
    """The dashboard URL of the message whose id is `key`, or None when `key` is not a UUID."""
    try:
        return reverse("dashboard:message", args=[uuid.UUID(key)])
    except ValueError:
        return None


def _job_url(message: Message) -> str | None:
    """django-rq's page of the message's RQ job, or None when that page would answer 404: RQ keeps
    a finished job RESULT_TTL and a failed one FAILURE_TTL (messaging.queues), the retention job trims
    finished ones sooner, and a Redis without persistence forgets them all. None when Redis is down."""
    index = get_queues_map().get(message.channel)
    if index is None or not message.rq_job_id:
        return None
    try:
        if not Job.exists(message.rq_job_id, connection=queues.get_connection()):
            return None
    except redis.exceptions.RedisError:
        return None
    return reverse("django_rq:job_detail", args=[index, message.rq_job_id])


def _message_context(message: Message) -> dict:
    return {
        "message": message,
        "attempts": list(message.delivery_attempts.all()),
        "can_retry": message.status == Status.FAILED,
        "can_cancel": message.status in services.CANCELLABLE,
        "can_reschedule": message.status in services.CANCELLABLE,
        "is_final": message.is_final,
    }


@require_GET
@staff_required
@never_cache
def message_detail(request: HttpRequest, message_id: str) -> HttpResponse:
    """One message: request fields, attempts, provider response, AI reply, job link and actions."""
    message = _message_or_404(message_id)
    ctx = _message_context(message)
    ctx["job_url"] = _job_url(message)
    default_time = (message.scheduled_for or timezone.now() + timedelta(hours=1)).astimezone(UTC)
    ctx["reschedule_form"] = RescheduleForm(
        initial={"scheduled_for": default_time.strftime("%Y-%m-%dT%H:%M")}
    )
    return render(request, "dashboard/message.html", ctx)


@require_GET
@staff_required
@never_cache
def message_live(request: HttpRequest, message_id: str) -> HttpResponse:
    """The message's status, timestamps and attempts as a fragment, polled until the message is final."""
    message = _message_or_404(message_id)
    return render(request, "dashboard/_message_status.html", _message_context(message))


def _back(request: HttpRequest, message: Message) -> HttpResponse:
    target = request.POST.get("next", "")
    # Only paths on this site: never redirect to a URL a form field could point anywhere.
    if not target.startswith("/") or target.startswith("//"):
        target = reverse("dashboard:message", args=[message.pk])
    return redirect(target)


@require_POST
@staff_required
def message_retry(request: HttpRequest, message_id: str) -> HttpResponse:
    """Retry a failed message (services.message_retry)."""
    message = _message_or_404(message_id)
    try:
        services.message_retry(message=message)
        flash.success(request, "Message queued again.")
    except services.MessageStateError as exc:
        flash.error(request, str(exc))
    return _back(request, message)


@require_POST
@staff_required
def message_cancel(request: HttpRequest, message_id: str) -> HttpResponse:
    """Cancel a queued or scheduled message (services.message_cancel)."""
    message = _message_or_404(message_id)
    try:
        services.message_cancel(message=message)
        flash.success(request, "Message cancelled.")
    except services.MessageStateError as exc:
        flash.error(request, str(exc))
    return _back(request, message)


@require_POST
@staff_required
def message_reschedule(request: HttpRequest, message_id: str) -> HttpResponse:
    """Move a waiting message to a new time (services.message_reschedule); a past time sends now."""
    message = _message_or_404(message_id)
    form = RescheduleForm(request.POST)
    if not form.is_valid():
        flash.error(request, "Enter the new time as a date and time (UTC).")
        return _back(request, message)
    try:
        services.message_reschedule(message=message, scheduled_for=form.cleaned_data["scheduled_for"])
        message.refresh_from_db()
        when = message.scheduled_for
        flash.success(
            request,
            f"Message rescheduled for {when:%Y-%m-%d %H:%M} UTC." if when else "Message queued to send now.",
        )
    except services.MessageStateError as exc:
        flash.error(request, str(exc))
    return _back(request, message)


@require_GET
@staff_required
@never_cache
def scheduled(request: HttpRequest) -> HttpResponse:
    """Upcoming scheduled messages, soonest first, with cancel and reschedule."""
    page = selectors.scheduled_messages(cursor=request.GET.get("cursor", ""))
    return render(
        request,
        "dashboard/scheduled.html",
        {
            "page": page,
            "total": selectors.scheduled_count(),
            "is_first_page": not request.GET.get("cursor"),
            "now": timezone.now(),
        },
    )


def available_test_channels() -> list[tuple[str, str]]:
    """(channel, label) of the channels that have a test-send form and a registered channel."""
    return [
        (value, label)
        for value, label in Channel.choices
        if value in TEST_SEND_FORMS and value in channel_registry.CHANNELS
    ]


@staff_required
@never_cache
def test_send(request: HttpRequest) -> HttpResponse:
    """Forms that send a real SMS / email / AI request through the API's validation and service."""
    channels = available_test_channels()
    available = [value for value, _label in channels]
    channel = request.POST.get("channel") or request.GET.get("channel") or "sms"
    if channel not in available:
        channel = "sms"
    form_class, spec = TEST_SEND_FORMS[channel], channel_registry.get(channel)
    if request.method == "POST":
        form = form_class(request.POST)
        form.is_valid()
        try:
            body = form.api_body()
            # Staff may send for any workspace: no scope check, just the one lookup the API does.
            workspace = workspace_lookup(validation.workspace_id_of(body, spec.workspace_field))
            cleaned = spec.clean_request(body, workspace=workspace)
        except ValueError as exc:
            form.add_error(str(exc), "Is not valid JSON.")
        except validation.RequestInvalid as exc:
            for name, reasons in exc.errors.items():
                for reason in reasons:
                    form.add_error(name if name in form.fields else None, reason)
        else:
            message = spec.create(**cleaned)
            return redirect(f"{reverse('dashboard:test-send')}?channel={channel}&sent={message.pk}")
    elif request.method == "GET":
        form = form_class()
    else:
        return HttpResponse(status=405, headers={"Allow": "GET, POST"})
    sent = None
    sent_id = request.GET.get("sent", "")
    if sent_id:
        try:
            sent = Message.objects.select_related("workspace").filter(pk=uuid.UUID(sent_id)).first()
        except ValueError:
            sent = None
    ctx = {"form": form, "channel": channel, "channels": channels, "sent": sent}
    if sent is not None:
        ctx.update(_message_context(sent))
    return render(request, "dashboard/test_send.html", ctx)


@require_GET
@staff_required
@never_cache
def sandbox(request: HttpRequest) -> HttpResponse:
    """What the built-in sandbox received (provider, AI endpoint, callback receiver), newest first."""
    if not settings.SANDBOX_ENABLED:
        raise Http404("The sandbox is off (SANDBOX_ENABLED=false).")
    endpoint = request.GET.get("endpoint", "")
    if endpoint not in SandboxReceipt.Endpoint.values:
        endpoint = ""
    before = request.GET.get("before", "")
    # ASCII digits only (str.isdigit() takes "²") and no more than a bigint holds.
    before_id = int(before) if before.isascii() and before.isdigit() and len(before) <= 18 else None
    page = selectors.sandbox_receipts(endpoint=endpoint, before_id=before_id)
    for receipt in page.items:
        # Any client may send the sandbox any Idempotency-Key: only a message id gets a link.
        receipt.message_url = _message_url(receipt.idempotency_key)
    return render(
        request,
        "dashboard/sandbox.html",
        {
            "page": page,
            "endpoint": endpoint,
            "endpoints": SandboxReceipt.Endpoint.choices,
            "is_first_page": not before,
        },
    )

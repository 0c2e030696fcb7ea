"""GET /metrics: Prometheus text format, protected by a bearer token (METRICS_TOKEN).

Exports django-rq's collector (workers, job counts per queue and registry) and, from the database,
message counts per channel and status, so the numbers survive restarts of any process (the earlier
service kept them in memory and lost them on every deploy). Without METRICS_TOKEN the endpoint does
not exist (404); with it, a request without the right `Authorization: Bearer <token>` gets 401.
"""

from __future__ import annotations

import hmac
import logging

import redis
from django.conf import settings
from django.db.models import Count, Min, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_rq.contrib.prometheus import RQCollector
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from ..models import Channel, Message, Status

logger = logging.getLogger(__name__)


class MessageCollector:
    """Message counts from the database: `queue_messages{channel,status}` and the oldest due wait."""

    def collect(self):
        counts = GaugeMetricFamily(
            "queue_messages", "Messages stored, by channel and status", labels=["channel", "status"]
        )
        # One grouped count per status (an equality), so each reads one status's rows through an index
        # (the partial indexes of waiting, sent and failed messages, which hold the channel, alone)
        # rather than every row of the table (SQLite, 1,000,000 messages: 0.3 s instead of 0.8 s).
        found = {}
        for status in Status.values:
            rows = Message.objects.filter(status=status).values("channel").annotate(n=Count("*")).order_by()
            found.update({(row["channel"], status): row["n"] for row in rows})
        for channel in Channel.values:
            for status in Status.values:
                counts.add_metric([channel, status], found.get((channel, status), 0))
        yield counts

        now = timezone.now()
        oldest = GaugeMetricFamily(
            "queue_oldest_due_message_age_seconds",
            "Seconds the oldest message that is due (accepted or queued, time reached) has been waiting",
            labels=["channel"],
        )
        due = (
            Message.objects.filter(status__in=(Status.ACCEPTED, Status.QUEUED, Status.SCHEDULED))
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
            .values("channel")
            .annotate(first=Min("queued_at"), accepted=Min("accepted_at"))
        )
        ages = {row["channel"]: (now - (row["first"] or row["accepted"])).total_seconds() for row in due}
        for channel in Channel.values:
            oldest.add_metric([channel], max(0.0, ages.get(channel, 0.0)))
        yield oldest


class RedisCollector:
    """django-rq's RQCollector, plus `queue_redis_up` (0 and no RQ metrics while Redis is down)."""

    def collect(self):
        up = GaugeMetricFamily("queue_redis_up", "1 when Redis answered this scrape")
        try:
            families = list(RQCollector().collect())
        except redis.exceptions.RedisError as exc:
            logger.warning("metrics: Redis unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families


def _authorized(request: HttpRequest, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics: 404 without METRICS_TOKEN set, 401 without the token, else Prometheus text."""
    token = settings.METRICS_TOKEN
    if not token:
        raise Http404("Metrics are disabled (METRICS_TOKEN is not set).")
    if not _authorized(request, token):
        response = HttpResponse(
            "Send Authorization: Bearer <METRICS_TOKEN>.\n", status=401, content_type="text/plain"
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MessageCollector())
    registry.register(RedisCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

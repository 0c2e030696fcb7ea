from __future__ import annotations

from django.urls import path

from . import api
from .devtools import sandbox
from .reporting import metrics

# Most requested first: Django tries the patterns in order.
urlpatterns = [
    path("api/schedule-sms", api.schedule_sms, name="api-schedule-sms"),
    path("health", api.health, name="health"),
    path("health/ready", api.health_ready, name="health-ready"),
    path("api/schedule-sms/bulk", api.schedule_sms_bulk, name="api-schedule-sms-bulk"),
    path("api/schedule-email", api.schedule_email, name="api-schedule-email"),
    path("api/ai-response", api.ai_response, name="api-ai-response"),
    path("api/ai-response/enqueue", api.ai_response, name="api-ai-response-enqueue"),
    path("api/messages/<str:message_id>", api.message_detail, name="api-message-detail"),
    path("api/messages/<str:message_id>/cancel", api.message_cancel, name="api-message-cancel"),
    path("api/queues", api.queue_counts, name="api-queues"),
    path("api/openapi.json", api.openapi_document, name="api-openapi"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("sandbox/send-sms", sandbox.send_sms, name="sandbox-send-sms"),
    path("sandbox/api/email/send", sandbox.send_email, name="sandbox-send-email"),
    path("sandbox/chat/completions", sandbox.chat_completions, name="sandbox-chat-completions"),
    path("sandbox/callback/<path:rest>", sandbox.callback, name="sandbox-callback"),
    # Last: any other /api/ path answers the JSON 404.
    path("api/<path:rest>", api.unknown_endpoint, name="api-unknown"),
]

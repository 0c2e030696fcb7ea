from __future__ import annotations

from django.urls import path, register_converter

from . import converters, failure_views, views

register_converter(converters.WorkspaceIdConverter, "workspace_id")

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("overview/live", views.overview_live, name="overview-live"),
    path("workspaces/<workspace_id:external_id>/", views.workspace_detail, name="workspace"),
    path("messages/", views.message_list, name="messages"),
    path("messages/<str:message_id>/", views.message_detail, name="message"),
    path("messages/<str:message_id>/live", views.message_live, name="message-live"),
    path("messages/<str:message_id>/retry", views.message_retry, name="message-retry"),
    path("messages/<str:message_id>/cancel", views.message_cancel, name="message-cancel"),
    path("messages/<str:message_id>/reschedule", views.message_reschedule, name="message-reschedule"),
    path("failures/", failure_views.failures, name="failures"),
    path("failures/retry", failure_views.failures_retry, name="failures-retry"),
    path("scheduled/", views.scheduled, name="scheduled"),
    path("test-send/", views.test_send, name="test-send"),
    path("sandbox/received/", views.sandbox, name="sandbox"),
]

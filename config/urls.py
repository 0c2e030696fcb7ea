from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django_rq.urls import get_admin_urlpatterns

from dashboard.access import staff_required

urlpatterns = [
    path("", include("messaging.urls")),
    path("", include("dashboard.urls")),
    path("admin/", admin.site.urls),
    # django-rq's queue views, for staff only: anonymous -> login, non-staff -> 403 (its JSON stats and
    # metrics views are not mounted).
    path("django-rq/", include((get_admin_urlpatterns(view_wrapper=staff_required), "django_rq"))),
]

# JSON errors under /api/ (clients and the OpenAPI document expect JSON), Django's pages elsewhere.
handler404 = "messaging.api.not_found"
handler500 = "messaging.api.server_error"

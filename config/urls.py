from __future__ import annotations

from csp.decorators import csp_update
from django.contrib import admin
from django.urls import include, path
from django_rq import stats_views
from django_rq.urls import get_admin_urlpatterns

from dashboard.access import staff_required

# django-rq's own templates use a few inline scripts, styles and onclick handlers; allow those on its
# pages only (staff-only pages of a vendored app), keeping the strict policy everywhere else.
_rq_csp = csp_update({"script-src": ["'unsafe-inline'"], "style-src": ["'unsafe-inline'"]})


def _rq_view(view):
    return staff_required(_rq_csp(view))


# django-rq's queue views, for staff only: anonymous -> login, non-staff -> 403. Its stats page links
# to "home_json" and (prometheus-client being installed) "metrics", so those views are mounted too,
# behind the same check (no API-token access; Prometheus scrapes /metrics with METRICS_TOKEN).
rq_urlpatterns = [
    *get_admin_urlpatterns(view_wrapper=_rq_view),
    path("stats.json", staff_required(stats_views.stats_json), name="home_json"),
    path("metrics/", staff_required(stats_views.prometheus_metrics), name="metrics"),
]

urlpatterns = [
    path("", include("messaging.urls")),
    path("", include("dashboard.urls")),
    path("admin/", admin.site.urls),
    path("django-rq/", include((rq_urlpatterns, "django_rq"))),
]

# JSON errors under /api/ (clients and the OpenAPI document expect JSON), Django's pages elsewhere.
handler404 = "messaging.http.not_found"
handler500 = "messaging.http.server_error"

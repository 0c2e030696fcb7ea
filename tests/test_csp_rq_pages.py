"""The strict CSP everywhere, relaxed for inline code only on django-rq's vendored pages."""

from __future__ import annotations


def test_dashboard_pages_keep_the_strict_policy(staff):
    policy = staff.get("/")["Content-Security-Policy"]
    assert "script-src 'self';" in policy or policy.endswith("script-src 'self'")
    assert "unsafe-inline" not in policy


def test_django_rq_pages_allow_their_inline_code_only(staff):
    response = staff.get("/django-rq/")
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    assert "script-src 'self' 'unsafe-inline'" in policy
    assert "style-src 'self' 'unsafe-inline'" in policy
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy

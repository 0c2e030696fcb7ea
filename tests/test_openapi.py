"""The OpenAPI document stays accurate: every API URL and method is in it, and nothing else is."""

from __future__ import annotations

import json
import re

from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from messaging import openapi


def _api_routes(patterns=None, prefix=""):
    """Yield (OpenAPI path, view) for every URL under /api/ and /health."""
    for pattern in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(pattern, URLResolver):
            yield from _api_routes(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            route = "/" + prefix + str(pattern.pattern)
            # The catch-all that answers unknown /api/ paths with a JSON 404 is not an endpoint.
            if route.startswith(("/api/", "/health")) and pattern.name != "api-unknown":
                yield re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route), pattern.callback


def test_every_api_url_and_method_is_documented_and_nothing_else():
    documented = {(path, method.upper()) for path, ops in openapi.PATHS.items() for method in ops}
    served = set()
    for path, view in _api_routes():
        methods = getattr(view, "api_methods", None)
        assert methods, f"{path}: not an api_view, so its methods are unknown"
        served.update((path, method) for method in methods)
    assert served - documented == set(), "add these to messaging/openapi/paths.py"
    assert documented - served == set(), "documented but not served"


def test_operations_declare_auth_as_the_views_enforce_it():
    views = dict(_api_routes())
    for path, operations in openapi.PATHS.items():
        for method, operation in operations.items():
            public = operation.get("security") == []
            assert public == (not views[path].api_auth), (method, path)
            if not public:
                assert "401" in operation["responses"] and "429" in operation["responses"], (method, path)


def test_the_document_is_served_without_a_key_and_is_openapi_3(db):
    response = Client().get("/api/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.0")
    assert document["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}
    assert set(document["paths"]) == set(openapi.PATHS)
    body = document["components"]["requestBodies"]["ScheduleSms"]["content"]["application/json"]
    assert body["schema"]["required"] == ["phoneNumber", "message", "contactId", "workspaceId"]
    assert body["example"]["phoneNumber"].startswith("+")


def test_limits_in_the_document_follow_the_settings(db, settings):
    settings.SCHEDULE_MAX_DAYS = 10
    settings.API_MAX_METADATA_BYTES = 123
    schema = openapi.document()["components"]["requestBodies"]["ScheduleSms"]["content"]["application/json"]
    properties = schema["schema"]["properties"]
    assert properties["delay"]["maximum"] == 10 * 86_400_000
    assert "123 bytes" in properties["metadata"]["description"]


def test_every_reference_in_the_document_resolves():
    document = openapi.document()
    refs = re.findall(r'"\$ref": "#/([^"]+)"', json.dumps(document))
    assert refs
    for ref in refs:
        node = document
        for part in ref.split("/"):
            node = node[part]

"""The OpenAPI 3.0 document of the JSON API, served at GET /api/openapi.json and fuzzed in CI.

Adding an endpoint (see README, "OpenAPI document"): register its operation in openapi/paths.py with
`operation(path, method, spec)`, its request body (a builder and a valid example) in
openapi/bodies.py; reuse the shared `ERRORS` responses and `SCHEMAS` of openapi/components.py.
tests/test_openapi.py fails while a URL under /api/ has no operation, and tests/test_fuzz_api.py runs
schemathesis against every documented operation.

Only declare constraints the API enforces: schemathesis sends data that breaks each declared rule and
expects a 4xx for it.
"""

from __future__ import annotations

import copy
from typing import Any

from django.conf import settings

from . import paths as _paths  # noqa: F401  (registers the operations in PATHS)
from .bodies import REQUEST_BODIES, REQUEST_EXAMPLES
from .components import ERRORS, PATHS, SCHEMAS, error_spec, json_body

# --- Idempotency-Key (every POST operation) --------------------------------------------------------

IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "Makes a retry safe: a repeat with the same key (scoped to the API key) returns the first answer "
        "and creates nothing; the same key with another body is a 422, while the first is in progress a "
        f"409. Kept at least {settings.IDEMPOTENCY_KEY_TTL_HOURS} h. A UUID works well."
    ),
    "schema": {"type": "string", "pattern": "^[\\x21-\\x7E]([\\x20-\\x7E]{0,253}[\\x21-\\x7E])?$"},
}
IDEMPOTENCY_RESPONSES = {
    "EIdempotencyInProgress": error_spec(
        "A request with this Idempotency-Key is still being handled.",
        {"Retry-After": {"required": True, "description": "Seconds to wait.", "schema": {"type": "integer"}}},
    ),
    "EIdempotencyMismatch": error_spec(
        "This Idempotency-Key was already used with another body or endpoint."
    ),
}


def _with_idempotency_keys(paths: dict[str, Any]) -> dict[str, Any]:
    """Add the Idempotency-Key header and its 400/409/422 answers to every POST operation in `paths`."""
    for operations in paths.values():
        spec = operations.get("post")
        if spec is None:
            continue
        spec.setdefault("parameters", []).append(copy.deepcopy(IDEMPOTENCY_KEY))
        spec["responses"].setdefault("400", {"$ref": "#/components/responses/E400"})  # a malformed key
        spec["responses"].setdefault("409", {"$ref": "#/components/responses/EIdempotencyInProgress"})
        spec["responses"].setdefault("422", {"$ref": "#/components/responses/EIdempotencyMismatch"})
    return paths


def document() -> dict[str, Any]:
    """Return the whole OpenAPI 3.0.3 document as a dict (built per call: limits come from settings)."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Queue service API",
            "version": "1",
            "description": (
                "Outbound SMS, email and AI-reply requests. Every endpoint except the health checks and this "
                "document needs `Authorization: Bearer <key>`. Errors are `{success: false, message, errors?}`."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": _with_idempotency_keys(copy.deepcopy(PATHS)),
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "schemas": copy.deepcopy(SCHEMAS),
            "responses": {
                **{f"E{code}": copy.deepcopy(response) for code, response in ERRORS.items()},
                **copy.deepcopy(IDEMPOTENCY_RESPONSES),
            },
            "requestBodies": {
                name: json_body(build(), REQUEST_EXAMPLES.get(name)) for name, build in REQUEST_BODIES.items()
            },
        },
    }

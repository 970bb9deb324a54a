"""Corrections to the OpenAPI document BentoML 1.4 generates, so it describes what the
service really answers (clients and schemathesis read it):

- error bodies: ``detail`` is a list of ``{type, loc, msg}``, not a string;
- the statuses the guards and BentoML's traffic control add (401, 413, 415, 429, 503, 504);
- request bodies are required;
- the bearer-token scheme, when authentication is on.
"""

from __future__ import annotations

import copy
from typing import Any

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "ErrorResponse",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "What went wrong"},
        "detail": {
            "type": "array",
            "description": "One entry per problem; loc names the field and row",
            "items": {
                "type": "object",
                "properties": {
                    "type": {"type": "string"},
                    "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                },
            },
        },
    },
}

POST_ERRORS = {
    "400": "Malformed JSON, wrong types, out-of-range values, missing or unknown fields",
    "413": "Request body larger than CROP_YIELD_MAX_BODY_BYTES",
    "415": "Content-Type is not application/json",
    "429": "More concurrent requests than CROP_YIELD_MAX_CONCURRENCY",
    "503": "Rows waited longer than CROP_YIELD_MAX_LATENCY_MS in the batching queue",
    "504": "Not answered within CROP_YIELD_REQUEST_TIMEOUT",
}
PROTECTED = ("/predict", "/predict_columns", "/metadata")


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }


def patch_spec(spec: dict[str, Any], auth: bool) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorResponse"] = ERROR_SCHEMA
    for name in ("InvalidArgument", "NotFound", "InternalServerError"):
        if name in schemas:
            schemas[name] = {**ERROR_SCHEMA, "title": name}
    for path, item in spec.get("paths", {}).items():
        for method, operation in item.items():
            responses = operation.setdefault("responses", {})
            if method == "post":
                operation.get("requestBody", {})["required"] = True
                for status, description in POST_ERRORS.items():
                    responses[status] = _error_response(description)
            if auth and path in PROTECTED:
                responses["401"] = _error_response("Missing or wrong bearer token")
                operation["security"] = [{"bearerAuth": []}]
    if auth:
        spec["components"].setdefault("securitySchemes", {})["bearerAuth"] = {
            "type": "http",
            "scheme": "bearer",
        }
    return spec

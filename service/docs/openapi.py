"""Corrections to the OpenAPI document BentoML 1.4 generates, so it describes what the
service really answers (clients and schemathesis read it):

- error bodies: ``detail`` is a list of ``{type, loc, msg}``, not a string;
- every error of ``service.http.errors.TABLE``, on each operation it applies to (entries
  sharing a status share the response, their descriptions joined);
- request bodies are required;
- the bearer-token scheme, when authentication is on;
- the Open Inference Protocol's routes: their ``{"error": message}`` body, the request
  schema their handlers decode themselves, and the served model's name and version as the
  only values of their path parameters (so generated requests and Swagger UI's form use them).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from service.docs.v2_openapi import v2_openapi
from service.http import errors
from service.http.paths import is_protected, is_v2

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

REF = "#/components/schemas/{model}"


def _error_response(description: str, path: str) -> dict[str, Any]:
    schema = "V2Error" if is_v2(path) else "ErrorResponse"
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=schema)}}},
    }


def _pin_served_model(operation: dict[str, Any], served: tuple[str, str]) -> None:
    values = {"model_name": served[0], "version": served[1]}
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "path" and parameter.get("name") in values:
            parameter["schema"]["enum"] = [values[parameter["name"]]]


def patch_spec(
    spec: dict[str, Any], auth: bool, served: Callable[[], tuple[str, str] | None] = lambda: None
) -> dict[str, Any]:
    """``served()`` gives the served model's (name, version) once it is loaded."""
    spec = copy.deepcopy(spec)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorResponse"] = ERROR_SCHEMA
    for name in ("InvalidArgument", "NotFound", "InternalServerError"):
        if name in schemas:
            schemas[name] = {**ERROR_SCHEMA, "title": name}
    v2 = v2_openapi()
    schemas.update(copy.deepcopy(v2["components"]["schemas"]))
    spec.setdefault("paths", {}).update(copy.deepcopy(v2["paths"]))
    model = served()
    for path, item in spec.get("paths", {}).items():
        for method, operation in item.items():
            responses = operation.setdefault("responses", {})
            if method == "post":
                operation.get("requestBody", {})["required"] = True
            documented: set[str] = set()
            for error in errors.TABLE:
                if error.applies(path, method) and (auth or error is not errors.UNAUTHORIZED):
                    status = str(error.status)
                    if status in documented:  # e.g. 503: overloaded, or not ready yet
                        responses[status]["description"] += f" Or: {error.description}"
                    else:
                        responses[status] = _error_response(error.description, path)
                        documented.add(status)
            if model is not None:
                _pin_served_model(operation, model)
            if auth and is_protected(path):
                operation["security"] = [{"bearerAuth": []}]
    if auth:
        spec["components"].setdefault("securitySchemes", {})["bearerAuth"] = {
            "type": "http",
            "scheme": "bearer",
        }
    return spec

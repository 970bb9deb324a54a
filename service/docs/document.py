"""How ``/docs.json`` and the docs page at ``/`` present the service to a calling team.

BentoML 1.4 fills the document's frame with its own boilerplate (title ``crop_yield``,
version ``None``, a README with badges and links to BentoML's community) and names the
request and response schemas after its wrappers (``PredictRequestIODescriptor``). This
module replaces that frame: title, version, the description of ``api_description.md``
with this deployment's limits filled in, a license, tags that group the routes, operation
ids a generated client can use as function names, and schema names without the wrapper.

The document is labelled OpenAPI 3.1.0: its schemas come from pydantic/FastAPI, which
write JSON Schema 2020-12 (``{"type": "null"}`` in ``anyOf``, annotations such as ``unit``)
as OpenAPI 3.1 defines it; BentoML labels it 3.0.2 regardless, which validators reject.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any

from contract import FEATURES, TARGETS, __version__

if TYPE_CHECKING:
    from service.settings import Settings

HERE = Path(__file__).parent
TITLE = "Crop-yield prediction service"
LICENSE = {"name": "MIT"}  # no SPDX identifier: Swagger UI would link it to spdx.org
WRAPPER_SUFFIX = "IODescriptor"
REF_PREFIX = "#/components/schemas/"

PREDICTION = "Prediction"
V2 = "Open Inference Protocol (V2)"
MODEL_INFORMATION = "Model information"
GROUND_TRUTH = "Ground truth"
HEALTH = "Health and metrics"
TAGS = [
    {"name": PREDICTION, "description": "Apple and orange yields for growing conditions, as rows or columns"},
    {"name": V2, "description": "The KServe/Triton inference protocol, with JSON or binary tensors"},
    {"name": MODEL_INFORMATION, "description": "Which model is served and what it was trained on"},
    {
        "name": GROUND_TRUTH,
        "description": "Observed yields for earlier predictions: each row's error, live error metrics",
    },
    {"name": HEALTH, "description": "Kubernetes probes and Prometheus metrics (never need a token)"},
]

# (path, method) -> operation id, tag, summary; V2 operations keep their own (service.docs.v2_openapi).
OPERATION_NAMES: dict[tuple[str, str], tuple[str, str, str]] = {
    ("/predict", "post"): ("predict", PREDICTION, "Predict yields for rows of growing conditions"),
    ("/predict_columns", "post"): (
        "predict_columns",
        PREDICTION,
        "Predict yields for columns of inputs (bulk)",
    ),
    ("/feedback", "post"): (
        "feedback",
        GROUND_TRUTH,
        "Score the predictions of earlier rows against the yields observed",
    ),
    ("/metadata", "get"): ("get_metadata", MODEL_INFORMATION, "What is being served"),
    ("/livez", "get"): ("livez", HEALTH, "Liveness: the process answers"),
    ("/readyz", "get"): ("readyz", HEALTH, "Readiness: the model is loaded and warmed up (503 until then)"),
    ("/healthz", "get"): ("healthz", HEALTH, "Liveness under its older name"),
    ("/metrics", "get"): ("metrics", HEALTH, "Prometheus metrics: requests, batching, model monitoring"),
}


@dataclass(frozen=True)
class Deployment:
    """What the description states about this deployment (from the settings)."""

    max_rows_per_request: int
    max_bulk_rows: int
    max_body_bytes: int
    body_timeout: float
    request_timeout: float
    max_concurrency: int
    memory_wait: float
    auth: bool

    @classmethod
    def of(cls, settings: Settings) -> Deployment:
        """The settings' values of the same names; ``auth`` when a token is set."""
        limits = {f.name: getattr(settings, f.name) for f in fields(cls) if f.name != "auth"}
        return cls(**limits, auth=settings.auth_token is not None)


def _columns_table() -> str:
    def accepted(low: float | None, high: float | None) -> str:
        if low is None and high is None:
            return "any number"
        return f"{low:,g} to {high:,g}"

    inputs = [f"| input | `{c.name}` | {c.unit} | {accepted(c.minimum, c.maximum)} |" for c in FEATURES]
    outputs = [f"| output | `{c.name}` | {c.unit} | {c.description} |" for c in TARGETS]
    return "\n".join(inputs + outputs)


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:g} MiB" if n_bytes >= 2**20 else f"{n_bytes:,} bytes"


def description(deployment: Deployment, model: str | None) -> str:
    """``api_description.md`` with this deployment's model, limits and authentication."""
    authentication = (
        "This deployment requires `Authorization: Bearer <token>` on the prediction routes, "
        "`/feedback`, `/metadata` and `/v2/models/*`; probes, `/metrics` and this page stay open."
        if deployment.auth
        else "This deployment requires no authentication. When an operator sets "
        "`CROP_YIELD_AUTH_TOKEN`, the prediction routes, `/feedback`, `/metadata` and `/v2/models/*` need "
        "`Authorization: Bearer <token>` (answered `401` otherwise)."
    )
    template = Template((HERE / "api_description.md").read_text(encoding="utf-8"))
    return template.substitute(
        model=model or "(loading; see GET /metadata)",
        columns=_columns_table(),
        max_rows_per_request=f"{deployment.max_rows_per_request:,}",
        max_bulk_rows=f"{deployment.max_bulk_rows:,}",
        max_body=_size(deployment.max_body_bytes),
        body_timeout=f"{deployment.body_timeout:g}",
        request_timeout=f"{deployment.request_timeout:g}",
        max_concurrency=f"{deployment.max_concurrency:,}",
        memory_wait=f"{deployment.memory_wait:g}",
        authentication=authentication,
    )


def _unwrapped(name: str) -> str:
    return name.removesuffix(WRAPPER_SUFFIX)


def _rename_schemas(node: Any) -> Any:
    """The document with every ``...IODescriptor`` schema name, reference and title unwrapped."""
    if isinstance(node, dict):
        renamed = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(REF_PREFIX):
                value = REF_PREFIX + _unwrapped(value.removeprefix(REF_PREFIX))
            elif key == "title" and isinstance(value, str):
                value = _unwrapped(value)
            renamed[key] = _rename_schemas(value)
        return renamed
    if isinstance(node, list):
        return [_rename_schemas(item) for item in node]
    return node


def _drop_unreferenced_schemas(spec: dict[str, Any]) -> None:
    """Remove component schemas nothing refers to (BentoML's unused task and error models)."""
    schemas = spec["components"]["schemas"]
    while True:
        text = json.dumps({k: v for k, v in spec.items() if k != "components"}) + json.dumps(
            {k: v for k, v in spec["components"].items() if k != "schemas"}
        )
        used = "".join([text, *(json.dumps(v) for v in schemas.values())])
        unused = [name for name in schemas if f'"{REF_PREFIX}{name}"' not in used]
        if not unused:
            return
        for name in unused:
            del schemas[name]


def _hoist_bodies(spec: dict[str, Any]) -> None:
    """Move the request and response schemas BentoML writes inline into named components,
    so that Swagger UI's schema list and generated clients show them by name. Where BentoML
    also wrote the component (pydantic's own schema, which keeps ``null`` in optional fields'
    types where BentoML's inline copy drops it), the component is kept."""
    schemas = spec["components"].setdefault("schemas", {})
    for item in spec.get("paths", {}).values():
        for operation in item.values():
            bodies = [operation.get("requestBody", {}), *operation.get("responses", {}).values()]
            for body in bodies:
                for media in body.get("content", {}).values():
                    schema = media.get("schema", {})
                    title = schema.get("title")
                    if title and "$ref" not in schema:
                        schemas.setdefault(title, schema)
                        media["schema"] = {"$ref": REF_PREFIX + title}


def present(spec: dict[str, Any], deployment: Deployment, model: str | None) -> dict[str, Any]:
    """The document's frame for a calling team (see the module docstring); ``spec`` is not changed."""
    spec = _rename_schemas(spec)
    spec["openapi"] = "3.1.0"
    spec["info"] = {
        "title": TITLE,
        "version": __version__,
        "summary": "Apple and orange yields from temperature, rainfall and humidity",
        "description": description(deployment, model),
        "license": LICENSE,
    }
    spec["tags"] = [dict(tag) for tag in TAGS]
    components = spec.setdefault("components", {})
    components["schemas"] = {_unwrapped(k): v for k, v in components.get("schemas", {}).items()}
    for path, item in spec.get("paths", {}).items():
        for method, operation in item.items():
            if (path, method) in OPERATION_NAMES:
                operation_id, tag, summary = OPERATION_NAMES[(path, method)]
                operation.update(operationId=operation_id, tags=[tag], summary=summary)
                # BentoML copies docstrings verbatim; indented lines would render as code
                operation["description"] = inspect.cleandoc(operation.get("description") or summary)
    _hoist_bodies(spec)
    _drop_unreferenced_schemas(spec)
    return spec


@cache
def docs_page() -> bytes:
    """The HTML of the docs page at ``/``."""
    html = Template((HERE / "docs_page.html").read_text(encoding="utf-8"))
    return html.substitute(title=TITLE).encode()

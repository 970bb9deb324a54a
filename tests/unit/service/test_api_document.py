"""The OpenAPI document's frame (service.docs.document), without a server."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from contract import __version__
from service.docs.document import TAGS, Deployment, description, docs_page, present
from service.settings import Settings

pytestmark = pytest.mark.unit

DEPLOYMENT = Deployment(
    max_rows_per_request=500,
    max_bulk_rows=2_000_000,
    max_body_bytes=1024,
    body_timeout=2.5,
    request_timeout=12.0,
    max_concurrency=64,
    memory_wait=7.5,
    auth=False,
)
INLINE_REQUEST = {"type": "object", "title": "PredictRequestIODescriptor", "properties": {}}
BENTOML_LIKE: dict[str, Any] = {
    "openapi": "3.0.2",
    "info": {
        "title": "crop_yield",
        "version": "None",
        "description": "# crop_yield:dev [![badge](https://x)]",
    },
    "tags": [{"name": "Service APIs"}],
    "paths": {
        "/predict": {
            "post": {
                "description": "First line.\n\n        Indented by the docstring.",
                "tags": ["Service APIs"],
                "requestBody": {"content": {"application/json": {"schema": INLINE_REQUEST}}},
                "responses": {
                    "404": {
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NotFound"}}}
                    }
                },
            }
        },
        "/livez": {"get": {"tags": ["Infrastructure"], "responses": {}}},
    },
    "components": {"schemas": {"NotFound": {"type": "object"}, "TaskStatusResponse": {"type": "object"}}},
}


def test_frame_replaces_bentoml_boilerplate() -> None:
    original = copy.deepcopy(BENTOML_LIKE)
    spec = present(BENTOML_LIKE, DEPLOYMENT, "crop_yield:abc")
    assert original == BENTOML_LIKE  # the input is not changed
    assert spec["openapi"] == "3.1.0"
    assert (spec["info"]["title"], spec["info"]["version"]) == ("Crop-yield prediction service", __version__)
    assert "http" not in str(spec["info"])
    assert "crop_yield:dev" not in str(spec["info"])
    assert spec["tags"] == TAGS
    predict = spec["paths"]["/predict"]["post"]
    assert (predict["operationId"], predict["tags"]) == ("predict", ["Prediction"])
    assert predict["description"] == "First line.\n\nIndented by the docstring."
    assert spec["paths"]["/livez"]["get"]["tags"] == ["Health and metrics"]


def test_inline_bodies_become_named_schemas_without_the_wrapper_name() -> None:
    spec = present(BENTOML_LIKE, DEPLOYMENT, None)
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/PredictRequest"}
    assert spec["components"]["schemas"]["PredictRequest"]["title"] == "PredictRequest"
    assert set(spec["components"]["schemas"]) == {"PredictRequest", "NotFound"}  # unreferenced ones dropped


@pytest.mark.parametrize("auth", [False, True])
def test_description_states_this_deployment(auth: bool) -> None:
    text = description(Deployment(**{**DEPLOYMENT.__dict__, "auth": auth}), "crop_yield:abc")
    assert "$" not in text.replace("${", "")  # every placeholder filled
    assert "Serving model `crop_yield:abc`" in text
    assert "1 to 500 rows" in text
    assert "up to 2,000,000 rows" in text
    assert "1,024 bytes, arriving without a pause of 2.5 s" in text
    assert "within 12 s" in text
    assert "64 requests" in text
    assert "up to 7.5 s for memory" in text
    assert ("requires `Authorization: Bearer <token>`" in text) is auth
    assert "| input | `humidity` | % | 0 to 100 |" in text


def test_deployment_reads_the_settings() -> None:
    settings = Settings(max_rows_per_request=7, body_timeout=1.5, auth_token="secret")
    deployment = Deployment.of(settings)
    assert (deployment.max_rows_per_request, deployment.body_timeout, deployment.auth) == (7, 1.5, True)
    assert deployment.max_bulk_rows == settings.max_bulk_rows
    assert Deployment.of(Settings()).auth is False


def test_docs_page_loads_nothing_from_outside() -> None:
    page = docs_page().decode()
    assert "<title>Crop-yield prediction service: API documentation</title>" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "validatorUrl: null" in page  # Swagger UI would otherwise call validator.swagger.io
    assert 'url: "./docs.json"' in page

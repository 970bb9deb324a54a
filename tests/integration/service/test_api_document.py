"""The served OpenAPI document (/docs.json) as a calling team uses it: valid for a validator,
examples that hold and are accepted, and a client generated from it that works."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from contract import __version__
from tests.integration.conftest import CLIENT_PACKAGE, Server
from tests.integration.service.test_api import as_inputs, random_rows, stored_weights

pytestmark = pytest.mark.integration

DOCUMENT_URI = "urn:crop-yield:docs.json"
TAGS = {
    "Prediction",
    "Open Inference Protocol (V2)",
    "Model information",
    "Ground truth",
    "Health and metrics",
}


@pytest.fixture(scope="module")
def document(server: Server) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/docs.json")
    assert response.status_code == 200
    return dict(response.json())


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def examples(node: Any, pointer: str = "") -> Iterator[tuple[str, Any]]:
    """(JSON pointer of the schema or media object, its example) for every example in ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "example":
                yield pointer, value
            else:
                yield from examples(value, f"{pointer}/{key.replace('~', '~0').replace('/', '~1')}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from examples(value, f"{pointer}/{index}")


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_the_validator_accepts_the_document(document: dict[str, Any]) -> None:
    validate(document)  # raises with the first problem
    assert document["openapi"] == "3.1.0"


def test_the_frame_describes_this_service(document: dict[str, Any], server: Server) -> None:
    info = document["info"]
    assert info["title"] == "Crop-yield prediction service"
    assert info["version"] == __version__
    assert info["license"] == {"name": "MIT"}
    text = info["description"]
    for needed in ("°F", "mm", "t/ha", "/predict_columns", "/v2/models/", "/metadata", "Retry-After"):
        assert needed in text
    assert f"Serving model `{server.tag}`" in text
    assert "10,000 rows" in text
    assert "40 MiB" in text
    assert "BentoML" not in json.dumps(info)
    assert "http" not in json.dumps(info)
    assert "IODescriptor" not in json.dumps(document)
    assert {tag["name"] for tag in document["tags"]} == TAGS
    assert all(tag["description"] for tag in document["tags"])
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids))
    for path, method, operation in operations(document):
        assert len(operation["tags"]) == 1, (method, path)
        assert operation["tags"][0] in TAGS, (method, path)
        assert operation["summary"], (method, path)
    schemas = document["components"]["schemas"]
    assert {"PredictRequest", "PredictResponse", "ColumnsRequest", "ColumnsResponse"} <= set(schemas)
    assert {"FeedbackRequest", "FeedbackResponse", "ObservedYields", "FeedbackRow"} <= set(schemas)


def test_every_example_is_valid_against_its_schema(document: dict[str, Any]) -> None:
    registry: Registry[Any] = Registry().with_resource(
        DOCUMENT_URI, Resource.from_contents(document, default_specification=DRAFT202012)
    )
    found = list(examples(document))
    assert len(found) >= 20
    for pointer, example in found:
        target = pointer if not pointer.endswith(("json", "octet-stream")) else f"{pointer}/schema"
        validator = Draft202012Validator({"$ref": f"{DOCUMENT_URI}#{quote(target)}"}, registry=registry)
        errors = [error.message for error in validator.iter_errors(example)]
        assert not errors, f"{pointer}: {errors}"


def test_every_request_example_is_accepted(document: dict[str, Any], server: Server) -> None:
    sent = []
    for path, method, operation in operations(document):
        media = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if media is None:
            continue
        example = media.get("example", resolve(document, media["schema"]).get("example"))
        assert example is not None, f"{method} {path} documents no request example"
        if path.startswith("/v2/repository/models/"):
            continue  # changes the served set (test_model_control.py sends these)
        values = {
            p["name"]: p["schema"]["enum"][0] for p in operation.get("parameters", []) if p["in"] == "path"
        }
        response = httpx.request(method, server.url + path.format(**values), json=example)
        assert response.is_success, (path, response.status_code, response.text)
        sent.append(path)
    assert {"/predict", "/predict_columns", "/feedback", "/v2/models/{model_name}/infer"} <= set(sent)


@pytest.fixture(scope="module")
def generated_client(generated_client_path: Path) -> Iterator[Any]:
    sys.path.insert(0, str(generated_client_path))
    try:
        yield importlib.import_module(CLIENT_PACKAGE)
    finally:
        sys.path.remove(str(generated_client_path))


def test_generated_client_calls_the_service(generated_client: Any, server: Server) -> None:
    api = importlib.import_module(f"{generated_client.__name__}.api")
    models = importlib.import_module(f"{generated_client.__name__}.models")
    predict = importlib.import_module(f"{api.__name__}.prediction.predict")
    predict_columns = importlib.import_module(f"{api.__name__}.prediction.predict_columns")
    get_metadata = importlib.import_module(f"{api.__name__}.model_information.get_metadata")
    weight, bias = stored_weights(server)
    rows = random_rows(20, seed=11)
    expected = rows @ weight.T + bias
    # as a context manager: the client closes its connections (warnings are errors)
    with generated_client.Client(base_url=server.url, raise_on_unexpected_status=True) as client:
        body = models.PredictRequest(inputs=[models.CropConditions(**row) for row in as_inputs(rows)])
        answer = predict.sync(client=client, body=body)
        assert isinstance(answer, models.PredictResponse)
        assert answer.model == server.tag
        got = np.array([[p.apples, p.oranges] for p in answer.predictions])
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)

        columns = models.ColumnsRequest(
            temperature=rows[:, 0].tolist(), rainfall=rows[:, 1].tolist(), humidity=rows[:, 2].tolist()
        )
        bulk = predict_columns.sync(client=client, body=columns)
        assert isinstance(bulk, models.ColumnsResponse)
        np.testing.assert_allclose(
            np.column_stack([bulk.apples, bulk.oranges]), expected, rtol=1e-5, atol=1e-4
        )

        refused = predict.sync_detailed(client=client, body=models.PredictRequest(inputs=[]))
        assert refused.status_code == 400
        assert isinstance(refused.parsed, models.ErrorResponse)

        meta = get_metadata.sync(client=client)
        assert isinstance(meta, models.ServiceMetadata)
        assert meta.model == server.tag
        assert meta.service_version == __version__
        assert [f.name for f in meta.features] == ["temperature", "rainfall", "humidity"]
        assert meta.features[2].valid_max == 100

        feedback = importlib.import_module(f"{api.__name__}.ground_truth.feedback")
        region = [models.CropConditions(temperature=73.0, rainfall=67.0, humidity=43.0)]
        (own,) = predict.sync(client=client, body=models.PredictRequest(inputs=region)).predictions
        observed = models.FeedbackRequest(
            inputs=region, actuals=[models.ObservedYields(apples=own.apples, oranges=own.oranges + 1)]
        )
        scored = feedback.sync(client=client, body=observed)
        assert isinstance(scored, models.FeedbackResponse)
        assert (scored.model, scored.rows) == (server.tag, 1)
        errors = (scored.errors[0].apples, scored.errors[0].oranges, scored.summary.oranges.bias)
        assert errors == pytest.approx((0.0, 1.0, 1.0), abs=1e-4)  # the answer's float32 rounding
        assert scored.errors[0].inside_95.apples is True

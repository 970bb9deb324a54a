"""Explanations from a served process: ``/predict`` with ``explain``, the V2 outputs
``contributions`` and ``base_values`` over REST (JSON and binary) and gRPC (typed and raw
contents), each adding up to the predictions and equal to the exact Shapley values of the
stored model; unchanged answers when not asked for; and a model trained before the training
means were recorded (metadata schema_version 3) refusing with a clear 4xx while it serves on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import yaml

from contract import FEATURE_NAMES, TARGET_NAMES
from contract.metadata import read_metadata
from devtools import grpc_requests
from service.grpc import inference_pb2 as pb
from service.grpc import inference_pb2_grpc as rpc
from service.inference.explain import Explainer
from tests.integration.conftest import Server, serving
from tests.integration.service.test_api import as_inputs, random_rows, stored_weights
from tests.integration.service.test_startup import edited_store
from tests.v2_cases import json_request

pytestmark = pytest.mark.integration

ROWS = np.vstack([[[73.0, 67.0, 43.0], [40.0, 300.0, 90.0]], random_rows(20, seed=11)])
INFER = "/v2/models/crop_yield/infer"


def exact(server: Server, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stored model's explanation, from its weights and its metadata's training means."""
    name, version = server.tag.split(":")
    raw = yaml.safe_load((server.home / "models" / name / version / "model.yaml").read_text())
    weight, bias = stored_weights(server)
    explainer = Explainer.of(read_metadata(raw["metadata"], server.tag).reference, weight, bias)
    assert explainer is not None
    return explainer.explain(rows.astype(np.float32))


def assert_explains(
    predictions: np.ndarray,
    contributions: np.ndarray,
    base: np.ndarray,
    expected: tuple[np.ndarray, np.ndarray],
) -> None:
    """base + Σ contributions = the predictions, and both parts are the exact values."""
    np.testing.assert_allclose(base + contributions.sum(axis=2), predictions, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(contributions, expected[0], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(base, expected[1], rtol=1e-6)


def test_predict_explains_each_prediction(server: Server) -> None:
    response = httpx.post(f"{server.url}/predict", json={"inputs": as_inputs(ROWS), "explain": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body["base_values"]) == list(TARGET_NAMES)
    base = np.array([body["base_values"][t] for t in TARGET_NAMES])
    predictions = np.array([[p[t] for t in TARGET_NAMES] for p in body["predictions"]])
    contributions = np.array(
        [
            [[p["contributions"][t][f] for f in FEATURE_NAMES] for t in TARGET_NAMES]
            for p in body["predictions"]
        ]
    )
    assert_explains(predictions, contributions, base, exact(server, ROWS))


def test_without_explain_the_answers_are_unchanged(server: Server) -> None:
    rows = {"inputs": as_inputs(ROWS[:3])}
    plain = httpx.post(f"{server.url}/predict", json=rows)
    assert httpx.post(f"{server.url}/predict", json={**rows, "explain": False}).content == plain.content
    document = plain.json()
    assert set(document) == {"predictions", "model"}
    assert set(document["predictions"][0]) == {"apples", "oranges", "extrapolated", "outside_training_range"}
    v2 = httpx.post(f"{server.url}{INFER}", json=json_request(ROWS[:3]))
    assert httpx.post(
        f"{server.url}{INFER}", json=json_request(ROWS[:3], parameters={"explain": False})
    ).content == (v2.content)
    assert [o["name"] for o in v2.json()["outputs"]] == ["apples", "oranges"]


def v2_tensors(response: httpx.Response) -> dict[str, np.ndarray]:
    """The answer's outputs, JSON or binary, each in its shape."""
    assert response.status_code == 200, response.text
    length = response.headers.get("inference-header-content-length")
    header = json.loads(response.content[: int(length)] if length else response.content)
    offset = int(length or 0)
    tensors = {}
    for output in header["outputs"]:
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is None:
            values = np.array(output["data"], np.float32)
        else:
            values = np.frombuffer(response.content[offset : offset + size], "<f4")
            offset += size
        tensors[output["name"]] = values.reshape(output["shape"])
    return tensors


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_v2_explanation_outputs(server: Server, binary: bool) -> None:
    request = json_request(ROWS, parameters={"explain": True, "binary_data_output": binary})
    tensors = v2_tensors(httpx.post(f"{server.url}{INFER}", json=request))
    assert list(tensors) == ["apples", "oranges", "contributions", "base_values"]
    assert (tensors["contributions"].shape, tensors["base_values"].shape) == ((len(ROWS), 2, 3), (2,))
    predictions = np.column_stack([tensors["apples"], tensors["oranges"]])
    assert_explains(predictions, tensors["contributions"], tensors["base_values"], exact(server, ROWS))


def test_v2_explanation_outputs_asked_for_by_name(server: Server) -> None:
    outputs = [{"name": "base_values"}, {"name": "contributions", "parameters": {"binary_data": True}}]
    tensors = v2_tensors(httpx.post(f"{server.url}{INFER}", json=json_request(ROWS, outputs=outputs)))
    assert list(tensors) == ["base_values", "contributions"]
    expected = exact(server, ROWS)
    np.testing.assert_allclose(tensors["contributions"], expected[0], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(tensors["base_values"], expected[1], rtol=1e-6)


def test_tritonclient_reads_the_explanation(server: Server) -> None:
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        inputs = []
        for j, name in enumerate(FEATURE_NAMES):
            tensor = triton.InferInput(name, [len(ROWS)], "FP32")
            tensor.set_data_from_numpy(np.ascontiguousarray(ROWS[:, j], np.float32))
            inputs.append(tensor)
        names = ("apples", "oranges", "contributions", "base_values")
        result = client.infer("crop_yield", inputs, outputs=[triton.InferRequestedOutput(n) for n in names])
        predictions = np.column_stack([result.as_numpy("apples"), result.as_numpy("oranges")])
        contributions, base = result.as_numpy("contributions"), result.as_numpy("base_values")
        assert_explains(predictions, contributions, base, exact(server, ROWS))
    finally:
        client.close()


def grpc_outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    if response.raw_output_contents:
        flat = [np.frombuffer(raw, "<f4") for raw in response.raw_output_contents]
    else:
        flat = [np.array(t.contents.fp32_contents, np.float32) for t in response.outputs]
    return {t.name: values.reshape(list(t.shape)) for t, values in zip(response.outputs, flat, strict=True)}


@pytest.mark.parametrize("raw", [False, True], ids=["contents", "raw"])
def test_grpc_explanation_outputs(server: Server, raw: bool) -> None:
    request = grpc_requests.infer_request(ROWS, raw)
    request.parameters["explain"].bool_param = True
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        response = rpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
        plain = rpc.GRPCInferenceServiceStub(channel).ModelInfer(grpc_requests.infer_request(ROWS, raw))
    assert bool(response.raw_output_contents) is raw
    tensors = grpc_outputs(response)
    assert list(tensors) == ["apples", "oranges", "contributions", "base_values"]
    predictions = np.column_stack([tensors["apples"], tensors["oranges"]])
    assert_explains(predictions, tensors["contributions"], tensors["base_values"], exact(server, ROWS))
    assert [t.name for t in plain.outputs] == ["apples", "oranges"]


# -- a model without training means -------------------------------------------------------


def before_schema_4(metadata: dict[str, Any], entry: Path) -> None:
    metadata["schema_version"] = 3
    del metadata["reference"]


@pytest.fixture(scope="module")
def old_server(trained_home: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home, tag = trained_home
    old_home = edited_store(home, tag, before_schema_4, tmp_path_factory.mktemp("schema-3-store"))
    with serving((old_home, tag), tmp_path_factory.mktemp("schema-3-logs")) as running:
        yield running


def test_a_model_without_training_means_refuses_explain_and_serves_on(old_server: Server) -> None:
    url, version = old_server.url, old_server.tag.split(":")[1]
    refused = httpx.post(f"{url}/predict", json={"inputs": as_inputs(ROWS[:2]), "explain": True})
    assert refused.status_code == 400, refused.text
    assert refused.headers["x-model-version"] == version
    detail = refused.json()["detail"][0]
    assert (detail["type"], detail["loc"]) == ("invalid_request", ["explain"])
    assert f"model {old_server.tag} has no training means recorded" in detail["msg"]
    assert "retrain it" in detail["msg"]

    v2 = httpx.post(f"{url}{INFER}", json=json_request(ROWS[:2], parameters={"explain": True}))
    assert v2.status_code == 400
    assert v2.json()["error"].startswith("invalid request: explain: model ")
    assert "no training means recorded" in v2.json()["error"]

    request = grpc_requests.infer_request(ROWS[:2])
    request.parameters["explain"].bool_param = True
    with (
        grpc.insecure_channel(f"127.0.0.1:{old_server.grpc_port}") as channel,
        pytest.raises(grpc.RpcError) as rpc_refused,
    ):
        rpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert rpc_refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "explain: model " in (rpc_refused.value.details() or "")

    # the server serves on: predictions without explain, and ready
    served = httpx.post(f"{url}/predict", json={"inputs": as_inputs(ROWS[:2])})
    assert served.status_code == 200
    assert "contributions" not in served.json()["predictions"][0]
    assert httpx.get(f"{url}/readyz").status_code == 200
    assert old_server.process.poll() is None

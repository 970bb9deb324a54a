"""Explanations without a server: the exact Shapley values of ``service.inference.explain``
(against the predictions and, when it is installed, shap's LinearExplainer), each served
version carrying its explainer, the refusal of a model without training means, and the
encodings of the JSON API, the V2 codec (JSON and binary) and the gRPC codec."""

from __future__ import annotations

import asyncio
import json
import warnings
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import orjson
import pytest

from contract import FEATURE_NAMES, TARGET_NAMES
from contract.metadata import ModelMetadata
from service.grpc import codec as grpc_codec
from service.grpc import inference_pb2 as pb
from service.grpc.servicer import status_of
from service.http.errors import refusal_response
from service.inference.dataplane import DataPlane, Prediction
from service.inference.errors import Kind, NoExplanationsError
from service.inference.explain import BLOCK_ROWS, Explainer
from service.inference.training_range import TrainingBox
from service.rest import encoding
from service.rest.schemas import BASE_VALUES_EXAMPLE, CONTRIBUTIONS_EXAMPLE, PredictResponse
from service.settings import Settings
from service.v2 import codec
from tests.unit.service.test_versions import linear
from tests.v2_cases import json_request

WEIGHT = np.array([[-0.42154327, 0.84233534, 0.6848466], [-0.24736632, 0.7908744, 0.92214864]], np.float32)
BIAS = np.array([2.2116277, -5.0394154], np.float32)
"""The default model's weights (seed 004, rounded as float32)."""
ROWS = np.random.default_rng(7).uniform([-60, 0, 0], [140, 400, 100], size=(300, 3)).astype(np.float32)
BOX = TrainingBox([(68, 103), (43, 135), (36, 71)])


def means_of(metadata: dict[str, Any]) -> np.ndarray:
    reference = ModelMetadata.model_validate(metadata).reference
    assert reference is not None
    return np.array([reference.features[name].mean for name in FEATURE_NAMES])


@pytest.fixture
def explainer(valid_metadata: dict[str, Any]) -> Explainer:
    made = Explainer.of(ModelMetadata.model_validate(valid_metadata).reference, WEIGHT, BIAS)
    assert made is not None
    return made


def linear_map(rows: np.ndarray) -> np.ndarray:
    return np.asarray(rows, np.float64) @ WEIGHT.astype(np.float64).T + BIAS.astype(np.float64)


# -- the values ---------------------------------------------------------------------------


def test_base_values_plus_contributions_are_the_predictions(explainer: Explainer) -> None:
    contributions, base = explainer.explain(ROWS)
    assert (contributions.shape, contributions.dtype) == ((len(ROWS), 2, 3), np.float32)
    assert (base.shape, base.dtype) == ((2,), np.float32)
    np.testing.assert_allclose(
        base + contributions.sum(axis=2, dtype=np.float64), linear_map(ROWS), atol=1e-4
    )
    float32_outputs = ROWS @ WEIGHT.T + BIAS  # what the served float32 model computes
    np.testing.assert_allclose(base + contributions.sum(axis=2), float32_outputs, rtol=1e-5, atol=1e-3)


def test_contribution_is_weight_times_distance_from_the_training_mean(
    explainer: Explainer, valid_metadata: dict[str, Any]
) -> None:
    means = means_of(valid_metadata)
    contributions, base = explainer.explain(ROWS[:5])
    for k in range(len(TARGET_NAMES)):
        for j in range(len(FEATURE_NAMES)):
            expected = WEIGHT[k, j].astype(np.float64) * (ROWS[:5, j].astype(np.float64) - means[j])
            np.testing.assert_allclose(contributions[:, k, j], expected, rtol=1e-6, atol=1e-6)
    at_means, _ = explainer.explain(means.reshape(1, -1))
    np.testing.assert_allclose(at_means, 0.0, atol=1e-5)  # a feature at its mean contributes nothing
    np.testing.assert_allclose(base, linear_map(means.reshape(1, -1))[0], rtol=1e-6)


def test_bulk_rows_are_explained_block_by_block_as_at_once(explainer: Explainer) -> None:
    rows = np.random.default_rng(3).uniform(0, 100, size=(2 * BLOCK_ROWS + 5, 3)).astype(np.float32)
    contributions, _ = explainer.explain(rows)
    at_once = (rows.astype(np.float64) - explainer.means)[:, None, :] * explainer.weight[None, :, :]
    np.testing.assert_array_equal(contributions, at_once.astype(np.float32))
    assert explainer.explain(rows[:0])[0].shape == (0, 2, 3)


def test_agrees_with_shaps_interventional_linear_explainer(
    explainer: Explainer, valid_metadata: dict[str, Any]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # shap's imports warn (matplotlib, numba), and so does the option
        shap = pytest.importorskip("shap")
        means = means_of(valid_metadata)
        spread = np.random.default_rng(5).normal(0, 10, size=(20, 3))
        background = np.vstack([means + spread, means - spread])  # its mean is the training means
        reference = shap.LinearExplainer(
            (WEIGHT.astype(np.float64), BIAS.astype(np.float64)),
            background,
            feature_perturbation="interventional",
        )
        values = np.asarray(reference.shap_values(ROWS.astype(np.float64)))  # rows × features × targets
    contributions, base = explainer.explain(ROWS)
    np.testing.assert_allclose(contributions, values.transpose(0, 2, 1), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(base, reference.expected_value, rtol=1e-6)


def test_the_documented_example_adds_up() -> None:
    for target, example in zip(TARGET_NAMES, (57.32, 69.54), strict=True):
        total = BASE_VALUES_EXAMPLE[target] + sum(CONTRIBUTIONS_EXAMPLE[target].values())
        assert total == pytest.approx(example, abs=0.011)


# -- served versions and the refusal ------------------------------------------------------


def test_each_version_carries_its_explainer_and_an_old_one_refuses(
    valid_metadata: dict[str, Any], tmp_path: Path
) -> None:
    old_metadata = {k: v for k, v in valid_metadata.items() if k != "reference"} | {"schema_version": 3}
    plane = DataPlane(Settings(monitoring=False))  # not started: calls go straight to the model
    plane.load(
        linear("crop_yield:new", 2.0, valid_metadata, tmp_path),
        linear("crop_yield:old", 1.0, old_metadata, tmp_path),
    )
    new = asyncio.run(plane.predict(ROWS, "predict"))
    contributions, base = new.explanation()
    np.testing.assert_allclose(base + contributions.sum(axis=2), new.outputs, rtol=1e-5, atol=1e-3)
    old = asyncio.run(plane.predict(ROWS, "predict", version="old"))
    with pytest.raises(NoExplanationsError) as refused:
        old.explanation()
    assert refused.value.version == "old"
    assert "explain: model crop_yield:old has no training means recorded" in str(refused.value)
    assert "retrain it" in str(refused.value)


def test_the_refusal_is_an_invalid_request_naming_explain_on_every_transport() -> None:
    prediction = Prediction(
        ROWS[:1], linear_map(ROWS[:1]).astype(np.float32), None, None, BOX, "crop_yield:v3"
    )
    with pytest.raises(NoExplanationsError) as refused:
        prediction.explanation()
    refusal = refused.value
    assert (refusal.kind, refusal.field, refusal.version) == (Kind.INVALID, "explain", "v3")
    json_api = refusal_response("/predict", refusal)
    assert json_api.status_code == 400
    detail = orjson.loads(json_api.body)["detail"][0]
    assert (detail["type"], detail["loc"]) == ("invalid_request", ["explain"])
    assert "no training means recorded" in detail["msg"]
    assert "retrain it" in detail["msg"]
    v2 = refusal_response("/v2/models/crop_yield/infer", refusal, ["body"])
    assert v2.status_code == 400
    assert orjson.loads(v2.body)["error"].startswith("invalid request: explain: model crop_yield:v3 has no")
    assert (b"x-model-version", b"v3") in v2.raw_headers
    assert status_of(refusal.kind) == grpc.StatusCode.INVALID_ARGUMENT


# -- the JSON API's body ------------------------------------------------------------------

OUTPUTS = np.array([[57.32, 69.54], [53.8, 66.81]], np.float32)
OUTSIDE = np.array([[False, False, False], [True, False, True]])


def test_a_body_without_explanation_is_unchanged() -> None:
    body = encoding.predictions_json(OUTPUTS, OUTSIDE, None, None, "crop_yield:v1")
    assert body == (
        b'{"predictions":[{"apples":57.31999969482422,"oranges":69.54000091552734,"extrapolated":false,'
        b'"outside_training_range":[]},{"apples":53.79999923706055,"oranges":66.80999755859375,'
        b'"extrapolated":true,"outside_training_range":["temperature","humidity"]}],"model":"crop_yield:v1"}'
    )


def test_a_body_with_explanation_matches_the_documented_response(explainer: Explainer) -> None:
    rows = ROWS[:2]
    contributions, base = explainer.explain(rows)
    body = encoding.predictions_json(OUTPUTS, OUTSIDE, None, None, "crop_yield:v1", (contributions, base))
    response = PredictResponse.model_validate_json(body)
    assert response.base_values is not None
    assert (response.base_values.apples, response.base_values.oranges) == tuple(base.tolist())
    for i, prediction in enumerate(response.predictions):
        assert prediction.contributions is not None
        for k, target in enumerate(TARGET_NAMES):
            by_feature = getattr(prediction.contributions, target).model_dump()
            assert list(by_feature) == list(FEATURE_NAMES)
            assert list(by_feature.values()) == contributions[i, k].tolist()
    document = orjson.loads(body)
    assert list(document) == ["predictions", "model", "base_values"]
    assert list(document["predictions"][0]) == [
        "apples",
        "oranges",
        "contributions",
        "extrapolated",
        "outside_training_range",
    ]


# -- the Open Inference Protocol ----------------------------------------------------------


def decode(document: dict[str, Any]) -> codec.InferRequest:
    return codec.decode_request(json.dumps(document).encode(), None, 1000)


def test_parameters_explain_adds_the_explanation_outputs() -> None:
    asked = decode(json_request(ROWS[:2], parameters={"explain": True}))
    assert asked.explain
    assert [o.name for o in asked.outputs] == ["apples", "oranges", "contributions", "base_values"]
    for document in (json_request(ROWS[:2]), json_request(ROWS[:2], parameters={"explain": False})):
        plain = decode(document)
        assert not plain.explain
        assert [o.name for o in plain.outputs] == ["apples", "oranges"]
    binary = decode(json_request(ROWS[:2], parameters={"explain": True, "binary_data_output": True}))
    assert all(o.binary for o in binary.outputs)


def test_explanation_outputs_are_asked_for_by_name_like_the_others() -> None:
    named = decode(
        json_request(ROWS[:2], outputs=[{"name": "contributions", "parameters": {"binary_data": True}}])
    )
    assert named.explain
    assert named.outputs == (codec.RequestedOutput("contributions", True),)
    both = decode(
        json_request(
            ROWS[:2], outputs=[{"name": "base_values"}, {"name": "apples"}], parameters={"explain": True}
        )
    )
    assert [o.name for o in both.outputs] == ["base_values", "apples", "contributions"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"parameters": {"explain": "yes"}}, "parameters.explain must be true or false, not 'yes'"),
        (
            {"parameters": {"explain": False}, "outputs": [{"name": "base_values"}]},
            "output 'base_values' is requested but parameters.explain is false",
        ),
        (
            {"outputs": [{"name": "shap"}]},
            "outputs are apples, oranges, apples_lower, apples_upper, oranges_lower, oranges_upper, "
            "extrapolated, contributions, base_values",
        ),
    ],
)
def test_a_bad_explanation_request_is_refused(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(codec.CodecError) as refused:
        decode(json_request(ROWS[:2]) | extra)
    assert message in str(refused.value)


def test_v2_json_and_binary_explanation_outputs(explainer: Explainer) -> None:
    rows = ROWS[:3]
    explanation = explainer.explain(rows)
    outputs = linear_map(rows).astype(np.float32)
    request = decode(json_request(rows, parameters={"explain": True}))
    body, headers = codec.encode_response(request, outputs, "crop_yield", "v1", None, None, explanation)
    assert headers == {"content-type": "application/json"}
    tensors = {t["name"]: t for t in orjson.loads(body)["outputs"]}
    assert [(t["datatype"], t["shape"]) for t in tensors.values()] == [
        ("FP32", [3]),
        ("FP32", [3]),
        ("FP32", [3, 2, 3]),
        ("FP32", [2]),
    ]
    flat = np.array(tensors["contributions"]["data"], np.float32)  # row-major, flat
    np.testing.assert_array_equal(flat.reshape(3, 2, 3), explanation[0])
    np.testing.assert_array_equal(np.array(tensors["base_values"]["data"], np.float32), explanation[1])

    binary = decode(json_request(rows, parameters={"explain": True, "binary_data_output": True}))
    body, headers = codec.encode_response(binary, outputs, "crop_yield", "v1", None, None, explanation)
    length = int(headers[codec.HEADER_LENGTH])
    header = orjson.loads(body[:length])
    sizes = [t["parameters"]["binary_data_size"] for t in header["outputs"]]
    assert sizes == [12, 12, 3 * 2 * 3 * 4, 8]
    assert [t["shape"] for t in header["outputs"]][2:] == [[3, 2, 3], [2]]
    tail = np.frombuffer(body[length + 24 :], "<f4")
    np.testing.assert_array_equal(tail[:18].reshape(3, 2, 3), explanation[0])
    np.testing.assert_array_equal(tail[18:], explanation[1])


@pytest.mark.parametrize("raw", [False, True], ids=["contents", "raw"])
def test_grpc_explanation_outputs(explainer: Explainer, raw: bool) -> None:
    rows = ROWS[:2]
    message = pb.ModelInferRequest(model_name="crop_yield")
    for j, name in enumerate(FEATURE_NAMES):
        tensor = message.inputs.add(name=name, datatype="FP32", shape=[len(rows)])
        if raw:
            message.raw_input_contents.append(np.ascontiguousarray(rows[:, j], "<f4").tobytes())
        else:
            tensor.contents.fp32_contents.extend(rows[:, j].tolist())
    message.parameters["explain"].bool_param = True
    decoded, answer_raw = grpc_codec.decode(message, max_rows=10)
    assert (decoded.explain, answer_raw) == (True, raw)
    explanation = explainer.explain(rows)
    response = grpc_codec.encode(
        decoded, raw, linear_map(rows).astype(np.float32), "crop_yield", "v1", None, None, explanation
    )
    shapes = {t.name: list(t.shape) for t in response.outputs}
    assert shapes == {"apples": [2], "oranges": [2], "contributions": [2, 2, 3], "base_values": [2]}
    if raw:
        contents = [np.frombuffer(b, "<f4") for b in response.raw_output_contents]
    else:
        contents = [np.array(t.contents.fp32_contents, np.float32) for t in response.outputs]
    np.testing.assert_array_equal(contents[2].reshape(2, 2, 3), explanation[0])
    np.testing.assert_array_equal(contents[3], explanation[1])


def test_more_rows_than_explained_per_call_are_refused_naming_explain(explainer: Explainer) -> None:
    from service.inference.errors import NoExplanationsError
    from service.inference.explain import MAX_EXPLAINED_ROWS, explanation

    rows = np.zeros((MAX_EXPLAINED_ROWS + 1, 3), dtype=np.float32)
    with pytest.raises(NoExplanationsError, match=r"explain: at most 100,000 rows per call") as refused:
        explanation(explainer, rows, "crop_yield:v1")
    assert refused.value.field == "explain"
    contributions, _ = explanation(explainer, rows[:-1], "crop_yield:v1")
    assert contributions.shape == (MAX_EXPLAINED_ROWS, 2, 3)

"""The V2 codec without a server: JSON and binary requests → rows, outputs → bodies, errors."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest

from service.v2 import codec
from service.v2.schemas import EXAMPLE_REQUEST, InferenceRequest
from tests.v2_cases import BAD_BODIES, FEATURES, binary_request, json_request, tensor

ROWS = np.array([[73.0, 67.0, 43.0], [91.0, 88.0, 64.0], [-60.0, 0.0, 100.0]])
MAX_ROWS = 1_000_000


def decode(body: bytes | dict[str, object], header_length: int | None = None) -> codec.InferRequest:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    return codec.decode_request(raw, None if header_length is None else str(header_length), MAX_ROWS)


def test_json_rows_come_out_in_feature_order_as_float32() -> None:
    request = json_request(ROWS)
    request["inputs"].reverse()  # any input order
    decoded = decode(request)
    assert decoded.rows.dtype == np.float32
    np.testing.assert_array_equal(decoded.rows, ROWS.astype(np.float32))
    assert [o.name for o in decoded.outputs] == ["apples", "oranges"]
    assert not any(o.binary for o in decoded.outputs)


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT32", "INT64"])
def test_nested_data_and_every_accepted_datatype(datatype: str) -> None:
    whole = ROWS.round()
    inputs = [
        tensor(n, [[v] for v in whole[:, j].tolist()], [3, 1], datatype) for j, n in enumerate(FEATURES)
    ]
    np.testing.assert_array_equal(decode({"inputs": inputs}).rows, whole.astype(np.float32))


@pytest.mark.parametrize(
    ("dtype", "datatype"), [("<f4", "FP32"), ("<f8", "FP64"), ("<i4", "INT32"), ("<i8", "INT64")]
)
def test_binary_tensors(dtype: str, datatype: str) -> None:
    whole = ROWS.round()
    body, header_length = binary_request(whole, dtype, datatype)
    np.testing.assert_array_equal(decode(body, header_length).rows, whole.astype(np.float32))


def test_binary_and_json_inputs_mix() -> None:
    body, header_length = binary_request(ROWS[:, :1].repeat(3, axis=1))
    header = json.loads(body[:header_length])
    header["inputs"] = header["inputs"][:1] + json_request(ROWS)["inputs"][1:]
    text = json.dumps(header).encode()
    decoded = decode(text + body[header_length : header_length + 12], len(text))
    np.testing.assert_array_equal(decoded.rows, ROWS.astype(np.float32))


def test_bulk_json_takes_the_simdjson_path_with_the_same_result() -> None:
    rows = np.random.default_rng(0).uniform([50, 20, 20], [110, 150, 90], size=(5_000, 3)).round(2)
    body = json.dumps(json_request(rows)).encode()
    assert len(body) > codec.SIMDJSON_FROM_BYTES
    np.testing.assert_array_equal(decode(body).rows, rows.astype(np.float32))
    too_big = body.replace(b'"data": [', b'"data": [18910126700947378176, ', 1)  # beyond 64 bits
    with pytest.raises(codec.CodecError, match="could not be read as JSON"):
        decode(too_big)
    bad = body.replace(b'"data": [', b'"data": [1, "x", ', 1)  # a string as element 1
    with pytest.raises(codec.CodecError, match=r"element 1 is 'x', not a number"):
        decode(bad)


def test_values_are_checked_in_their_own_precision() -> None:
    # 140.00001 °F rounds to 140.0 in float32 but is above the maximum, as in /predict
    request = json_request(np.array([[140.00001, 67.0, 43.0]]))
    with pytest.raises(codec.CodecError, match="above the maximum 140"):
        decode(request)


def test_output_selection_and_binary_flags() -> None:
    request = json_request(
        ROWS,
        id="r-1",
        parameters={"binary_data_output": True, "custom": "kept"},
        outputs=[{"name": "oranges", "parameters": {"binary_data": False}}, {"name": "apples"}],
        model_name="crop_yield",  # extra fields real clients send are tolerated
    )
    decoded = decode(request)
    assert decoded.id == "r-1"
    assert decoded.outputs == (codec.RequestedOutput("oranges", False), codec.RequestedOutput("apples", True))


def test_json_response() -> None:
    request = decode(json_request(ROWS[:2], id="x"))
    outputs = np.array([[56.83, 70.36], [80.5, 101.25]], dtype=np.float32)
    body, headers = codec.encode_response(request, outputs, "crop_yield", "v1")
    assert headers == {"content-type": "application/json"}
    assert orjson.loads(body) == {
        "model_name": "crop_yield",
        "model_version": "v1",
        "id": "x",
        "outputs": [
            {"name": "apples", "datatype": "FP32", "shape": [2], "data": [56.83, 80.5]},
            {"name": "oranges", "datatype": "FP32", "shape": [2], "data": [70.36, 101.25]},
        ],
    }


def test_binary_response_carries_its_header_length() -> None:
    request = decode(
        json_request(ROWS[:2], outputs=[{"name": "oranges", "parameters": {"binary_data": True}}])
    )
    outputs = np.array([[1.5, 2.5], [3.5, 4.5]], dtype=np.float32)
    body, headers = codec.encode_response(request, outputs, "crop_yield", "v1")
    length = int(headers[codec.HEADER_LENGTH])
    header = json.loads(body[:length])
    assert "id" not in header
    assert header["outputs"] == [
        {"name": "oranges", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}
    ]
    np.testing.assert_array_equal(np.frombuffer(body[length:], "<f4"), [2.5, 4.5])


def test_bounds_and_flags_are_outputs_asked_for_by_name() -> None:
    names = ["apples_upper", "extrapolated"]
    request = decode(
        json_request(ROWS[:2], outputs=[{"name": n} for n in names], parameters={"interval": 0.8})
    )
    assert (request.interval, request.wants_flags) == (0.8, True)
    assert decode(json_request(ROWS[:2])).interval is None  # no bound asked for: no level
    outputs = np.array([[1.5, 2.5], [3.5, 4.5]], dtype=np.float32)
    bounds = {"apples_upper": np.array([2.0, 4.0])}
    body, _ = codec.encode_response(request, outputs, "m", "v", bounds, np.array([False, True]))
    assert orjson.loads(body)["outputs"] == [
        {"name": "apples_upper", "datatype": "FP32", "shape": [2], "data": [2.0, 4.0]},
        {"name": "extrapolated", "datatype": "BOOL", "shape": [2], "data": [False, True]},
    ]


@pytest.mark.parametrize("level", [0.4, 1, "0.9", True])
def test_a_bad_interval_level_is_refused(level: object) -> None:
    body = json_request(ROWS[:1], outputs=[{"name": "apples_lower"}], parameters={"interval": level})
    with pytest.raises(codec.CodecError, match=r"parameters\.interval must be a confidence level"):
        decode(body)


def test_row_limit() -> None:
    with pytest.raises(codec.CodecError, match="has 3 rows; at most 2 rows per request"):
        codec.decode_request(json.dumps(json_request(ROWS)).encode(), None, 2)


@pytest.mark.parametrize(
    ("case", "body", "header_length", "fragments"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES]
)
def test_bad_bodies_name_the_problem(
    case: str, body: bytes, header_length: str | None, fragments: list[str]
) -> None:
    with pytest.raises(codec.CodecError) as raised:
        codec.decode_request(body, header_length, MAX_ROWS)
    for fragment in fragments:
        assert fragment in str(raised.value), (case, str(raised.value))


def test_the_documented_example_is_valid_and_decodes() -> None:
    InferenceRequest.model_validate(EXAMPLE_REQUEST)
    decoded = decode(EXAMPLE_REQUEST)
    np.testing.assert_array_equal(decoded.rows, np.array([[73, 67, 43], [91, 88, 64]], dtype=np.float32))


SMALL_VALID = [
    json_request(ROWS),
    {"id": "r1", "inputs": json_request(ROWS)["inputs"][::-1]},  # any order of the tensors
    {"inputs": [{**t, "shape": [len(ROWS), 1], "datatype": "FP64"} for t in json_request(ROWS)["inputs"]]},
    json_request(np.array([[-60.0, 0.0, 0.0], [140.0, 10_000.0, 100.0]])),  # the bounds themselves
]


@pytest.mark.parametrize("document", SMALL_VALID)
def test_the_small_request_path_decodes_as_the_general_path(
    document: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    body = json.dumps(document).encode()
    small = codec.small_request(json.loads(body), MAX_ROWS)
    assert small is not None
    monkeypatch.setattr(codec, "small_request", lambda document, max_rows: None)
    general = codec.decode_request(body, None, MAX_ROWS)
    np.testing.assert_array_equal(small.rows, general.rows)
    assert small.rows.dtype == general.rows.dtype == np.float32
    assert (small.id, small.outputs, small.interval) == (general.id, general.outputs, general.interval)


def _with(tensor_change: dict[str, Any], index: int = 0, **top: Any) -> dict[str, Any]:
    document = json_request(ROWS)
    document["inputs"][index] = {**document["inputs"][index], **tensor_change}
    return {**document, **top}


@pytest.mark.parametrize(
    "document",
    [
        _with({"datatype": "INT32"}),  # integral check: general path
        _with({"shape": [1.0]}),
        _with({"shape": [True]}),
        _with({"data": [True]}),
        _with({"data": [200.0]}),  # above the maximum: the general path words the error
        _with({"data": ["73"]}),
        _with({"parameters": {}}),
        _with({}, outputs=[{"name": "apples"}]),
        _with({}, parameters={"binary_data_output": True}),
        _with({"name": "input-0"}),
        _with({"datatype": ["FP32"]}),
        {"inputs": json_request(ROWS)["inputs"][:2]},
        {"id": 3, "inputs": json_request(ROWS)["inputs"]},
    ],
)
def test_anything_else_takes_the_general_path(document: dict[str, Any]) -> None:
    assert codec.small_request(document, MAX_ROWS) is None


@pytest.mark.parametrize("nested", [True, False], ids=["nested", "flat"])
def test_one_n_by_3_tensor_holds_every_feature_in_metadata_order(nested: bool) -> None:
    data = ROWS.tolist() if nested else ROWS.ravel().tolist()
    decoded = decode({"inputs": [tensor("input-0", data, [3, 3])]})
    np.testing.assert_array_equal(decoded.rows, ROWS.astype(np.float32))
    matrix = np.ascontiguousarray(ROWS, "<f4")
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [3, 3],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 36},
                }
            ]
        }
    ).encode()
    np.testing.assert_array_equal(decode(header + matrix.tobytes(), len(header)).rows, matrix)


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        (
            [tensor("input-0", [1.0] * 6, [3, 2])],
            "unknown input 'input-0'; the model's inputs are temperature",
        ),
        (
            [tensor("input-0", [1.0] * 8, [3, 3])],
            "shape says 3 rows of 3 (9 elements) but data holds 8 elements",
        ),
        (
            [tensor("input-0", [73.0, -1.0, 43.0], [1, 3])],
            "input 'rainfall': element 0 is -1 mm, below the minimum",
        ),
        (
            [tensor("input-0", [1.0] * 3, [1, 3]), tensor("humidity", [1.0], [1])],
            "or one [N, 3] tensor of them in that order",
        ),
    ],
)
def test_a_bad_n_by_3_tensor_is_refused_by_name(inputs: list[dict[str, object]], fragment: str) -> None:
    with pytest.raises(codec.CodecError) as refused:
        decode({"inputs": inputs})
    assert fragment in str(refused.value)

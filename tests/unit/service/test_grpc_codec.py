"""The gRPC codec without a server (protobuf messages in, rows and answers out), and the
committed stubs against a fresh generation from service/grpc/inference.proto."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.grpc import codec
from service.grpc import inference_pb2 as pb
from service.v2.codec import CodecError
from tests.helpers import REPO_ROOT

ROWS = np.array([[73.0, 67.0, 43.0], [91.0, 88.0, 64.0]], dtype=np.float32)
FEATURES = ("temperature", "rainfall", "humidity")


def request(raw: bool = False, datatype: str = "FP32") -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="crop_yield", id="r1")
    for j, name in enumerate(FEATURES):
        tensor = message.inputs.add(name=name, datatype=datatype, shape=[len(ROWS)])
        if raw:
            message.raw_input_contents.append(np.ascontiguousarray(ROWS[:, j], "<f4").tobytes())
        elif datatype == "FP64":
            tensor.contents.fp64_contents.extend(ROWS[:, j].tolist())
        else:
            tensor.contents.fp32_contents.extend(ROWS[:, j].tolist())
    return message


@pytest.mark.parametrize(("raw", "datatype"), [(False, "FP32"), (False, "FP64"), (True, "FP32")])
def test_contents_and_raw_contents_decode_to_the_same_rows(raw: bool, datatype: str) -> None:
    decoded, answer_raw = codec.decode(request(raw, datatype), max_rows=10)
    np.testing.assert_array_equal(decoded.rows, ROWS)
    assert decoded.id == "r1"
    assert answer_raw is raw
    assert [o.name for o in decoded.outputs] == ["apples", "oranges"]
    assert decoded.interval is None


def test_parameters_choose_the_interval_outputs_and_raw_answers() -> None:
    message = request()
    message.parameters["interval"].double_param = 0.8
    message.parameters["binary_data_output"].bool_param = True
    message.outputs.add(name="oranges_upper")
    message.outputs.add(name="extrapolated")
    decoded, answer_raw = codec.decode(message, max_rows=10)
    assert decoded.interval == 0.8
    assert answer_raw
    assert [o.name for o in decoded.outputs] == ["oranges_upper", "extrapolated"]
    assert decoded.wants_flags


def test_every_parameter_kind_reads_back() -> None:
    kinds = {
        "bool_param": True,
        "int64_param": -3,
        "string_param": "s",
        "double_param": 0.5,
        "uint64_param": 7,
    }
    for field, value in kinds.items():
        assert codec.parameter(pb.InferParameter(**{field: value})) == value
    assert codec.parameter(pb.InferParameter()) is None


def test_refusals_use_the_rest_codec_words() -> None:
    too_many = request()
    for tensor in too_many.inputs:
        tensor.shape[0] = 11
    with pytest.raises(CodecError, match="has 11 rows; at most 10 rows per request"):
        codec.decode(too_many, max_rows=10)
    raw = request(raw=True)
    raw.raw_input_contents.pop()
    with pytest.raises(CodecError, match="raw_input_contents has 2 entries for 3 inputs"):
        codec.decode(raw, max_rows=10)
    wrong_field = request(datatype="INT32")
    with pytest.raises(CodecError, match="contents of a INT32 tensor go in int_contents"):
        codec.decode(wrong_field, max_rows=10)


@pytest.mark.parametrize("raw", [False, True])
def test_answers_come_back_in_the_form_asked_for(raw: bool) -> None:
    decoded, _ = codec.decode(request(), max_rows=10)
    outputs = np.array([[1.5, 2.5], [3.5, 4.5]], dtype=np.float32)
    answer = codec.encode(decoded, raw, outputs, "crop_yield", "v1")
    assert (answer.model_name, answer.model_version, answer.id) == ("crop_yield", "v1", "r1")
    assert [(t.name, t.datatype, list(t.shape)) for t in answer.outputs] == [
        ("apples", "FP32", [2]),
        ("oranges", "FP32", [2]),
    ]
    if raw:
        assert [np.frombuffer(b, "<f4").tolist() for b in answer.raw_output_contents] == [
            [1.5, 3.5],
            [2.5, 4.5],
        ]
    else:
        assert not answer.raw_output_contents
        assert [list(t.contents.fp32_contents) for t in answer.outputs] == [[1.5, 3.5], [2.5, 4.5]]


def test_flags_are_bool_contents() -> None:
    message = request()
    message.outputs.add(name="extrapolated")
    decoded, _ = codec.decode(message, max_rows=10)
    answer = codec.encode(
        decoded, False, np.zeros((2, 2), np.float32), "m", "v", None, np.array([True, False])
    )
    (tensor,) = answer.outputs
    assert (tensor.datatype, list(tensor.contents.bool_contents)) == ("BOOL", [True, False])


def test_the_committed_stubs_are_generated_from_the_proto(tmp_path: Path) -> None:
    proto = tmp_path / "service" / "grpc" / "inference.proto"
    proto.parent.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "service" / "grpc" / "inference.proto", proto)
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-I",
        ".",
        "--python_out=.",
        "--pyi_out=.",
        "--grpc_python_out=.",
    ]
    subprocess.run([*command, "service/grpc/inference.proto"], cwd=tmp_path, check=True)
    for name in ("inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py"):
        fresh = (proto.parent / name).read_text()
        assert fresh == (REPO_ROOT / "service" / "grpc" / name).read_text(), f"{name}: run make grpc-stubs"


@pytest.mark.parametrize("raw", [False, True], ids=["contents", "raw"])
def test_one_n_by_3_tensor_as_other_v2_clients_send(raw: bool) -> None:
    message = pb.ModelInferRequest(model_name="crop_yield")
    tensor = message.inputs.add(name="input-0", datatype="FP32", shape=[2, 3])
    if raw:
        message.raw_input_contents.append(np.ascontiguousarray(ROWS, "<f4").tobytes())
    else:
        tensor.contents.fp32_contents.extend(ROWS.ravel().tolist())
    decoded, _ = codec.decode(message, max_rows=10)
    np.testing.assert_array_equal(decoded.rows, ROWS)

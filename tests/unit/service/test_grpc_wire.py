"""Messages that are not valid protobuf, read without a server (service.grpc.wire): each
kind of damage named where it is, and a valid message read as protobuf reads it."""

from __future__ import annotations

import numpy as np
import pytest

from devtools.grpc_requests import infer_request
from service.grpc import inference_pb2 as pb
from service.grpc.wire import Malformed, diagnose, parsing

REQUEST = infer_request(np.array([[73.0, 67.0, 43.0]], np.float32), raw=True, id="r1")
GOOD = REQUEST.SerializeToString()
read = parsing(pb.ModelInferRequest)


def test_a_valid_message_is_read_as_protobuf_reads_it() -> None:
    assert read(GOOD) == REQUEST
    assert diagnose(GOOD, pb.ModelInferRequest.DESCRIPTOR) is None


def string_field(number: int, value: bytes) -> bytes:
    return bytes([number << 3 | 2, len(value)]) + value


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (GOOD[:-3], "says 4 bytes but only 1 remain (a truncated message?)"),
        (b"\xff\xff\xff", "the bytes end inside a field's tag, at byte 0"),
        (b"\x07", "field number 0 at byte 0"),
        (string_field(1, b"crop\xff_yield"), "model_name is not valid UTF-8 (byte 4 of the string)"),
        (
            string_field(5, string_field(1, b"temp\xc3")),
            "inputs[0].name is not valid UTF-8 (byte 4 of the string)",
        ),
        (b"\x0b", "model_name has wire type 3, which this protocol does not use"),
        (b"\x1d\x00\x00", "the bytes end inside id"),
    ],
)
def test_each_kind_of_damage_is_named_where_it_is(data: bytes, problem: str) -> None:
    answer = read(data)
    assert isinstance(answer, Malformed)
    assert answer.problem.startswith(
        f"the request is not a valid inference.ModelInferRequest message ({len(data)} bytes)"
    )
    assert problem in answer.problem


def test_damage_inside_a_map_entry_names_the_map() -> None:
    entry = string_field(1, b"interval") + bytes([2 << 3 | 2, 5]) + b"\x01"  # value cut short
    answer = read(string_field(4, entry))
    assert isinstance(answer, Malformed)
    assert "parameters.value says 5 bytes but only 1 remain" in answer.problem

"""ModelInferRequest/Response ↔ the protocol's decoded request and the model's outputs (pure).

Read straight from the protobuf message into numpy: raw contents with ``np.frombuffer``
(zero-copy), typed float contents from their packed encoding (``_floats``), each tensor
checked by the same ``service.v2.codec.Inputs`` as the REST route's, so both transports
accept, refuse and word their errors alike. (The first version rewrote each message as
the REST route's JSON document and decoded that: more than half of a single-row call's
cost after the transport.) Answers come back in the form the request used: raw bytes for
raw inputs (or ``binary_data_output``), typed contents otherwise, large ones written as
their packed encoding rather than element by element.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import numpy as np

from contract import FEATURE_NAMES
from service.grpc import inference_pb2 as pb
from service.grpc import wire
from service.v2 import codec
from service.v2.codec import ALL_OUTPUTS, DTYPES, SMALL_BOUNDS, SMALL_ROWS, CodecError, InferRequest, Inputs

CONTENTS_FIELD = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "BOOL": "bool_contents",
}
"""Where each datatype's elements are in ``InferTensorContents``."""
_NUMBER = {
    datatype: pb.InferTensorContents.DESCRIPTOR.fields_by_name[field].number
    for datatype, field in CONTENTS_FIELD.items()
}
PACKED_FROM = 64
"""Elements from which typed contents are read and written as their packed bytes (below,
the repeated field's own conversion costs less than the encoding's)."""
_LENGTH_DELIMITED = 2
FLOAT_FIELDS = {
    datatype: pb.InferTensorContents.DESCRIPTOR.fields_by_name[CONTENTS_FIELD[datatype]]
    for datatype in ("FP32", "FP64")
}
"""The contents fields of float tensors (``_small`` compares the fields ``ListFields`` names)."""


def parameter(value: pb.InferParameter) -> Any:
    """An ``InferParameter``'s value (None when none is set)."""
    choice = value.WhichOneof("parameter_choice")
    return None if choice is None else getattr(value, choice)


def parameters(values: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    return {key: parameter(value) for key, value in values.items()}


def _small(request: pb.ModelInferRequest, tensors: Any, max_rows: int) -> InferRequest | None:
    """The common small call read in plain Python, or None for the general path: as
    ``service.v2.codec.small_request`` (three float tensors of up to ``SMALL_ROWS``
    elements, each value finite and within its feature's bounds, nothing else asked), for
    a third of the general path's cost."""
    if len(request.parameters) or len(request.outputs):
        return None
    columns: dict[str, list[float]] = {}
    for tensor in tensors:
        fields = tensor.ListFields()  # one call for all that is set: upb's attributes cost more
        if len(fields) != 4:  # name, datatype, shape and contents; no parameters
            return None
        (_, name), (_, datatype), (_, shape), (_, contents) = fields
        if name in columns or name not in SMALL_BOUNDS:
            return None
        filled = contents.ListFields()
        if len(filled) != 1 or filled[0][0] != FLOAT_FIELDS.get(datatype):
            return None
        values = filled[0][1]
        n = len(values)
        if not 1 <= n <= min(SMALL_ROWS, max_rows) or shape[0] != n:
            return None
        if len(shape) != 1 and (len(shape) != 2 or shape[1] != 1):  # [N] or [N, 1]
            return None
        values = list(values)
        low, high = SMALL_BOUNDS[name]
        for value in values:  # NaN fails the comparison
            if not low <= value <= high:
                return None
        columns[name] = values
    if len({len(c) for c in columns.values()}) != 1:
        return None
    rows = np.array(list(zip(*(columns[name] for name in FEATURE_NAMES), strict=True)), dtype=np.float32)
    return InferRequest(request.id or None, rows, ALL_OUTPUTS[False])


def _contents(tensor: pb.ModelInferRequest.InferInputTensor, count: int, datatype: str) -> np.ndarray:
    """The tensor's typed elements, from the field of its datatype."""
    field = CONTENTS_FIELD[datatype]
    if not tensor.HasField("contents"):
        raise CodecError(
            f"input {tensor.name!r} has no elements; send them in contents.{field}, or every "
            "input's in raw_input_contents"
        )
    contents = tensor.contents
    elements = getattr(contents, field)
    if len(elements) == 0 or len(contents.ListFields()) > 1:
        filled = [f.name for f, _ in contents.ListFields()]
        if filled != [field]:
            raise CodecError(
                f"input {tensor.name!r}: contents of a {datatype} tensor go in {field}; "
                f"this one has {', '.join(filled) or 'nothing'}"
            )
    dtype = DTYPES[datatype]
    if len(elements) >= PACKED_FROM and dtype.kind == "f":
        return _floats(contents.SerializeToString(), _NUMBER[datatype], dtype, elements)
    return np.array(elements, dtype=dtype)


def _raw(blob: memoryview, name: str, count: int, datatype: str) -> np.ndarray:
    """A tensor's raw contents, read in place."""
    return codec.binary_data(blob, 0, len(blob), count, name, datatype)


def _floats(encoded: bytes, number: int, dtype: np.dtype[Any], elements: Any) -> np.ndarray:
    """The float elements of a contents message holding one packed field, read from its
    encoding without a Python float each (protobuf's repeated field has no buffer)."""
    tag, length, start = _header(encoded)
    if tag == (number << 3) | _LENGTH_DELIMITED and start + length == len(encoded):
        return np.frombuffer(encoded, dtype=dtype, offset=start)
    return np.array(elements, dtype=dtype)  # not the one packed field expected: the slow way


def _header(encoded: bytes) -> tuple[int, int, int]:
    """(tag, length, where the payload starts) of a length-delimited field at the start;
    a tag of -1 when the bytes end first."""
    try:
        tag, pos = wire.read_varint(encoded, 0)
        length, pos = wire.read_varint(encoded, pos)
    except wire.CutShortError:
        return -1, 0, 0
    return tag, length, pos


def decode(request: pb.ModelInferRequest, max_rows: int) -> tuple[InferRequest, bool]:
    """(the decoded request, whether to answer raw bytes), or ``CodecError``."""
    tensors = request.inputs
    if len(tensors) == len(SMALL_BOUNDS) and not request.raw_input_contents:
        small = _small(request, tensors, max_rows)
        if small is not None:
            return small, False
    raw = list(request.raw_input_contents)  # one copy of each blob, read in place from here
    if raw and len(raw) != len(tensors):
        raise CodecError(
            f"raw_input_contents has {len(raw)} entries for {len(tensors)} inputs; send one per input"
        )
    given = parameters(request.parameters) if len(request.parameters) else {}
    binary_output, level, explain = codec.read_parameters(given)
    inputs = Inputs(len(tensors), max_rows)
    for i, tensor in enumerate(tensors):
        values: Callable[[int, str], np.ndarray]
        if raw:
            if tensor.HasField("contents"):
                raise CodecError(
                    f"input {tensor.name!r} has contents as well as raw_input_contents; send one"
                )
            values = partial(_raw, memoryview(raw[i]), tensor.name)
        else:
            values = partial(_contents, tensor)
        inputs.add(tensor.name, tensor.datatype, list(tensor.shape), values)
    wanted = (
        [{"name": o.name, "parameters": parameters(o.parameters)} for o in request.outputs]
        if len(request.outputs)
        else None
    )
    outputs, explained = codec.chosen_outputs(wanted, explain, binary_output)
    decoded = codec.request_of(request.id or None, inputs.rows(), outputs, level, explained)
    return decoded, bool(raw) or binary_output


def encode(
    request: InferRequest,
    raw: bool,
    outputs: np.ndarray,
    model_name: str,
    model_version: str,
    bounds: dict[str, np.ndarray] | None = None,
    extrapolated: np.ndarray | None = None,
    explanation: tuple[np.ndarray, np.ndarray] | None = None,
) -> pb.ModelInferResponse:
    """The answer for the model's n×2 outputs, the requested ``bounds``, ``extrapolated``
    flags and ``explanation`` (tensors of more than one dimension flattened row-major)."""
    response = pb.ModelInferResponse(model_name=model_name, model_version=model_version, id=request.id or "")
    for output, datatype, shape, column in codec.output_columns(
        request, outputs, bounds, extrapolated, explanation
    ):
        tensor = response.outputs.add(name=output.name, datatype=datatype, shape=shape)
        if raw:
            response.raw_output_contents.append(column.tobytes())
        elif len(column) >= PACKED_FROM:  # BOOL's bytes (0, 1) are its varints
            data = column.tobytes()
            tensor.contents.MergeFromString(
                _varint(_NUMBER[datatype] << 3 | _LENGTH_DELIMITED) + _varint(len(data)) + data
            )
        else:
            getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(column.tolist())
    return response


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)

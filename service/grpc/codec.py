"""ModelInferRequest/Response ↔ the protocol's decoded request and the model's outputs (pure).

A gRPC request is rewritten as the document the REST codec reads (``service.v2.codec.
decode_document``): typed ``contents`` become a tensor's ``data``, ``raw_input_contents``
become the binary section with each tensor's ``binary_data_size``. So both transports
accept, refuse and word their errors alike. Answers come back in the form the request
used: raw bytes for raw inputs (or ``binary_data_output``), typed contents otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from service.grpc import inference_pb2 as pb
from service.v2 import codec
from service.v2.codec import CodecError, InferRequest

CONTENTS_FIELD = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "BOOL": "bool_contents",
}
"""Where each datatype's elements are in ``InferTensorContents``."""


def parameter(value: pb.InferParameter) -> Any:
    """An ``InferParameter``'s value (None when none is set)."""
    choice = value.WhichOneof("parameter_choice")
    return None if choice is None else getattr(value, choice)


def parameters(values: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    return {key: parameter(value) for key, value in values.items()}


def _contents(tensor: pb.ModelInferRequest.InferInputTensor) -> list[Any]:
    """The tensor's typed elements, from the field of its datatype."""
    field = CONTENTS_FIELD.get(tensor.datatype)
    if not tensor.HasField("contents"):
        where = f"contents.{field}" if field else "contents"
        raise CodecError(
            f"input {tensor.name!r} has no elements; send them in {where}, or every input's in "
            "raw_input_contents"
        )
    filled = [f.name for f, _ in tensor.contents.ListFields()]
    if field is None:  # the shared decoder names the unsupported datatype
        return list(getattr(tensor.contents, filled[0])) if filled else []
    if filled and filled != [field]:
        raise CodecError(
            f"input {tensor.name!r}: contents of a {tensor.datatype} tensor go in {field}; "
            f"this one has {', '.join(filled)}"
        )
    return list(getattr(tensor.contents, field))


def decode(request: pb.ModelInferRequest, max_rows: int) -> tuple[InferRequest, bool]:
    """(the decoded request, whether to answer raw bytes), or ``CodecError``."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise CodecError(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; send one per input"
        )
    inputs = []
    for i, tensor in enumerate(request.inputs):
        described: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        tensor_parameters = parameters(tensor.parameters)
        if raw:
            if tensor.HasField("contents"):
                raise CodecError(
                    f"input {tensor.name!r} has contents as well as raw_input_contents; send one"
                )
            tensor_parameters["binary_data_size"] = len(raw[i])
        else:
            described["data"] = _contents(tensor)
        if tensor_parameters:
            described["parameters"] = tensor_parameters
        inputs.append(described)
    request_parameters = parameters(request.parameters)
    document: dict[str, Any] = {"inputs": inputs}
    if request_parameters:  # else the REST codec's fast path for small plain requests applies
        document["parameters"] = request_parameters
    if request.id:
        document["id"] = request.id
    if request.outputs:
        document["outputs"] = [
            {"name": output.name, "parameters": parameters(output.parameters)} for output in request.outputs
        ]
    decoded = codec.decode_document(document, memoryview(b"".join(raw)), max_rows)
    return decoded, bool(raw) or bool(request_parameters.get("binary_data_output"))


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
        else:
            getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(column.tolist())
    return response

"""ModelInferRequest/Response as the V2 REST JSON documents of the same call (pure).

What payload logging sends for a gRPC call (``service.grpc.payloads``), so that a consumer
reads gRPC and REST calls alike: the REST request and response bodies, every tensor with its
``data`` (typed ``contents`` and ``raw_*_contents`` alike, flattened row-major as the
protocol's JSON has them). ``google.protobuf.json_format`` writes another shape (``contents``,
base64 raw bytes, int64 as strings). A tensor whose raw bytes do not fit its datatype (the
server refuses such a request) keeps only their size, as ``binary_data_size``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from service.grpc import inference_pb2 as pb
from service.grpc.codec import parameters

DTYPES = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
"""The protocol's datatypes as numpy reads their raw little-endian bytes."""

Tensor = pb.ModelInferRequest.InferInputTensor | pb.ModelInferResponse.InferOutputTensor


def _tensor(tensor: Tensor, raw: bytes | None) -> dict[str, Any]:
    described: dict[str, Any] = {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": list(tensor.shape),
    }
    tensor_parameters = parameters(tensor.parameters)
    dtype = DTYPES.get(tensor.datatype)
    if raw is not None:
        if dtype is not None and len(raw) % dtype.itemsize == 0:
            described["data"] = np.frombuffer(raw, dtype)
        else:
            tensor_parameters["binary_data_size"] = len(raw)
    else:
        filled = tensor.contents.ListFields()
        values = filled[0][1] if filled else ()
        if dtype is not None:
            described["data"] = np.asarray(values, dtype)
        else:  # BYTES: strings, as the JSON form has them
            described["data"] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values]
    if tensor_parameters:
        described["parameters"] = tensor_parameters
    return described


def _tensors(tensors: Sequence[Tensor], raw: Sequence[bytes]) -> list[dict[str, Any]]:
    return [_tensor(t, raw[i] if i < len(raw) else None) for i, t in enumerate(tensors)]


def request_document(request: pb.ModelInferRequest) -> dict[str, Any]:
    """The V2 REST request body of ``request`` (its model and version are the REST path's)."""
    document: dict[str, Any] = {}
    if request.id:
        document["id"] = request.id
    if request.parameters:
        document["parameters"] = parameters(request.parameters)
    document["inputs"] = _tensors(request.inputs, request.raw_input_contents)
    if request.outputs:
        document["outputs"] = [
            {"name": o.name, **({"parameters": parameters(o.parameters)} if o.parameters else {})}
            for o in request.outputs
        ]
    return document


def response_document(response: pb.ModelInferResponse) -> dict[str, Any]:
    """The V2 REST response body of ``response``."""
    document: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = parameters(response.parameters)
    document["outputs"] = _tensors(response.outputs, response.raw_output_contents)
    return document


def rest_path(request: pb.ModelInferRequest) -> str:
    """The V2 REST path of the same call."""
    version = f"/versions/{request.model_version}" if request.model_version else ""
    return f"/v2/models/{request.model_name}{version}/infer"


def dumps(document: dict[str, Any]) -> bytes:
    """JSON, numpy arrays written straight (float32 in its shortest exact form, as REST answers)."""
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)

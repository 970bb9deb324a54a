"""ModelInfer requests built from rows, for the tests and the benchmarks that call the
gRPC front end (one FP32 tensor per feature, typed or raw contents)."""

from __future__ import annotations

import numpy as np

from service.grpc import inference_pb2 as pb

FEATURES = ("temperature", "rainfall", "humidity")


def infer_request(rows: np.ndarray, raw: bool = False, **extra: object) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="crop_yield", **extra)  # type: ignore[arg-type]
    for j, name in enumerate(FEATURES):
        tensor = request.inputs.add(name=name, datatype="FP32", shape=[len(rows)])
        column = np.ascontiguousarray(rows[:, j], dtype="<f4")
        if raw:
            request.raw_input_contents.append(column.tobytes())
        else:
            tensor.contents.fp32_contents.extend(column.tolist())
    return request

"""The V2 routes as data: path, method, the handler's name, and what documents them.

``service.v2.routes`` serves this table (each ``handler`` names one of its handlers) and
``service.docs.v2_openapi`` describes it, so neither can list a route the other lacks, and
the documentation imports no handler. Errors are documented from ``service.http.errors``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from service.v2 import schemas


@dataclass(frozen=True)
class Operation:
    path: str
    method: str
    handler: str
    summary: str
    response_model: type[BaseModel]
    description: str = ""


MODEL = "/v2/models/{model_name}"
VERSION = "/v2/models/{model_name}/versions/{version}"
INFER_DOC = (
    "Predict apple and orange yields (t/ha) for N rows given as one tensor per feature. "
    "JSON, or the binary tensor extension: the JSON header, then raw little-endian tensor bytes."
)
OPERATIONS: tuple[Operation, ...] = (
    Operation("/v2", "GET", "server_metadata", "Server metadata", schemas.ServerMetadata),
    Operation("/v2/health/live", "GET", "server_live", "Server live", schemas.ServerLive),
    Operation("/v2/health/ready", "GET", "server_ready", "Server ready", schemas.ServerReady),
    Operation(MODEL, "GET", "model_metadata", "Model metadata", schemas.ModelMetadata),
    Operation(VERSION, "GET", "model_metadata", "Model metadata (version)", schemas.ModelMetadata),
    Operation(f"{MODEL}/ready", "GET", "model_ready", "Model ready", schemas.ModelReady),
    Operation(f"{VERSION}/ready", "GET", "model_ready", "Model ready (version)", schemas.ModelReady),
    Operation(f"{MODEL}/infer", "POST", "infer", "Inference", schemas.InferenceResponse, INFER_DOC),
    Operation(
        f"{VERSION}/infer", "POST", "infer", "Inference (version)", schemas.InferenceResponse, INFER_DOC
    ),
)

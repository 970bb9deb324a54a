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
    request_model: type[BaseModel] | None = None
    """A JSON body other than inference's (the repository calls)."""


MODEL = "/v2/models/{model_name}"
VERSION = "/v2/models/{model_name}/versions/{version}"
INFER_DOC = (
    "Predict apple and orange yields (t/ha) for N rows given as one tensor per feature. "
    "JSON, or the binary tensor extension: the JSON header, then raw little-endian tensor bytes."
)
CONFIG_DOC = (
    "Triton's model-configuration extension: the model as a Triton model configuration (inputs and "
    "outputs with data_type and dims, max_batch_size, dynamic batching, instance group), what "
    "perf_analyzer and model_analyzer read first."
)
STATS_DOC = (
    "Triton's statistics extension: per served version, counts and cumulative nanoseconds of "
    "inference requests (success, fail, queue, compute_input, compute_infer, compute_output), "
    "rows and model calls, and the last inference (ms since the epoch), summed over the workers."
)
OPERATIONS: tuple[Operation, ...] = (
    Operation("/v2", "GET", "server_metadata", "Server metadata", schemas.ServerMetadata),
    Operation("/v2/health/live", "GET", "server_live", "Server live", schemas.ServerLive),
    Operation("/v2/health/ready", "GET", "server_ready", "Server ready", schemas.ServerReady),
    Operation("/v2/models/stats", "GET", "all_statistics", "Statistics", schemas.Statistics, STATS_DOC),
    Operation(MODEL, "GET", "model_metadata", "Model metadata", schemas.ModelMetadata),
    Operation(VERSION, "GET", "model_metadata", "Model metadata (version)", schemas.ModelMetadata),
    Operation(
        f"{MODEL}/config", "GET", "model_config", "Model configuration", schemas.ModelConfig, CONFIG_DOC
    ),
    Operation(
        f"{VERSION}/config",
        "GET",
        "model_config",
        "Model configuration (version)",
        schemas.ModelConfig,
        CONFIG_DOC,
    ),
    Operation(f"{MODEL}/stats", "GET", "model_statistics", "Model statistics", schemas.Statistics, STATS_DOC),
    Operation(
        f"{VERSION}/stats",
        "GET",
        "model_statistics",
        "Model statistics (version)",
        schemas.Statistics,
        STATS_DOC,
    ),
    Operation(f"{MODEL}/ready", "GET", "model_ready", "Model ready", schemas.ModelReady),
    Operation(f"{VERSION}/ready", "GET", "model_ready", "Model ready (version)", schemas.ModelReady),
    Operation(f"{MODEL}/infer", "POST", "infer", "Inference", schemas.InferenceResponse, INFER_DOC),
    Operation(
        f"{VERSION}/infer", "POST", "infer", "Inference (version)", schemas.InferenceResponse, INFER_DOC
    ),
    Operation(
        "/v2/repository/index",
        "POST",
        "repository_index",
        "Repository index",
        schemas.RepositoryIndex,
        "Every version of the model in the model store: READY when served (the default marked), "
        "else UNAVAILABLE with the reason.",
        schemas.RepositoryIndexRequest,
    ),
    *(
        Operation(
            f"/v2/repository/models/{{model_name}}/{action}",
            "POST",
            f"repository_{action}",
            summary,
            schemas.RepositoryChange,
            f"{doc} Needs CROP_YIELD_MODEL_CONTROL=explicit; every worker serves the new set when it "
            "answers (503 if some do not within 10 s: the change is recorded and they follow).",
            schemas.RepositoryModelRequest,
        )
        for action, summary, doc in (
            (
                "load",
                "Load a version",
                "Serve parameters.version beside the others (without it: what the version policy "
                "selects), after loading, checking and warming it; a failed load changes nothing.",
            ),
            (
                "unload",
                "Unload a version",
                "Stop serving parameters.version once its calls in flight finish; refused for the default.",
            ),
            (
                "default",
                "Set the default version",
                "Make the served parameters.version answer calls that name none "
                "(rollback: the previous one).",
            ),
        )
    ),
)

"""The Open Inference Protocol's JSON objects for this model, as pydantic models.

They document the V2 routes in ``/docs.json`` (the request body is decoded by
``service.v2.codec``, which must accept exactly what is documented here: a test holds the
two together). Names and shapes follow the protocol's REST specification.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from contract import FEATURES, TARGETS

FeatureName = Literal["temperature", "rainfall", "humidity"]
OutputName = Literal[
    "apples",
    "oranges",
    "apples_lower",
    "apples_upper",
    "oranges_lower",
    "oranges_upper",
    "extrapolated",
    "contributions",
    "base_values",
]
"""The predictions and, asked for by name, the bounds of their prediction intervals, the
flag for rows with inputs outside the training range and the predictions' explanation."""
Datatype = Literal["FP32", "FP64", "INT32", "INT64"]

EXAMPLE_REQUEST: dict[str, Any] = {
    "id": "region-42",
    "inputs": [
        {"name": "temperature", "shape": [2], "datatype": "FP32", "data": [73.0, 91.0]},
        {"name": "rainfall", "shape": [2], "datatype": "FP32", "data": [67.0, 88.0]},
        {"name": "humidity", "shape": [2], "datatype": "FP32", "data": [43.0, 64.0]},
    ],
    "outputs": [{"name": "apples"}, {"name": "oranges"}],
}


class TensorMetadata(BaseModel):
    """Name, datatype and shape of one input or output tensor (-1: any number of rows)."""

    name: str = Field(description="Tensor name", json_schema_extra={"example": "temperature"})
    datatype: str = Field(description="Element datatype", json_schema_extra={"example": "FP32"})
    shape: list[int] = Field(
        description="Shape; -1 is a variable dimension", json_schema_extra={"example": [-1]}
    )


class ServerMetadata(BaseModel):
    """``GET /v2``: what this server is and which protocol extensions it supports."""

    name: str = Field(description="Server name", json_schema_extra={"example": "crop-yield-service"})
    version: str = Field(description="Server (service) version", json_schema_extra={"example": "0.1.0"})
    extensions: list[str] = Field(
        description="Supported protocol extensions", json_schema_extra={"example": ["binary_tensor_data"]}
    )


class ServerLive(BaseModel):
    live: bool = Field(description="The server process answers requests")


class ServerReady(BaseModel):
    ready: bool = Field(description="The model is loaded, warmed up and accepting inference requests")


class ModelReady(BaseModel):
    name: str = Field(description="Model name", json_schema_extra={"example": "crop_yield"})
    ready: bool = Field(description="The model accepts inference requests")


class ModelMetadata(BaseModel):
    """``GET /v2/models/{model_name}``: the served model's signature."""

    name: str = Field(description="Model name (the model-store entry's name)")
    versions: list[str] = Field(description="The served model-store versions, the default first")
    platform: str = Field(description="Framework the model runs on")
    inputs: list[TensorMetadata] = Field(description="One FP32 tensor of shape [N] per feature")
    outputs: list[TensorMetadata] = Field(description="One FP32 tensor of shape [N] per target")


_FEATURE_LIST = ", ".join(f"{c.name} ({c.unit}, {c.minimum:g} to {c.maximum:g})" for c in FEATURES)
_TARGET_LIST = ", ".join(f"{c.name} ({c.unit})" for c in TARGETS)


class InputParameters(BaseModel):
    binary_data_size: int | None = Field(
        None,
        ge=0,
        description="Binary tensor extension: the tensor's bytes follow the JSON header "
        "(little-endian, row-major); give the header's length in Inference-Header-Content-Length",
    )


class RequestInput(BaseModel):
    """One input tensor: all rows of one feature."""

    name: FeatureName = Field(description=f"Feature: {_FEATURE_LIST}")
    shape: list[int] = Field(
        min_length=1,
        max_length=2,
        description="[N] or [N, 1]: N rows, the same N for every input",
        json_schema_extra={"items": {"type": "integer", "minimum": 1}, "example": [2]},
    )
    datatype: Datatype = Field(description="FP32; FP64, INT32 and INT64 are converted to FP32")
    data: list[float] | list[list[float]] | None = Field(
        None,
        description="N finite numbers, flat or nested row-major; omit when sent as binary data",
        json_schema_extra={"example": [73.0, 91.0]},
    )
    parameters: InputParameters | None = None


class OutputParameters(BaseModel):
    binary_data: bool | None = Field(None, description="Return this output as binary data")


class RequestOutput(BaseModel):
    name: OutputName = Field(
        description=f"Target: {_TARGET_LIST}; or a bound of its prediction interval, "
        "<target>_lower or <target>_upper (t/ha, at parameters.interval); or extrapolated "
        "(BOOL per row: an input lies outside the training range); or the explanation "
        "(as parameters.explain): contributions, FP32 [N, 2, 3], each feature's contribution to "
        "each target's prediction (t/ha; targets apples, oranges; features temperature, rainfall, "
        "humidity), and base_values, FP32 [2], each target's prediction at the training means"
    )
    parameters: OutputParameters | None = None


class RequestParameters(BaseModel):
    binary_data_output: bool | None = Field(
        None, description="Return every output as binary data unless the output says otherwise"
    )
    interval: float | None = Field(
        None,
        ge=0.5,
        le=0.999,
        description="Confidence level of the requested interval bounds (default 0.95)",
        json_schema_extra={"example": 0.9},
    )
    explain: bool | None = Field(
        None,
        description="true: also return the outputs contributions [N, 2, 3] and base_values [2], the "
        "exact Shapley values of the linear model (base_values + contributions summed over the "
        "features = the predictions); a model trained before the training means were recorded "
        "refuses with 400",
        json_schema_extra={"example": True},
    )


class InferenceRequest(BaseModel):
    """``POST /v2/models/{model_name}/infer``: one tensor per feature, N rows each."""

    model_config = ConfigDict(json_schema_extra={"example": EXAMPLE_REQUEST})

    id: str | None = Field(None, description="Echoed in the response")
    parameters: RequestParameters | None = None
    inputs: list[RequestInput] = Field(
        min_length=3, max_length=3, description="temperature, rainfall and humidity, in any order"
    )
    outputs: list[RequestOutput] | None = Field(
        None, description="Outputs to return (default: apples and oranges)"
    )


class OutputTensorParameters(BaseModel):
    binary_data_size: int | None = Field(None, description="Bytes of this output after the JSON header")


class ResponseOutput(BaseModel):
    """One output tensor: all rows of one target (or of a bound of its interval) in t/ha, the
    rows' extrapolation flags, or the rows' explanation."""

    name: OutputName
    datatype: Literal["FP32", "BOOL"] = Field(description="FP32; BOOL for extrapolated")
    shape: list[int] = Field(description="[N]; [N, 2, 3] for contributions, [2] for base_values")
    data: list[float] | list[bool] | None = Field(
        None,
        description="Predicted yields in t/ha, or flags (absent when binary); a tensor of more than "
        "one dimension flattened row-major",
    )
    parameters: OutputTensorParameters | None = None


class InferenceResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "model_name": "crop_yield",
                "model_version": "43mb76hhhgdsqax4",
                "id": "region-42",
                "outputs": [
                    {"name": "apples", "datatype": "FP32", "shape": [2], "data": [57.32, 80.66]},
                    {"name": "oranges", "datatype": "FP32", "shape": [2], "data": [69.54, 101.48]},
                ],
            }
        }
    )

    model_name: str
    model_version: str
    id: str | None = Field(None, description="The request's id, when it had one")
    outputs: list[ResponseOutput]


class V2Error(BaseModel):
    """Every V2 error: one message naming the tensor and, where it applies, the element."""

    error: str = Field(
        json_schema_extra={"example": "input 'rainfall': element 1 is -3 mm, below the minimum 0 mm"}
    )


class RepositoryIndexRequest(BaseModel):
    """``POST /v2/repository/index``: the body is optional."""

    model_config = ConfigDict(json_schema_extra={"example": {"ready": False}})

    ready: bool = Field(False, description="Only the versions that are served (READY)")


class RepositoryIndexEntry(BaseModel):
    """One version of the model in the model store, or still served after its deletion."""

    name: str = Field(description="Model name", json_schema_extra={"example": "crop_yield"})
    version: str = Field(description="Model-store version", json_schema_extra={"example": "q4v7kzqkbs2hzt6n"})
    state: Literal["READY", "UNAVAILABLE", "UNLOADING"] = Field(
        description="READY: served; UNAVAILABLE: not served (reason says why); "
        "UNLOADING: its calls in flight finish"
    )
    reason: str = Field(
        description="'default' for the default version; why a version is not served",
        json_schema_extra={"example": "default"},
    )
    default: bool = Field(False, description="It answers calls that name no version")


class RepositoryParameters(BaseModel):
    version: str | int | None = Field(
        None,
        description="The model-store version (load: without it, every version the version policy selects)",
        json_schema_extra={"example": "q4v7kzqkbs2hzt6n"},
    )
    config: str | None = Field(
        None,
        description="tritonclient's load_model(config=...): a model configuration as JSON, whose "
        'version_policy {"specific": {"versions": [V]}} names the version',
    )


class RepositoryModelRequest(BaseModel):
    """``POST /v2/repository/models/{model_name}/load|unload|default``. The version may also
    come in the ``X-Model-Version`` header (tritonclient's ``headers=``)."""

    model_config = ConfigDict(json_schema_extra={"example": {"parameters": {"version": "q4v7kzqkbs2hzt6n"}}})

    parameters: RepositoryParameters = Field(default_factory=RepositoryParameters)


class RepositoryChange(BaseModel):
    """What every worker serves once the call has answered."""

    name: str = Field(description="Model name", json_schema_extra={"example": "crop_yield"})
    versions: list[str] = Field(description="The served versions, the default first")
    default: str = Field(description="The version answering calls that name none")


class RepositoryIndex(RootModel[list[RepositoryIndexEntry]]):
    """``POST /v2/repository/index``: newest first."""


class ModelConfig(BaseModel):
    """``GET .../config``: the served model as a Triton model configuration (Triton's
    model-configuration extension; field names and meanings are Triton's ``ModelConfig``)."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="Model name", json_schema_extra={"example": "crop_yield"})
    platform: str = Field(description="Triton's platform name for the model's framework")
    backend: str = Field(description="Triton's backend name for the model's framework")
    max_batch_size: int = Field(
        description="Most rows a call may carry; above 0, dims leave out the batch dimension",
        json_schema_extra={"example": 1_000_000},
    )
    input: list[dict[str, Any]] = Field(description="The inputs: name, data_type, format, dims")
    output: list[dict[str, Any]] = Field(description="The outputs: name, data_type, dims")
    instance_group: list[dict[str, Any]] = Field(
        description="Where the model runs (kind) and in how many workers"
    )
    dynamic_batching: dict[str, Any] | None = Field(
        None, description="Present when calls are batched: the longest a row waits, in microseconds"
    )
    parameters: dict[str, dict[str, str]] = Field(
        description="model_tag (this version's store tag), default_version, batching (how calls merge)"
    )


class Statistics(BaseModel):
    """``GET .../stats``: Triton's statistics extension (``model_stats``: name, version,
    last_inference, inference_count, execution_count, inference_stats of {count, ns} per stage)."""

    model_stats: list[dict[str, Any]] = Field(description="One entry per served version asked for")

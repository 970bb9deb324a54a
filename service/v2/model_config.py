"""Triton's model-configuration extension: the served model described as Triton describes
a model (``GET /v2/models/{m}[/versions/{v}]/config``, gRPC ``ModelConfig``).

Load and profiling tools built for Triton (perf_analyzer, model_analyzer) read it before
anything else, with the model metadata. Triton's shapes are ``[batch] + dims`` when
``max_batch_size`` is above 0; this model's tensors are ``[N]``, the rows being the model's
own first dimension, which Triton writes ``max_batch_size: 0`` with ``dims: [-1]``: the
pair that agrees with the V2 metadata's ``shape: [-1]`` (perf_analyzer checks one against
the other). Triton allows ``dynamic_batching`` only with ``max_batch_size`` above 0, so how
calls are merged is in ``parameters.batching``. The JSON is Triton's (its field names,
numbers as numbers); the gRPC message is built from the same dict.
"""

from __future__ import annotations

from typing import Any

from contract import FEATURE_NAMES, WEIGHTS_FILE
from service.inference.serving import Serving
from service.v2 import codec

PLATFORM = "pytorch_libtorch"
BACKEND = "pytorch"
TRITON_TYPES = {"FP32": "TYPE_FP32", "BOOL": "TYPE_BOOL"}


def model_config(name: str, tag: str, default: str, serving: Serving) -> dict[str, Any]:
    """The configuration of the version stored as ``tag`` (``default``: the version calls
    that name none get)."""
    instance: dict[str, Any] = {
        "name": name,
        "kind": "KIND_CPU" if serving.gpu is None else "KIND_GPU",
        "count": serving.workers,
    }
    if serving.gpu is not None:
        instance["gpus"] = [serving.gpu]
    config: dict[str, Any] = {
        "name": name,
        "platform": PLATFORM,
        "backend": BACKEND,
        "max_batch_size": 0,
        "input": [
            {
                "name": feature,
                "data_type": "TYPE_FP32",
                "format": "FORMAT_NONE",
                "dims": [-1],
                "is_shape_tensor": False,
                "allow_ragged_batch": False,
                "optional": False,
            }
            for feature in FEATURE_NAMES
        ],
        "output": [
            {
                "name": output,
                "data_type": TRITON_TYPES[codec.OUTPUT_DATATYPES[output]],
                "dims": [-1],
                "label_filename": "",
                "is_shape_tensor": False,
            }
            for output in codec.OUTPUT_NAMES
        ],
        "instance_group": [instance],
        "default_model_filename": WEIGHTS_FILE,
        "parameters": {
            "model_tag": {"string_value": tag},
            "default_version": {"string_value": default},
            "batching": {"string_value": _batching(serving)},
            "max_rows_per_call": {"string_value": str(serving.max_rows)},
        },
        "model_transaction_policy": {"decoupled": False},
    }
    return config


def _batching(serving: Serving) -> str:
    if not serving.batching:
        return "off: every call is its own model call"
    return (
        f"adaptive (BentoML's dispatcher): /predict and V2 REST calls of up to {serving.max_batched_rows} "
        f"rows share model calls, a row waiting at most {serving.max_latency_ms} ms; gRPC calls and "
        "larger ones go to the model directly"
    )

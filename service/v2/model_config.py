"""Triton's model-configuration extension: the served model described as Triton describes
a model (``GET /v2/models/{m}[/versions/{v}]/config``, gRPC ``ModelConfig``).

Load and profiling tools built for Triton (perf_analyzer, model_analyzer) read it before
anything else: the inputs and outputs with their datatypes and dims, ``max_batch_size``
(from which they shape their requests: with it above 0, ``dims`` leave out the batch
dimension, so each feature is a ``[batch, 1]`` tensor, a shape the codec accepts), and
whether requests are batched dynamically. The JSON is Triton's (its field names, numbers
as numbers); the gRPC message is built from the same dict.
"""

from __future__ import annotations

from typing import Any

from contract import FEATURE_NAMES, WEIGHTS_FILE
from service.inference.serving import Serving
from service.v2 import codec

PLATFORM = "pytorch_libtorch"
BACKEND = "pytorch"
INT32_MAX = 2**31 - 1
TRITON_TYPES = {"FP32": "TYPE_FP32", "BOOL": "TYPE_BOOL"}


def model_config(name: str, version: str, tag: str, default: str, serving: Serving) -> dict[str, Any]:
    """The configuration of ``version`` (``default``: the version calls get without one)."""
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
        "max_batch_size": min(serving.max_rows, INT32_MAX),
        "input": [
            {
                "name": feature,
                "data_type": "TYPE_FP32",
                "format": "FORMAT_NONE",
                "dims": [1],
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
                "dims": [1],
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
        },
        "model_transaction_policy": {"decoupled": False},
    }
    if serving.batching:
        config["dynamic_batching"] = {
            "preferred_batch_size": [],
            "max_queue_delay_microseconds": serving.max_latency_ms * 1000,
            "preserve_ordering": False,
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

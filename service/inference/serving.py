"""How a worker serves calls, as the data plane reports it to the front ends (Triton's model
configuration, ``service.v2.model_config``, describes it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Serving:
    """How the worker serves calls: what the configuration reports besides the model."""

    max_rows: int
    """Rows one call may carry (``CROP_YIELD_MAX_BULK_ROWS``)."""
    batching: bool
    max_batched_rows: int
    """Calls up to this many rows share model calls when batching is on."""
    max_latency_ms: int
    workers: int
    gpu: int | None
    """The CUDA device index the model runs on, None on the CPU."""

"""Adaptive batching of /predict rows with BentoML's own dispatcher.

``@bentoml.api(batchable=True)`` puts a ``CorkDispatcher`` in front of a method; an
endpoint that wants a batched helper is meant to call it through ``self.to_async``, which
in BentoML 1.4 is an in-process HTTP round trip per call (a second parse, validation and
middleware pass) whose client session is recycled every 100 calls, breaking calls in
flight under sustained load (see docs/bentoml-1.4.md). So the endpoint awaits the same
dispatcher directly: same adaptive algorithm, same max batch size and latency semantics,
no extra hop. The dispatcher is a private class: it comes from ``service.bentoml_internals``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import NoReturn

import numpy as np

from service.bentoml_internals import CorkDispatcher
from service.inference.errors import OverloadedError

KEPT_BATCHES = 256
"""Batches whose model-call time is kept for their callers to read (Triton's compute_infer)."""


def _overloaded() -> NoReturn:
    raise OverloadedError("rows waited longer than CROP_YIELD_MAX_LATENCY_MS in the batching queue")


class RowBatcher:
    """``await batcher(rows)`` → that caller's own output rows, computed in a merged call."""

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        max_batch_size: int,
        max_latency_ms: int,
        on_model_call: Callable[[int], None] = lambda rows: None,
    ) -> None:
        self._predict = predict
        self._on_model_call = on_model_call
        dispatcher: CorkDispatcher[np.ndarray, np.ndarray] = CorkDispatcher(
            max_latency_in_ms=max_latency_ms,
            max_batch_size=max_batch_size,
            fallback=_overloaded,
            get_batch_size=lambda rows: int(rows.shape[0]),
            batch_dim=(0, 0),
        )
        self._dispatcher = dispatcher
        self._call = dispatcher(self._run)
        self._seconds: dict[int, float] = {}
        """Model-call seconds of the latest batches, by their output array's id."""

    async def _run(self, parts: Sequence[np.ndarray]) -> list[np.ndarray]:
        merged = parts[0] if len(parts) == 1 else np.concatenate(parts)
        started = time.perf_counter()
        outputs = self._predict(merged)
        seconds = time.perf_counter() - started
        self._on_model_call(int(merged.shape[0]))
        bounds = np.cumsum([len(p) for p in parts])[:-1]
        split = np.split(outputs, bounds)  # views: each caller's .base is the batch's array
        self._seconds[id(split[0].base)] = seconds
        if len(self._seconds) > KEPT_BATCHES:
            del self._seconds[next(iter(self._seconds))]
        return split

    def seconds_of(self, outputs: np.ndarray) -> float:
        """How long the model call took that computed ``outputs`` (what a caller got back);
        0 when unknown (a call the dispatcher split over several batches)."""
        return self._seconds.get(id(outputs.base), 0.0)

    async def __call__(self, rows: np.ndarray) -> np.ndarray:
        result = await self._call(rows)
        if result is None:  # the dispatcher's fallback raises; this keeps mypy honest
            _overloaded()
        return result

    def shutdown(self) -> None:
        self._dispatcher.shutdown()

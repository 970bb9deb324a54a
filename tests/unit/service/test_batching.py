"""The row batcher merges concurrent calls and routes each caller its own rows."""

from __future__ import annotations

import asyncio

import numpy as np

from service.inference.batching import RowBatcher


def test_concurrent_callers_get_their_own_rows_from_merged_calls() -> None:
    calls: list[int] = []

    def predict(rows: np.ndarray) -> np.ndarray:
        return rows[:, :2] * 10  # any row-wise function shows whether rows stay matched

    async def scenario() -> list[np.ndarray]:
        batcher = RowBatcher(predict, max_batch_size=1000, max_latency_ms=5000, on_model_call=calls.append)
        inputs = [np.full((1 + i % 4, 3), i, dtype=np.float32) for i in range(100)]
        try:
            outputs = await asyncio.gather(*(batcher(x) for x in inputs))
        finally:
            batcher.shutdown()
        for x, y in zip(inputs, outputs, strict=True):
            np.testing.assert_array_equal(y, x[:, :2] * 10)
        return outputs

    asyncio.run(scenario())
    assert sum(calls) == sum(1 + i % 4 for i in range(100))
    assert len(calls) < 100  # at least some calls were merged


def test_a_request_larger_than_max_batch_size_is_split_and_reassembled() -> None:
    calls: list[int] = []

    async def scenario() -> np.ndarray:
        batcher = RowBatcher(
            lambda r: r[:, :2], max_batch_size=8, max_latency_ms=5000, on_model_call=calls.append
        )
        try:
            return await batcher(np.arange(60, dtype=np.float32).reshape(20, 3))
        finally:
            batcher.shutdown()

    out = asyncio.run(scenario())
    np.testing.assert_array_equal(out, np.arange(60, dtype=np.float32).reshape(20, 3)[:, :2])
    assert max(calls) <= 8

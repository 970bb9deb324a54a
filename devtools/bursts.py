"""Bursts of simultaneous bulk calls, and the memory they leave behind: shared by the burst
benchmark (``benchmarks/burst_bench.py``) and the tests that fire them at a served process.

A burst is ``calls`` simultaneous 1,000,000-row requests, half ``POST /predict_columns``
(JSON, about 24 MB each) and half V2 binary tensors (12 MB each), each on its own connection.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import numpy as np

FEATURES = ("temperature", "rainfall", "humidity")
V2_INFER = "/v2/models/crop_yield/infer"


@dataclass(frozen=True)
class Body:
    path: str
    content: bytes
    headers: dict[str, str]


def bulk_bodies(rows: int = 1_000_000, seed: int = 0) -> tuple[Body, Body]:
    """The same ``rows`` rows as a /predict_columns JSON body and a V2 binary-tensor body.

    Values have two decimals, as measured data does: their JSON is short (about 24 bytes a
    row), so a million rows stay under the 40 MiB body limit."""
    x = np.random.default_rng(seed).uniform([50, 20, 20], [110, 150, 90], size=(rows, 3)).round(2)
    columns = json.dumps({name: x[:, j].tolist() for j, name in enumerate(FEATURES)}).encode()
    tensors = [np.ascontiguousarray(x[:, j], dtype="<f4") for j in range(3)]
    header = json.dumps(
        {
            "inputs": [
                {"name": n, "shape": [rows], "datatype": "FP32", "parameters": {"binary_data_size": t.nbytes}}
                for n, t in zip(FEATURES, tensors, strict=True)
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    binary = header + b"".join(t.tobytes() for t in tensors)
    return (
        Body("/predict_columns", columns, {"content-type": "application/json"}),
        Body(
            V2_INFER,
            binary,
            {"content-type": "application/octet-stream", "inference-header-content-length": str(len(header))},
        ),
    )


@dataclass
class BurstResult:
    statuses: Counter[int] = field(default_factory=Counter)
    retry_after: int = 0  # answers with a Retry-After header
    errors: list[str] = field(default_factory=list)  # transport failures (resets, timeouts)
    peak_mb: float = 0.0
    rest_mb: float = 0.0

    def line(self) -> str:
        codes = ", ".join(f"{n}×{code}" for code, n in sorted(self.statuses.items()))
        extra = f", {len(self.errors)} transport errors" if self.errors else ""
        return f"{codes}{extra}; peak {self.peak_mb:,.0f} MiB, rest {self.rest_mb:,.0f} MiB"


async def _burst(url: str, bodies: tuple[Body, ...], calls: int, timeout: float, result: BurstResult) -> None:
    async def one(body: Body) -> None:
        # One connection per call, as separate clients would: no pool queueing in the client.
        async with httpx.AsyncClient(timeout=timeout) as client:
            try:
                response = await client.post(f"{url}{body.path}", content=body.content, headers=body.headers)
            except httpx.HTTPError as exc:
                result.errors.append(f"{type(exc).__name__}: {exc}")
                return
            result.statuses[response.status_code] += 1
            result.retry_after += "retry-after" in response.headers

    await asyncio.gather(*(one(bodies[i % len(bodies)]) for i in range(calls)))


def fire(
    url: str,
    bodies: tuple[Body, ...],
    rss_mb: Callable[[], float],
    calls: int = 32,
    timeout: float = 120,
    settle_s: float = 3.0,
) -> BurstResult:
    """One burst; the served worker's peak RSS while it ran (sampled every 20 ms) and its
    RSS ``settle_s`` after the last answer."""
    result = BurstResult()
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            result.peak_mb = max(result.peak_mb, rss_mb())
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        asyncio.run(_burst(url, bodies, calls, timeout, result))
    finally:
        done.set()
        sampler.join()
    done.wait(settle_s)
    result.rest_mb = rss_mb()
    return result

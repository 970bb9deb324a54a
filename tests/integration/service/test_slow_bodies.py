"""Slow declared bodies against a served process: connections that declare 40 MiB bodies (over
HTTP, or as gRPC messages) and then trickle them a byte every 2 s hold no memory budget from
an honest 1,000,000-row call (service.http.bodies' module docstring; gRPC reserves only once
grpcio has read a whole message). ``make bench-slow-bodies`` measures the same.

The worker's budget is drawn from a 2 GiB limit: three 40 MiB declarations (400 MiB of
reservations each) fill it, so a server that believed them would keep the honest call
waiting for its whole CROP_YIELD_MEMORY_WAIT, then answer 503.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from devtools import grpc_requests
from devtools.bursts import Body, bulk_bodies
from service.grpc import inference_pb2 as pb
from service.grpc import inference_pb2_grpc as rpc
from service.inference.admission import MemoryBudget
from tests.integration.conftest import Server, serving
from tests.trickle import Tricklers

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = 1_000_000
DECLARED = 40 << 20
"""What each trickling client declares: the body limit, CROP_YIELD_MAX_BODY_BYTES."""
GRPC_DECLARED = DECLARED - (4 << 10)
"""A gRPC message declared just under grpcio's limit on received messages (the body limit)."""
TRICKLERS = 3
EVERY_S = 2.0
"""Seconds between trickled bytes: inside the 5 s inactivity limit (CROP_YIELD_BODY_TIMEOUT)."""
MEMORY_WAIT_S = 15
PROMPT_S = 4.0
"""How much longer than alone an honest call may take beside the trickling clients: a few
seconds on a loaded machine, far below the wait (and 503) they would cause if believed."""


@pytest.fixture(scope="module")
def honest() -> tuple[Body, pb.ModelInferRequest]:
    """A 1,000,000-row /predict_columns body (about 24 MB) and a ModelInfer of the same rows
    as raw contents (12 MB)."""
    columns, _ = bulk_bodies(ROWS)
    rows = np.random.default_rng(1).uniform([50, 20, 20], [110, 150, 90], size=(ROWS, 3)).round(2)
    return columns, grpc_requests.infer_request(rows, raw=True)


@pytest.fixture(scope="module")
def bounded(trained_home: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    settings = {"memory_limit_mb": "2048", "memory_wait": str(MEMORY_WAIT_S)}
    with serving(trained_home, tmp_path_factory.mktemp("slow-bodies"), **settings) as served:
        yield served


def budget_bytes(server: Server) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    found = re.search(r"^crop_yield_memory_budget_bytes(?:\{[^}]*\})? (\S+)$", text, re.MULTILINE)
    assert found, "no crop_yield_memory_budget_bytes in /metrics"
    return float(found.group(1))


def post(server: Server, body: Body) -> tuple[int, float]:
    started = time.monotonic()
    response = httpx.post(f"{server.url}{body.path}", content=body.content, headers=body.headers, timeout=60)
    return response.status_code, time.monotonic() - started


def infer(server: Server, request: pb.ModelInferRequest) -> tuple[int, float]:
    options = [("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}", options=options) as channel:
        started = time.monotonic()
        response = rpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
        took = time.monotonic() - started
    assert [t.name for t in response.outputs][:2] == ["apples", "oranges"]
    return len(response.raw_output_contents[0]) // 4, took


def test_three_connections_declaring_40_mib_hold_nothing_from_an_honest_bulk_call(
    bounded: Server, honest: tuple[Body, pb.ModelInferRequest]
) -> None:
    columns, _ = honest
    budget = budget_bytes(bounded)
    # Believed, the declarations would leave no room for the honest call (it would wait).
    assert TRICKLERS * MemoryBudget.cost_of(DECLARED) + MemoryBudget.cost_of(len(columns.content)) > budget
    status, alone = post(bounded, columns)
    assert status == 200
    with Tricklers(every_s=EVERY_S) as tricklers:
        for _ in range(TRICKLERS):
            tricklers.http(bounded.url, columns.path, DECLARED)
        time.sleep(1.0)  # long enough for their declarations to be reserved, were they believed
        status, beside = post(bounded, columns)
        still_connected = tricklers.answered.count(False)
    print(
        f"honest {ROWS:,}-row call: alone {alone:.2f} s, beside {TRICKLERS} trickling clients {beside:.2f} s"
    )
    assert status == 200
    assert beside < alone + PROMPT_S, f"{beside:.2f} s beside the trickling clients, {alone:.2f} s alone"
    assert still_connected == TRICKLERS, "the trickling clients were cut off: the test proved nothing"


def test_trickling_grpc_messages_hold_nothing_from_honest_bulk_calls(
    bounded: Server, honest: tuple[Body, pb.ModelInferRequest]
) -> None:
    columns, request = honest
    assert request.ByteSize() >= 1 << 20  # budgeted: it reserves its cost once read
    _, grpc_alone = infer(bounded, request)
    _, http_alone = post(bounded, columns)
    with Tricklers(every_s=EVERY_S) as tricklers:
        for _ in range(TRICKLERS):
            tricklers.grpc("127.0.0.1", bounded.grpc_port, GRPC_DECLARED)
        time.sleep(1.0)
        status, http_beside = post(bounded, columns)
        rows, grpc_beside = infer(bounded, request)
        still_connected = tricklers.answered.count(False)
    print(
        f"beside {TRICKLERS} trickling gRPC calls: /predict_columns {http_beside:.2f} s (alone "
        f"{http_alone:.2f} s), ModelInfer {grpc_beside:.2f} s (alone {grpc_alone:.2f} s)"
    )
    assert status == 200
    assert rows == ROWS
    assert http_beside < http_alone + PROMPT_S
    assert grpc_beside < grpc_alone + PROMPT_S
    assert still_connected == TRICKLERS, "the trickling gRPC calls were ended: the test proved nothing"

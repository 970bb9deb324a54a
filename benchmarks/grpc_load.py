"""gRPC load for the service benchmark: single-row ModelInfer under h2load, the same kind of
load wrk puts on the HTTP routes, and one 100,000-row raw-contents call.

h2load (Debian's nghttp2-client) is a C HTTP/2 load generator like wrk, so the two
transports are driven alike (a Python gRPC client would be the bottleneck on a small
machine). It speaks HTTP/2, not gRPC: every call is the same length-prefixed protobuf
message with gRPC's headers, and the answers' gRPC status codes (in trailers, which h2load
does not read) are checked on a counter of the server's own: the service's
crop_yield_grpc_requests_total (``refused_calls``), or another server's (the peers benchmark
reads Triton's statistics).
"""

from __future__ import annotations

import re
import statistics
import struct
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import numpy as np

from devtools.grpc_requests import FEATURES, infer_request
from service.grpc import inference_pb2 as pb
from service.grpc import inference_pb2_grpc as rpc

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


def framed(path: Path, request: pb.ModelInferRequest) -> Path:
    """``request`` as gRPC puts it on the wire (uncompressed flag, big-endian length,
    message): h2load's request body."""
    message = request.SerializeToString()
    path.write_bytes(b"\0" + struct.pack(">I", len(message)) + message)
    return path


def framed_single_row(path: Path, row: dict[str, float]) -> Path:
    """One single-row ModelInfer request to the service (one FP32 tensor per feature), framed."""
    return framed(path, infer_request(np.array([[row[f] for f in FEATURES]]), raw=False))


def refused_calls(url: str) -> float:
    """ModelInfer calls the server answered with any status but OK, so far."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = re.findall(
        r'^crop_yield_grpc_requests_total\{code="(\w+)",method="ModelInfer"\} (\S+)$', text, re.M
    )
    return sum(float(count) for code, count in found if code != "OK")


def run_h2load(
    refused: Callable[[], float] | None,
    grpc_port: int,
    body: Path,
    connections: int,
    duration: int,
    log: Path,
) -> tuple[float, float, float, int]:
    """(calls/s, p50 ms, p99 ms, calls answered with another status than OK) for ``connections``
    callers, one call at a time each (as wrk's connections), after a 3 s warm-up. ``refused``:
    the server's count of calls answered not OK so far, read before and after (e.g.
    ``lambda: refused_calls(url)``; None for a server without: the floor). ``log`` keeps
    h2load's line per measured call (warm-up calls are not in it)."""
    before = refused() if refused else 0.0
    command = [
        "h2load",
        f"-c{connections}",
        "-m1",
        f"-D{duration}",
        "--warm-up-time=3",
        "-d",
        str(body),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        f"--log-file={log}",
        f"http://127.0.0.1:{grpc_port}{MODEL_INFER}",
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)
    done = re.search(r"requests: (\d+) total, \d+ started, (\d+) done", out)
    if rate is None or done is None or done.group(1) != done.group(2):
        raise SystemExit(f"unexpected h2load output:\n{out}")
    failed = int(refused() - before) if refused else 0
    times = sorted(int(line.split("\t")[2]) / 1000 for line in log.open())
    p50, p99 = times[len(times) // 2], times[int(len(times) * 0.99)]
    return float(rate.group(1)), p50, p99, failed


def bulk_raw_rows_per_s(grpc_port: int, rows: np.ndarray) -> float:
    """Rows/s of one ``len(rows)``-row raw-contents ModelInfer call, answered raw (median of
    5 after one warm-up), through grpcio's client."""
    request = infer_request(rows, raw=True)
    options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=options) as channel:
        stub = rpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        times = []
        for _ in range(6):
            started = time.perf_counter()
            answer = stub.ModelInfer(request, timeout=60)
            times.append(time.perf_counter() - started)
            if len(answer.raw_output_contents[0]) != 4 * len(rows):
                raise SystemExit("the bulk gRPC call did not answer every row")
    return len(rows) / statistics.median(times[1:])

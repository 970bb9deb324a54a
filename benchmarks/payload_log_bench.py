"""Payload logging's cost: on the hot path (µs added per call) and in the sender (CPU µs per
event delivered), in process; with ``--served``, single-row /predict throughput too.

    .venv/bin/python -m benchmarks.payload_log_bench [--calls 50000] [--rounds 5] [--served]

Hot path: one request at a time through ``service.http.payloads.PayloadLogging`` around an
app that reads the body and answers a ready single-row response, and through
``service.grpc.payloads.payload_logged`` around a ModelInfer that answers a ready message,
against the same app without the layer (logging off: the layer is not installed at all).
Rounds alternate the variants; the medians are compared. At 100% the queue's bounds are
raised so that nothing is dropped (a dropped event costs less than a queued one).

Sender: the CPU time this process spends delivering events (rendering, the POST,
reading the answer) to a sink in another process, per event: what the worker's event loop
spends between calls.

``--served``: three served processes (logging off, 10%, 100%; one worker; a sink process
answering 200), single-row /predict under wrk, measured alternately; compare ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from devtools.grpc_requests import infer_request
from devtools.served import free_port, launch, stop, wait_ready
from service.grpc import codec as grpc_codec
from service.grpc.layers import Sized
from service.grpc.payloads import GrpcCall, payload_logged
from service.http.asgi import read_body
from service.http.payloads import HttpCall, PayloadLogging
from service.observability import context
from service.observability.delivery import WINDOW
from service.observability.payloads import Identity, PayloadLog

IDENTITY = Identity(source="http://bench:3000/", service_name="crop-yield", endpoint="default")
BODY = b'{"inputs": [{"temperature": 73, "rainfall": 67, "humidity": 43}]}'
ANSWER = (
    b'{"predictions":[{"apples":57.32,"oranges":69.54,"extrapolated":false,'
    b'"outside_training_range":[]}],"model":"crop_yield:3hmxvlhhhongmax4"}'
)
SCOPE: dict[str, Any] = {
    "type": "http",
    "method": "POST",
    "path": "/predict",
    "headers": [
        (b"host", b"127.0.0.1:3000"),
        (b"user-agent", b"wrk"),
        (b"accept", b"*/*"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
        (b"x-request-id", b"0" * 32),
    ],
}
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"x-model-version", b"3hmxvlhhhongmax4")],
}
SINK = textwrap.dedent(
    """
    import sys
    from aiohttp import web

    async def event(request):
        await request.read()
        return web.Response()

    app = web.Application()
    app.router.add_post("/", event)
    app.router.add_get("/", event)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
    """
)


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": BODY, "more_body": False}


async def send(message: Any) -> None:
    pass


async def app(scope: Any, receive: Any, send: Any) -> None:
    await read_body(receive)
    await send(START)
    await send({"type": "http.response.body", "body": ANSWER})


def log_at(rate: float, url: str = "http://127.0.0.1:9/") -> PayloadLog:
    return PayloadLog([url], IDENTITY, rate=rate, max_events=1 << 40, max_bytes=1 << 50)


class Context:
    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-request-id", "0" * 32), ("user-agent", "grpc-python"))


def grpc_messages() -> tuple[Any, Any]:
    request = infer_request(np.array([[73.0, 67.0, 43.0]], np.float32))
    decoded, raw = grpc_codec.decode(request, 10)
    answer = grpc_codec.encode(decoded, raw, np.array([[57.32, 69.54]], np.float32), "crop_yield", "v1")
    return request, answer


async def per_call_us(asgi: Any, ids: list[str]) -> float:
    started = time.perf_counter()
    for request_id in ids:
        context.REQUEST_ID.set(request_id)
        await asgi(SCOPE, receive, send)
    return (time.perf_counter() - started) / len(ids) * 1e6


async def grpc_per_call_us(behaviour: Any, request: Any, ids: list[str]) -> float:
    call_context = Context()
    started = time.perf_counter()
    for request_id in ids:
        context.REQUEST_ID.set(request_id)
        await behaviour(request, call_context)
    return (time.perf_counter() - started) / len(ids) * 1e6


def hot_path(calls: int, rounds: int) -> None:
    ids = [uuid.uuid4().hex for _ in range(calls)]
    request, answer = grpc_messages()
    received = Sized(request, request.ByteSize())  # as admission hands it over

    async def model_infer(request: Any, call_context: Any) -> Any:
        return answer

    rates = {"off (not installed)": None, "installed, 0%": 0.0, "10%": 0.1, "100%": 1.0}
    http: dict[str, list[float]] = {name: [] for name in rates}
    grpc: dict[str, list[float]] = {name: [] for name in rates}

    async def measure() -> None:
        for _ in range(rounds):
            for name, rate in rates.items():
                log = log_at(rate or 0.0)
                http[name].append(await per_call_us(app if rate is None else PayloadLogging(app, log), ids))
                if rate is None:
                    grpc[name].append(await grpc_per_call_us(model_infer, request, ids))
                else:
                    grpc[name].append(await grpc_per_call_us(payload_logged(model_infer, log), received, ids))

    asyncio.run(measure())
    print(f"hot path, {calls:,} calls × {rounds} rounds (median µs per call; added = minus off)\n")
    print("| logging | HTTP /predict µs | added | gRPC ModelInfer µs | added |")
    print("|---|---|---|---|---|")
    http_off, grpc_off = (
        statistics.median(http["off (not installed)"]),
        statistics.median(grpc["off (not installed)"]),
    )
    for name in rates:
        h, g = statistics.median(http[name]), statistics.median(grpc[name])
        print(f"| {name} | {h:.2f} | {h - http_off:+.2f} | {g:.2f} | {g - grpc_off:+.2f} |")


def sender(events: int) -> None:
    port = free_port()
    sink = launch([sys.executable, "-c", SINK, str(port)], dict(os.environ), None)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_ready(sink, url, path="")
        request, answer = grpc_messages()

        def http_call(i: int) -> HttpCall:
            context.REQUEST_ID.set(f"r-{i}")
            return HttpCall("json-api", SCOPE, time.time(), BODY, 200, START["headers"], [ANSWER])

        def grpc_call(i: int) -> GrpcCall:
            context.REQUEST_ID.set(f"g-{i}")
            size = request.ByteSize()
            return GrpcCall(request, size, Context().invocation_metadata(), time.time(), answer, _ok(), None)

        print(f"\nsender: {events:,} calls (two events each) to a sink process, at most {WINDOW} in flight\n")
        print("| calls | events/s | CPU µs per event (this process) |")
        print("|---|---|---|")
        for name, make in (("HTTP /predict", http_call), ("gRPC ModelInfer (V2 JSON)", grpc_call)):
            calls = [make(i) for i in range(events)]

            async def deliver(calls: list[Any] = calls) -> tuple[float, float]:
                log = log_at(1.0, url)
                log.start()
                cpu, wall = time.process_time(), time.perf_counter()
                for call in calls:
                    log.record(call)
                await log.close(timeout=120)
                return time.process_time() - cpu, time.perf_counter() - wall

            cpu, wall = asyncio.run(deliver())
            print(f"| {name} | {2 * events / wall:,.0f} | {cpu / (2 * events) * 1e6:.0f} |")
    finally:
        stop(sink)


def _ok() -> Any:
    import grpc

    return grpc.StatusCode.OK


def served_throughput(rounds: int, duration: int) -> None:
    from benchmarks.service_bench import ROOT, SINGLE, run_wrk, start, wrk_script

    with tempfile.TemporaryDirectory(prefix="payload-bench-") as tmp:
        tmpdir = Path(tmp)
        store = tmpdir / "store"
        env = {**os.environ, "BENTOML_HOME": str(store), "BENTOML_DO_NOT_TRACK": "true"}
        subprocess.run([sys.executable, "-m", "training", "--quiet"], cwd=ROOT, env=env, check=True)
        script = wrk_script(tmpdir / "single.lua", SINGLE)
        sink_port = free_port()
        sink = launch([sys.executable, "-c", SINK, str(sink_port)], dict(os.environ), None)
        wait_ready(sink, f"http://127.0.0.1:{sink_port}/", path="")
        servers = {}
        try:
            for name, sample in (("off", None), ("10%", "0.1"), ("100%", "1")):
                home = tmpdir / f"home-{name}"
                home.mkdir()
                (home / "models").symlink_to(store / "models")
                port = free_port()
                server_env = {
                    **env,
                    "BENTOML_HOME": str(home),
                    "CROP_YIELD_PORT": str(port),
                    "CROP_YIELD_HOST": "127.0.0.1",
                    "CROP_YIELD_GRPC_PORT": str(free_port()),
                }
                if sample is not None:
                    server_env["CROP_YIELD_PAYLOAD_LOG_URL"] = f"http://127.0.0.1:{sink_port}/"
                    server_env["CROP_YIELD_PAYLOAD_LOG_SAMPLE"] = sample
                servers[name] = start(name, [sys.executable, "-m", "service"], server_env, port)
            results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in servers}
            for _ in range(rounds):
                for name, server in servers.items():
                    cpu = server_cpu_s(server.process)
                    result = run_wrk(server.url, script, 32, duration)
                    cpu = server_cpu_s(server.process) - cpu  # warm-up and run: 3 s + duration
                    calls = result.rps * duration * (duration + 3) / duration
                    results[name].append((result.rps, result.p99_ms, cpu / calls * 1e6))
            outcomes = {
                name: re.findall(
                    r'crop_yield_payload_events_total\{outcome="(\w+)"\} (\S+)', metrics_of(server.url)
                )
                for name, server in servers.items()
            }
        finally:
            for server in servers.values():
                stop(server.process)
            stop(sink)
    print(f"\nserved: single-row /predict, wrk -c32 -d{duration}s, {rounds} rounds alternating, one worker")
    print("(CPU: the server's processes, per call; the sink runs on the same machine)\n")
    print("| logging | req/s | vs off | p99 | CPU µs per call | events |")
    print("|---|---|---|---|---|---|")
    off = statistics.median(r for r, _, _ in results["off"])
    for name, runs in results.items():
        rps = statistics.median(r for r, _, _ in runs)
        p99 = statistics.median(p for _, p, _ in runs)
        cpu = statistics.median(c for _, _, c in runs)
        events = ", ".join(f"{o} {float(v):,.0f}" for o, v in outcomes[name]) or "-"
        print(f"| {name} | {rps:,.0f} | {rps / off:.2f}x | {p99:.1f} ms | {cpu:.0f} | {events} |")


def server_cpu_s(process: subprocess.Popen[bytes]) -> float:
    """CPU seconds used so far by a served process and its children (the worker)."""
    import psutil

    parent = psutil.Process(process.pid)
    return sum(sum(p.cpu_times()[:2]) for p in [parent, *parent.children(recursive=True)])


def metrics_of(url: str) -> str:
    import httpx

    return httpx.get(f"{url}/metrics").text


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=50_000, help="calls per variant and round (hot path)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=5_000, help="calls delivered by the sender")
    parser.add_argument("--served", action="store_true", help="also wrk against served processes")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (--served)")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}\n")
    hot_path(args.calls, args.rounds)
    sender(args.events)
    if args.served:
        served_throughput(3, args.duration)


if __name__ == "__main__":
    main()

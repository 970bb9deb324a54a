"""Service benchmark: our BentoML service against a bare FastAPI baseline, in one run.

    .venv/bin/python benchmarks/service_bench.py [--duration 10] [--connections 32]

Both servers get one worker process and load from ``wrk`` (Debian package): single-row
and 100-row ``POST /predict``, then one 100,000-row bulk request (median of 5). Start-up
time (process start to ``/readyz`` 200) and worker resident memory are measured for the
service with batching on and off. Targets (issue 3): single-row throughput >= 0.5x the
baseline's, p99 at 32 connections <= 3x the baseline's with no non-2xx, bulk >= 2,000,000
rows/s, ready in < 10 s, worker RSS < 500 MB.

The Open Inference Protocol (issue 8), on the same service processes: single-row V2 JSON
infer under the same wrk load (target: at least /predict's rate), and 100,000 rows as V2
JSON (target >= 3,000,000 rows/s) and as binary tensors (target >= 3x /predict_columns).
Over gRPC (issue 20; ``benchmarks/grpc_load.py``): single-row ModelInfer under h2load with
as many connections as wrk's (target: at least the REST V2 route's rate), and 100,000 rows
as raw contents (target: at least REST V2 binary's rows/s).

The transports' floors (issue 29; ``benchmarks/floors.py``), first, under the same loads: a
raw ASGI app answering a constant under the same uvicorn, and a bare grpc.aio server
answering ModelInfer with a constant. Goals: single-row /predict and V2 JSON >= 0.3x the
raw-ASGI floor, single-row gRPC >= 0.8x the grpc.aio floor.
Compare ratios: absolute numbers drift.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import grpc
import httpx
import numpy as np

from benchmarks.grpc_load import bulk_raw_rows_per_s, framed_single_row, refused_calls, run_h2load
from devtools.served import free_port, launch, stop, wait_ready, worker_rss_mb

ROOT = Path(__file__).resolve().parents[1]
SINGLE = {"inputs": [{"temperature": 73.0, "rainfall": 67.0, "humidity": 43.0}]}
FEATURES = ("temperature", "rainfall", "humidity")
V2_SINGLE = {
    "inputs": [
        {"name": name, "shape": [1], "datatype": "FP32", "data": [value]}
        for name, value in SINGLE["inputs"][0].items()
    ]
}
V2_INFER = "/v2/models/crop_yield/infer"
BULK_ROWS = 100_000


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    ready_s: float


def start(name: str, command: list[str], env: dict[str, str], port: int) -> Server:
    process = launch(command, env, None)
    url = f"http://127.0.0.1:{port}"
    try:
        ready_s = wait_ready(process, url)
    except RuntimeError as exc:
        raise SystemExit(f"{name}: {exc}") from None
    return Server(name, process, url, ready_s)


def measure_floors(
    tmpdir: Path, single: Path, grpc_single: Path, args: argparse.Namespace
) -> tuple[WrkResult, float]:
    """(raw ASGI under wrk, bare grpc.aio calls/s under h2load): ``benchmarks.floors``."""
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.floors"]
    server = start("raw ASGI floor", [*command, "http", str(port)], dict(os.environ), port)
    try:
        http = run_wrk(server.url, single, args.connections, args.duration)
    finally:
        stop(server.process)
    grpc_port = free_port()
    process = launch([*command, "grpc", str(grpc_port)], dict(os.environ), None)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        rate, *_ = run_h2load(
            None, grpc_port, grpc_single, args.connections, args.duration, tmpdir / "floor.tsv"
        )
    finally:
        stop(process)
    return http, rate


def baseline_command(port: int, workers: int = 1) -> list[str]:
    """The bare FastAPI baseline (``benchmarks/baseline_app.py``) under uvicorn."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "benchmarks.baseline_app:app",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def wrk_script(path: Path, body: dict[str, object]) -> Path:
    path.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
    )
    return path


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def run_wrk(url: str, script: Path, connections: int, duration: int, path: str = "/predict") -> WrkResult:
    base = ["wrk", "-t1", f"-c{connections}", "-s", str(script), f"{url}{path}"]
    subprocess.run([*base[:3], "-d3s", *base[3:]], capture_output=True, check=True)  # warm-up
    out = subprocess.run(
        [*base[:3], f"-d{duration}s", "--latency", *base[3:]], capture_output=True, text=True, check=True
    ).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        p50_ms=_ms(re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE).group(1)),  # type: ignore[union-attr]
        p99_ms=_ms(re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE).group(1)),  # type: ignore[union-attr]
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        errors=sum(int(g) for g in errors.groups()) if errors else 0,
    )


def bulk_bodies() -> dict[str, tuple[str, bytes, dict[str, str]]]:
    """100,000 rows as a /predict_columns body, a V2 JSON body and a V2 binary-tensor body."""
    rng = np.random.default_rng(0)
    x = rng.uniform([50, 20, 20], [110, 150, 90], size=(BULK_ROWS, 3)).round(2)
    columns = {name: x[:, j].tolist() for j, name in enumerate(FEATURES)}
    v2_json = {
        "inputs": [
            {"name": name, "shape": [BULK_ROWS], "datatype": "FP32", "data": values}
            for name, values in columns.items()
        ]
    }
    tensors = [np.ascontiguousarray(x[:, j], dtype="<f4") for j in range(3)]
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": n,
                    "shape": [BULK_ROWS],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": t.nbytes},
                }
                for n, t in zip(FEATURES, tensors, strict=True)
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    json_type = {"content-type": "application/json"}
    return {
        "columns": ("/predict_columns", json.dumps(columns).encode(), json_type),
        "v2_json": (V2_INFER, json.dumps(v2_json).encode(), json_type),
        "v2_binary": (
            V2_INFER,
            header + b"".join(t.tobytes() for t in tensors),
            {"content-type": "application/octet-stream", "inference-header-content-length": str(len(header))},
        ),
    }


def bulk_rows_per_s(url: str, path: str, body: bytes, headers: dict[str, str]) -> float:
    times = []
    with httpx.Client(timeout=60) as client:
        for _ in range(6):
            start = time.perf_counter()
            response = client.post(f"{url}{path}", content=body, headers=headers)
            response.read()
            times.append(time.perf_counter() - start)
            if response.status_code != 200:
                raise SystemExit(f"bulk request failed: {response.status_code} {response.text[:300]}")
    return BULK_ROWS / statistics.median(times[1:])


def load_arguments(description: str | None) -> argparse.Namespace:
    """The load's command line, shared by the benchmarks that drive wrk."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (after a 3 s warm-up)")
    parser.add_argument("--connections", type=int, default=32)
    return parser.parse_args()


def main() -> None:
    args = load_arguments(__doc__)
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install {package}")

    with tempfile.TemporaryDirectory(prefix="service-bench-") as tmp:
        tmpdir = Path(tmp)
        env = {**os.environ, "BENTOML_HOME": str(tmpdir / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
        subprocess.run([sys.executable, "-m", "training", "--quiet"], cwd=ROOT, env=env, check=True)
        single = wrk_script(tmpdir / "single.lua", SINGLE)
        hundred = wrk_script(tmpdir / "hundred.lua", {"inputs": SINGLE["inputs"] * 100})
        v2_single = wrk_script(tmpdir / "v2_single.lua", V2_SINGLE)
        grpc_single = framed_single_row(tmpdir / "grpc_single.bin", SINGLE["inputs"][0])
        bodies = bulk_bodies()
        bulk_rows = np.random.default_rng(0).uniform([50, 20, 20], [110, 150, 90], size=(BULK_ROWS, 3))

        floor_http, floor_grpc = measure_floors(tmpdir, single, grpc_single, args)
        port, grpc_port = free_port(), free_port()
        candidates = [
            ("baseline: FastAPI + uvicorn (uvloop, httptools)", baseline_command(port), {}),
            ("service, batching on", [sys.executable, "-m", "service"], {"CROP_YIELD_BATCHING": "true"}),
            ("service, batching off", [sys.executable, "-m", "service"], {"CROP_YIELD_BATCHING": "false"}),
        ]
        rows = []
        v2_rows = []
        grpc_rows = []
        for index, (name, command, extra) in enumerate(candidates):
            server_env = {
                **env,
                **extra,
                "CROP_YIELD_PORT": str(port),
                "CROP_YIELD_GRPC_PORT": str(grpc_port),
                "CROP_YIELD_HOST": "127.0.0.1",
            }
            server = start(name, command, server_env, port)
            try:
                one = run_wrk(server.url, single, args.connections, args.duration)
                many = run_wrk(server.url, hundred, args.connections, args.duration)
                bulk = bulk_rows_per_s(server.url, *bodies["columns"])
                if index > 0:  # the service (the baseline has no V2 routes)
                    v2_one = run_wrk(server.url, v2_single, args.connections, args.duration, V2_INFER)
                    v2_json = bulk_rows_per_s(server.url, *bodies["v2_json"])
                    v2_binary = bulk_rows_per_s(server.url, *bodies["v2_binary"])
                    v2_rows.append((name, one, v2_one, bulk, v2_json, v2_binary))
                    log = tmpdir / "h2load.tsv"
                    grpc_one = run_h2load(
                        partial(refused_calls, server.url),
                        grpc_port,
                        grpc_single,
                        args.connections,
                        args.duration,
                        log,
                    )
                    grpc_rows.append(
                        (name, v2_one, grpc_one, v2_binary, bulk_raw_rows_per_s(grpc_port, bulk_rows))
                    )
                rss = worker_rss_mb(server.process)
            finally:
                stop(server.process)
            rows.append((name, server.ready_s, rss, one, many, bulk))

    base = rows[0]
    print(
        f"machine: {os.cpu_count()} CPUs; wrk -t1 -c{args.connections} -d{args.duration}s after 3 s warm-up\n"
    )
    print(
        "| server | ready | worker RSS | 1-row req/s | ratio | p50 | p99 | p99 ratio | non-2xx | "
        "100-row rows/s | ratio | 100k bulk rows/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, ready, rss, one, many, bulk in rows:
        print(
            f"| {name} | {ready:.1f} s | {rss:.0f} MB | {one.rps:,.0f} | {one.rps / base[3].rps:.2f}x "
            f"| {one.p50_ms:.2f} ms | {one.p99_ms:.2f} ms | {one.p99_ms / base[3].p99_ms:.2f}x "
            f"| {one.non_2xx + many.non_2xx + one.errors + many.errors} "
            f"| {many.rps * 100:,.0f} | {many.rps / base[4].rps:.2f}x | {bulk:,.0f} |"
        )
    print("\nOpen Inference Protocol, same processes (ratios against the same server's /predict routes)\n")
    print(
        "| server | /predict 1-row req/s | V2 JSON 1-row req/s | V2/predict | V2 p99 | V2 non-2xx "
        "| 100k /predict_columns rows/s | 100k V2 JSON rows/s | 100k V2 binary rows/s | binary/columns |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, one, v2_one, columns, v2_json, v2_binary in v2_rows:
        print(
            f"| {name} | {one.rps:,.0f} | {v2_one.rps:,.0f} | {v2_one.rps / one.rps:.2f}x "
            f"| {v2_one.p99_ms:.2f} ms | {v2_one.non_2xx + v2_one.errors} | {columns:,.0f} | {v2_json:,.0f} "
            f"| {v2_binary:,.0f} | {v2_binary / columns:.2f}x |"
        )
    print("\nOpen Inference Protocol over gRPC, same processes (h2load -m1, as many connections as wrk's)\n")
    print(
        "| server | V2 JSON 1-row req/s | gRPC 1-row calls/s | gRPC/V2 | gRPC p50 | gRPC p99 "
        "| gRPC not OK | 100k V2 binary rows/s | 100k gRPC raw rows/s | raw/binary |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, v2_one, (rate, p50, p99, failed), v2_binary, raw in grpc_rows:
        print(
            f"| {name} | {v2_one.rps:,.0f} | {rate:,.0f} | {rate / v2_one.rps:.2f}x | {p50:.2f} ms "
            f"| {p99:.2f} ms | {failed} | {v2_binary:,.0f} | {raw:,.0f} | {raw / v2_binary:.2f}x |"
        )
    print(
        f"\nThe transports' floors, same run: raw ASGI {floor_http.rps:,.0f} req/s (wrk, single-row "
        f"/predict body), bare grpc.aio {floor_grpc:,.0f} calls/s (h2load, single-row ModelInfer)\n"
    )
    print("| server | /predict / raw ASGI | V2 JSON / raw ASGI | gRPC / grpc.aio | gRPC / V2 JSON |")
    print("|---|---|---|---|---|")
    for (name, one, v2_one, *_), (_, _, (rate, *_), *_) in zip(v2_rows, grpc_rows, strict=True):
        print(
            f"| {name} | {one.rps / floor_http.rps:.2f}x | {v2_one.rps / floor_http.rps:.2f}x "
            f"| {rate / floor_grpc:.2f}x | {rate / v2_one.rps:.2f}x |"
        )


if __name__ == "__main__":
    main()

"""Single-row requests side by side: this service against a bare FastAPI app, KServe 0.21,
TorchServe 0.12 and NVIDIA Triton 2.51 (through PyTriton 0.7), all serving the same
Linear(3, 2) on this machine, in one run.

    make bench-peers          # installs wrk, h2load, Java and the peers' venvs (.peers/), then runs this

Every HTTP route gets the same load from ``wrk`` (one thread, 32 connections, 10 s after a
3 s warm-up) with its own protocol's single-row body; every gRPC route gets the same load
from ``h2load`` (as many connections, one call at a time each, the same warm-up and
duration: ``benchmarks/grpc_load.py``) with a single-row ModelInfer. Pairings at the same
CPU:

- one process each: the FastAPI baseline (uvicorn, uvloop, httptools), the service's
  ``/predict``, V2 JSON infer and gRPC ModelInfer (one worker), KServe's V1 and V2 routes
  (one worker, no batching: its own default);
- TorchServe is a Java front end plus one Python worker (batch 32, 1 ms delay): measured
  once, it is set against the one-worker service (one worker each, as issue 18 measures)
  and, since it uses more than one core, against the service and the baseline with two
  workers as well;
- Triton, likewise measured once and set against both: PyTriton runs Triton's
  ``tritonserver`` (C++ HTTP and gRPC front ends, dynamic batcher: up to 32 within 1 ms)
  with the model in Triton's Python backend, whose stub hands each batch over to the
  Python callable in PyTriton's own process (two IPC hops a batch); V2 infer over REST
  and ModelInfer over gRPC, one FP32 tensor ``input-0`` of shape [1, 3]
  (``benchmarks/peers/pytriton_server.py``).

Each row shows req/s, p50, p99, answers that were not a success (non-2xx and socket
errors for wrk; calls with a gRPC status other than OK, counted by the server: the
service's gRPC counter, Triton's statistics) and the CPU the server's processes used
(cores, averaged over the load; all of a server's process tree: Triton's tritonserver and
stub are children of the PyTriton process), so the table says what each system spent.
gRPC rows are set against the same (HTTP) baseline as the rest of their pairing. The goal
of issue 18: the service's /predict and V2 JSON each >= 0.85x the baseline's req/s with p99
<= 1.5x the baseline's and no non-2xx, and ahead of KServe and TorchServe. The last lines
set each of the service's routes against each peer's routes of the same transport (HTTP
against HTTP, gRPC against gRPC), by req/s and by req/s per core. Absolute numbers drift
between runs and machines: read the ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import psutil

from benchmarks.grpc_load import framed, framed_single_row, refused_calls, run_h2load
from benchmarks.peers.torchserve_peer import TorchServePeer
from benchmarks.service_bench import (
    SINGLE,
    V2_INFER,
    V2_SINGLE,
    Server,
    WrkResult,
    baseline_command,
    load_arguments,
    run_wrk,
    start,
    wrk_script,
)
from devtools.served import free_port, launch, stop, wait_ready
from service.grpc import inference_pb2 as pb

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / ".peers"
ROW = [SINGLE["inputs"][0][name] for name in ("temperature", "rainfall", "humidity")]
WARM_UP_S = 3
V2_TENSOR = {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP32", "data": ROW}]}


@dataclass
class Row:
    pairing: str
    name: str
    result: WrkResult
    cores: float
    grpc: bool = False


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants so far."""
    parent = psutil.Process(pid)
    total = 0.0
    for process in [parent, *parent.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def measured(pid: int, load: Callable[[], WrkResult], duration: int) -> tuple[WrkResult, float]:
    """Run ``load`` (warm-up + measured run) and the cores the server used meanwhile."""
    before = cpu_seconds(pid)
    result = load()
    return result, (cpu_seconds(pid) - before) / (duration + WARM_UP_S)


def main() -> None:
    args = load_arguments(__doc__)
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install {package}")
    for venv in ("kserve", "torchserve", "pytriton"):
        if not (PEERS / venv / "bin" / "python").exists():
            raise SystemExit(f"{PEERS / venv} is missing: run bash benchmarks/peers/setup_peers.sh")

    def load(url: str, script: Path, path: str) -> Callable[[], WrkResult]:
        return lambda: run_wrk(url, script, args.connections, args.duration, path)

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="peers-bench-") as tmp:
        tmpdir = Path(tmp)

        def grpc_load(refused: Callable[[], float], port: int, body: Path) -> Callable[[], WrkResult]:
            """h2load's single-row ModelInfer as a WrkResult (calls not OK in non_2xx)."""

            def run() -> WrkResult:
                log = tmpdir / "h2load.tsv"
                rate, p50, p99, failed = run_h2load(refused, port, body, args.connections, args.duration, log)
                return WrkResult(rate, p50, p99, non_2xx=failed, errors=0)

            return run

        env = {**os.environ, "BENTOML_HOME": str(tmpdir / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
        subprocess.run([sys.executable, "-m", "training", "--quiet"], cwd=ROOT, env=env, check=True)
        (weights,) = (tmpdir / "bentoml" / "models").glob("crop_yield/*/model.safetensors")
        scripts = {
            "predict": wrk_script(tmpdir / "predict.lua", SINGLE),
            "v2": wrk_script(tmpdir / "v2.lua", V2_SINGLE),
            "kserve_v1": wrk_script(tmpdir / "kserve_v1.lua", {"instances": [ROW]}),
            "v2_tensor": wrk_script(tmpdir / "v2_tensor.lua", V2_TENSOR),
            "torchserve": wrk_script(tmpdir / "torchserve.lua", SINGLE["inputs"][0]),
        }
        grpc_bodies = {
            "service": framed_single_row(tmpdir / "grpc_service.bin", SINGLE["inputs"][0]),
            "triton": framed(tmpdir / "grpc_triton.bin", triton_request()),
        }

        for workers in (1, 2):
            pairing = f"{workers} process{'es' if workers > 1 else ''}"
            port = free_port()
            server_env = {**env, "CROP_YIELD_PORT": str(port), "CROP_YIELD_HOST": "127.0.0.1"}
            baseline = start("baseline", baseline_command(port, workers), server_env, port)
            try:
                result, cores = measured(
                    baseline.process.pid, load(baseline.url, scripts["predict"], "/predict"), args.duration
                )
                rows.append(Row(pairing, "bare FastAPI baseline: POST /predict", result, cores))
            finally:
                stop(baseline.process)

            grpc_port = free_port()
            service_env = {
                **server_env,
                "CROP_YIELD_WORKERS": str(workers),
                "CROP_YIELD_GRPC_PORT": str(grpc_port),  # never the default 8001
            }
            service = start("service", [sys.executable, "-m", "service"], service_env, port)
            try:
                for name, script, path in (
                    ("this service: POST /predict", "predict", "/predict"),
                    ("this service: V2 JSON infer", "v2", V2_INFER),
                ):
                    result, cores = measured(
                        service.process.pid, load(service.url, scripts[script], path), args.duration
                    )
                    rows.append(Row(pairing, name, result, cores))
                calls = grpc_load(partial(refused_calls, service.url), grpc_port, grpc_bodies["service"])
                result, cores = measured(service.process.pid, calls, args.duration)
                rows.append(Row(pairing, "this service: gRPC ModelInfer", result, cores, grpc=True))
            finally:
                stop(service.process)

            if workers == 1:
                kserve_port = free_port()
                command = [
                    str(PEERS / "kserve" / "bin" / "python"),
                    str(ROOT / "benchmarks" / "peers" / "kserve_server.py"),
                    "--http_port",
                    str(kserve_port),
                    "--enable_latency_logging",
                    "false",
                ]
                kserve_env = {**os.environ, "PEER_WEIGHTS": str(weights)}
                kserve = start_peer(command, kserve_env, kserve_port, "/v2/health/ready")
                try:
                    for name, script, path in (
                        ("KServe 0.21: V1 predict", "kserve_v1", "/v1/models/crop_yield:predict"),
                        ("KServe 0.21: V2 infer", "v2_tensor", "/v2/models/crop_yield/infer"),
                    ):
                        result, cores = measured(
                            kserve.process.pid, load(kserve.url, scripts[script], path), args.duration
                        )
                        rows.append(Row(pairing, name, result, cores))
                finally:
                    stop(kserve.process)

        # One TorchServe worker (its default) behind its Java front end: measured once, set
        # against the one-worker service (the measure) and, as it uses more than one
        # core, against two workers too.
        with TorchServePeer(weights, venv=PEERS / "torchserve") as torchserve:
            assert torchserve.process is not None
            result, cores = measured(
                torchserve.process.pid,
                load(torchserve.url, scripts["torchserve"], "/predictions/crop_yield"),
                args.duration,
            )
        for pairing in ("1 process", "2 processes"):
            rows.append(Row(pairing, "TorchServe 0.12: predictions (JVM + 1 worker)", result, cores))

        # Triton through PyTriton: likewise measured once and set against both pairings
        # (tritonserver's threads, the backend stub and PyTriton's process).
        triton_rows = measure_triton(weights, scripts["v2_tensor"], grpc_bodies["triton"], args, tmpdir)
        for pairing in ("1 process", "2 processes"):
            rows += [Row(pairing, row.name, row.result, row.cores, row.grpc) for row in triton_rows]

    report(rows, args)


def triton_request() -> pb.ModelInferRequest:
    """A single-row ModelInfer for Triton's model: one FP32 tensor input-0 of shape [1, 3]."""
    request = pb.ModelInferRequest(model_name="crop_yield")
    tensor = request.inputs.add(name="input-0", datatype="FP32", shape=[1, 3])
    tensor.contents.fp32_contents.extend(ROW)
    return request


def triton_counts(url: str) -> tuple[int, int]:
    """(requests that succeeded, requests that failed) so far, from Triton's statistics
    extension (open because pytriton_server.py restricts no endpoints)."""
    answer = httpx.get(f"{url}/v2/models/crop_yield/stats", timeout=10)
    answer.raise_for_status()
    (model,) = answer.json()["model_stats"]
    stats = model["inference_stats"]
    return int(stats["success"]["count"]), int(stats["fail"]["count"])


def measure_triton(
    weights: Path, v2_script: Path, grpc_body: Path, args: argparse.Namespace, tmpdir: Path
) -> list[Row]:
    """Triton's V2 infer under wrk and gRPC ModelInfer under h2load, one server."""
    python = PEERS / "pytriton" / "bin" / "python"
    # The Python backend stub links libpython3.11.so.1.0 through the dynamic loader: point
    # it at this interpreter's own (see pytriton_server.py).
    libdir = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    library_path = os.pathsep.join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH", "")) if p)
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    command = [
        str(python),
        str(ROOT / "benchmarks" / "peers" / "pytriton_server.py"),
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        "--metrics-port",
        str(metrics_port),
    ]
    triton_env = {**os.environ, "PEER_WEIGHTS": str(weights), "LD_LIBRARY_PATH": library_path}
    # Not /v2/health/ready: that answers 200 as soon as tritonserver is up, before PyTriton
    # has loaded the model.
    triton = start_peer(command, triton_env, http_port, "/v2/models/crop_yield/ready")
    rows = []
    try:
        tree = {p.name() for p in psutil.Process(triton.process.pid).children(recursive=True)}
        if "tritonserver" not in tree:
            raise SystemExit(f"tritonserver is not in the PyTriton process's tree: {sorted(tree)}")
        version = httpx.get(f"{triton.url}/v2", timeout=10).json()["version"]
        label = (
            f"Triton {'.'.join(version.split('.')[:2])} via PyTriton 0.7: {{}} (C++ front end + "
            "dynamic batcher; Python callable over 2 IPC hops)"
        )
        v2_load = partial(
            run_wrk, triton.url, v2_script, args.connections, args.duration, "/v2/models/crop_yield/infer"
        )
        result, cores = measured(triton.process.pid, v2_load, args.duration)
        rows.append(Row("", label.format("V2 infer"), result, cores))

        # h2load cannot read gRPC statuses (trailers) and Triton counts in its failures only
        # the requests that reached the model, not those it refused (an unknown input, a
        # wrong shape): a call is counted as not OK if Triton counted it failed, and so is
        # every call h2load measured that Triton did not count as a success (its success
        # count also holds the warm-up's calls, so that shortfall is a lower bound; every
        # call is the same request, so a refusal would be all of them).
        log = tmpdir / "h2load-triton.tsv"

        def grpc_load() -> WrkResult:
            rate, p50, p99, _ = run_h2load(None, grpc_port, grpc_body, args.connections, args.duration, log)
            return WrkResult(rate, p50, p99, non_2xx=0, errors=0)

        success, failed = triton_counts(triton.url)
        result, cores = measured(triton.process.pid, grpc_load, args.duration)
        success_after, failed_after = triton_counts(triton.url)
        done = sum(1 for _ in log.open())
        result.non_2xx = (failed_after - failed) + max(0, done - (success_after - success))
        rows.append(Row("", label.format("gRPC ModelInfer"), result, cores, grpc=True))
    finally:
        stop(triton.process)
    return rows


def start_peer(command: list[str], env: dict[str, str], port: int, ready_path: str) -> Server:
    """Like ``service_bench.start``, for a peer whose readiness is not at /readyz."""
    process = launch(command, env, None)
    url = f"http://127.0.0.1:{port}"
    try:
        ready_s = wait_ready(process, url, path=ready_path, timeout=120)
    except RuntimeError as exc:
        raise SystemExit(f"{command[1]}: {exc}") from None
    return Server("peer", process, url, ready_s)


def report(rows: list[Row], args: argparse.Namespace) -> None:
    print(
        f"machine: {os.cpu_count()} CPUs; HTTP: wrk -t1 -c{args.connections} -d{args.duration}s, "
        f"gRPC: h2load -c{args.connections} -m1 -D{args.duration}, each after {WARM_UP_S} s warm-up; "
        "single-row requests\n"
    )
    print(
        "| pairing | server | req/s | vs baseline | p50 | p99 | p99 vs baseline | non-2xx / not OK "
        "| CPU (cores) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for pairing in dict.fromkeys(r.pairing for r in rows):
        group = [r for r in rows if r.pairing == pairing]
        base = group[0].result
        for row in group:
            r = row.result
            print(
                f"| {pairing} | {row.name} | {r.rps:,.0f} | {r.rps / base.rps:.2f}x | {r.p50_ms:.2f} ms "
                f"| {r.p99_ms:.2f} ms | {r.p99_ms / base.p99_ms:.2f}x | {r.non_2xx + r.errors} "
                f"| {row.cores:.2f} |"
            )
    print()
    peers = [r for r in rows if not r.name.startswith(("this service", "bare FastAPI"))]
    for row in (r for r in rows if r.name.startswith("this service")):
        same = [r for r in rows if r.pairing == row.pairing]
        base = same[0].result
        # HTTP routes against the peers' HTTP routes, gRPC against gRPC.
        rivals = [p for p in peers if p.pairing == row.pairing and p.grpc == row.grpc]
        rate, p99 = row.result.rps / base.rps, row.result.p99_ms / base.p99_ms
        verdicts = (
            [f"{rate:.2f}x baseline's HTTP req/s"]
            if row.grpc
            else [
                f"{rate:.2f}x baseline ({'met' if rate >= 0.85 else 'NOT met'})",
                f"p99 {p99:.2f}x ({'met' if p99 <= 1.5 else 'NOT met'})",
            ]
        )
        for p in rivals:
            per_core = (row.result.rps / row.cores) / (p.result.rps / p.cores) if row.cores and p.cores else 0
            verdicts.append(
                f"{row.result.rps / p.result.rps:.2f}x {p.name.split(' (')[0]} "
                f"({'ahead' if row.result.rps > p.result.rps else 'NOT ahead'}; {per_core:.2f}x per core)"
            )
        print(f"- {row.pairing}, {row.name}: " + "; ".join(verdicts))


if __name__ == "__main__":
    main()

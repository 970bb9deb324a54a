"""Single-row requests side by side: this service against a bare FastAPI app, KServe 0.21
and TorchServe 0.12, all serving the same Linear(3, 2) on this machine, in one run.

    make bench-peers          # installs wrk, Java and the peers' venvs (.peers/), then runs this

Every server gets the same load from ``wrk`` (one thread, 32 connections, 10 s after a 3 s
warm-up) with its own protocol's single-row body. Pairings at the same CPU:

- one process each: the FastAPI baseline (uvicorn, uvloop, httptools), the service's
  ``/predict`` and V2 JSON infer (one worker), KServe's V1 and V2 routes (one worker, no
  batching: its own default);
- TorchServe is a Java front end plus one Python worker (batch 32, 1 ms delay): measured
  once, it is set against the one-worker service (one worker each, as issue 18 measures)
  and, since it uses more than one core, against the service and the baseline with two
  workers as well.

Each row shows req/s, p50, p99, non-2xx answers and the CPU the server's processes used
(cores, averaged over the load), so the table says what each system spent. The goal of
issue 18: the service's /predict and V2 JSON each >= 0.85x the baseline's req/s with p99 <=
1.5x the baseline's and no non-2xx, and ahead of KServe and TorchServe. Absolute numbers
drift between runs and machines: read the ratios.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

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

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / ".peers"
ROW = [SINGLE["inputs"][0][name] for name in ("temperature", "rainfall", "humidity")]
WARM_UP_S = 3


@dataclass
class Row:
    pairing: str
    name: str
    result: WrkResult
    cores: float


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
    for venv in ("kserve", "torchserve"):
        if not (PEERS / venv / "bin" / "python").exists():
            raise SystemExit(f"{PEERS / venv} is missing: run bash benchmarks/peers/setup_peers.sh")

    def load(url: str, script: Path, path: str) -> Callable[[], WrkResult]:
        return lambda: run_wrk(url, script, args.connections, args.duration, path)

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="peers-bench-") as tmp:
        tmpdir = Path(tmp)
        env = {**os.environ, "BENTOML_HOME": str(tmpdir / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
        subprocess.run([sys.executable, "-m", "training", "--quiet"], cwd=ROOT, env=env, check=True)
        (weights,) = (tmpdir / "bentoml" / "models").glob("crop_yield/*/model.safetensors")
        scripts = {
            "predict": wrk_script(tmpdir / "predict.lua", SINGLE),
            "v2": wrk_script(tmpdir / "v2.lua", V2_SINGLE),
            "kserve_v1": wrk_script(tmpdir / "kserve_v1.lua", {"instances": [ROW]}),
            "kserve_v2": wrk_script(
                tmpdir / "kserve_v2.lua",
                {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP32", "data": ROW}]},
            ),
            "torchserve": wrk_script(tmpdir / "torchserve.lua", SINGLE["inputs"][0]),
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

            service_env = {**server_env, "CROP_YIELD_WORKERS": str(workers)}
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
                        ("KServe 0.21: V2 infer", "kserve_v2", "/v2/models/crop_yield/infer"),
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

    report(rows, args)


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
        f"machine: {os.cpu_count()} CPUs; wrk -t1 -c{args.connections} -d{args.duration}s after "
        f"{WARM_UP_S} s warm-up; single-row requests\n"
    )
    print("| pairing | server | req/s | vs baseline | p50 | p99 | p99 vs baseline | non-2xx | CPU (cores) |")
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
    peers = [r for r in rows if "KServe" in r.name or "TorchServe" in r.name]
    for row in (r for r in rows if r.name.startswith("this service")):
        same = [r for r in rows if r.pairing == row.pairing]
        base = same[0].result
        rivals = [p for p in peers if p.pairing == row.pairing]
        rate, p99 = row.result.rps / base.rps, row.result.p99_ms / base.p99_ms
        verdicts = [
            f"{rate:.2f}x baseline ({'met' if rate >= 0.85 else 'NOT met'})",
            f"p99 {p99:.2f}x ({'met' if p99 <= 1.5 else 'NOT met'})",
            *(
                f"{row.result.rps / p.result.rps:.2f}x {p.name} "
                f"({'ahead' if row.result.rps > p.result.rps else 'NOT ahead'})"
                for p in rivals
            ),
        ]
        print(f"- {row.pairing}, {row.name}: " + "; ".join(verdicts))


if __name__ == "__main__":
    main()

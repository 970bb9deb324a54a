"""Monitoring overhead: single-row /predict with model monitoring on and off, in one run.

    .venv/bin/python -m benchmarks.monitoring_bench [--rounds 3] [--duration 10]

Two service processes (one worker each, same model), one with CROP_YIELD_MONITORING=false,
measured alternately (ABAB...) with wrk at 32 connections, batching on and off, so drift
hits both sides alike. Target (issue 9): under 5% fewer requests per second with
monitoring on. Compare the ratio: absolute numbers drift.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.service_bench import ROOT, SINGLE, run_wrk, start, wrk_script
from devtools.served import free_port, stop


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating wrk runs per server")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="monitoring-bench-") as tmp:
        tmpdir = Path(tmp)
        store = tmpdir / "store"
        env = {**os.environ, "BENTOML_HOME": str(store), "BENTOML_DO_NOT_TRACK": "true"}
        subprocess.run([sys.executable, "-m", "training", "--quiet"], cwd=ROOT, env=env, check=True)
        script = wrk_script(tmpdir / "single.lua", SINGLE)
        print(
            f"machine: {os.cpu_count()} CPUs; wrk -t1 -c{args.connections} -d{args.duration}s, "
            f"{args.rounds} rounds\n"
        )
        print("| batching | monitoring off req/s | monitoring on req/s | on/off | p99 off | p99 on |")
        print("|---|---|---|---|---|---|")
        for batching in ("true", "false"):
            servers = {}
            for monitoring in ("false", "true"):
                home = tmpdir / f"home-{monitoring}-{batching}"
                home.mkdir()
                (home / "models").symlink_to(store / "models")  # own home: own metrics files
                port = free_port()
                server_env = {
                    **env,
                    "BENTOML_HOME": str(home),
                    "CROP_YIELD_PORT": str(port),
                    "CROP_YIELD_HOST": "127.0.0.1",
                    "CROP_YIELD_BATCHING": batching,
                    "CROP_YIELD_MONITORING": monitoring,
                }
                servers[monitoring] = start(
                    f"monitoring {monitoring}", [sys.executable, "-m", "service"], server_env, port
                )
            try:
                results: dict[str, list[tuple[float, float]]] = {"false": [], "true": []}
                for _ in range(args.rounds):
                    for monitoring, server in servers.items():
                        result = run_wrk(server.url, script, args.connections, args.duration)
                        results[monitoring].append((result.rps, result.p99_ms))
            finally:
                for server in servers.values():
                    stop(server.process)
            off = statistics.median(r for r, _ in results["false"])
            on = statistics.median(r for r, _ in results["true"])
            p99_off = statistics.median(p for _, p in results["false"])
            p99_on = statistics.median(p for _, p in results["true"])
            print(
                f"| {batching} | {off:,.0f} | {on:,.0f} | {on / off:.3f} "
                f"| {p99_off:.1f} ms | {p99_on:.1f} ms |"
            )


if __name__ == "__main__":
    main()

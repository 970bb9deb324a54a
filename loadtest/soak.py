"""Soak test: serve the model, hold a locust load for minutes, watch for failures and leaks.

    .venv/bin/python -m loadtest.soak [--users 50] [--minutes 5] [--report-dir reports/soak]

Trains the default model into a temporary store, starts ``python -m service``, runs the
locustfile headless, and samples the worker's resident memory every 5 s. Memory growth
is measured from the first sample after a one-minute warm-up (caches and allocator pools
settle there) to the end. Targets (issue 5): 0 failures, growth under 10%. Exits 1 when
either is missed.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.service_bench import start
from devtools.served import REPO_ROOT as ROOT
from devtools.served import free_port, stop, worker_rss_mb

WARM_UP_S = 60


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--report-dir", type=Path, default=ROOT / "reports" / "soak")
    args = parser.parse_args()
    args.report_dir.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        port = free_port()
        env = {
            **os.environ,
            "BENTOML_HOME": str(Path(tmp) / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "true",
            "CROP_YIELD_HOST": "127.0.0.1",
            "CROP_YIELD_PORT": str(port),
        }
        subprocess.run([sys.executable, "-m", "training", "--quiet"], cwd=ROOT, env=env, check=True)
        server = start("service", [sys.executable, "-m", "service"], env, port)
        url = server.url
        try:
            samples: list[tuple[float, float]] = []
            done = threading.Event()
            started = time.monotonic()

            def sample() -> None:
                while not done.is_set():
                    samples.append((time.monotonic() - started, worker_rss_mb(server.process)))
                    done.wait(5)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            seconds = int(args.minutes * 60)
            locust = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "locust",
                    "-f",
                    str(ROOT / "loadtest" / "locustfile.py"),
                    "--headless",
                    "--only-summary",
                    "--host",
                    url,
                    "-u",
                    str(args.users),
                    "-r",
                    "10",
                    "-t",
                    f"{seconds}s",
                    "--html",
                    str(args.report_dir / "report.html"),
                    "--csv",
                    str(args.report_dir / "stats"),
                    "--max-p95-ms",
                    "1000",
                    "--max-p99-ms",
                    "2000",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            done.set()
            sampler.join()
        finally:
            stop(server.process)

    with (args.report_dir / "stats_stats.csv").open() as f:
        total = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    after_warm_up = [rss for t, rss in samples if t >= WARM_UP_S] or [rss for _, rss in samples]
    growth = (after_warm_up[-1] - after_warm_up[0]) / after_warm_up[0]
    failures = int(total["Failure Count"])
    print(f"soak: {args.users} users for {args.minutes:g} min against {url}")
    print(
        f"requests {total['Request Count']}, failures {failures}, {float(total['Requests/s']):.1f} req/s, "
        f"p50 {total['50%']} ms, p95 {total['95%']} ms, p99 {total['99%']} ms"
    )
    print(
        f"worker RSS: start {samples[0][1]:.0f} MB, after warm-up {after_warm_up[0]:.0f} MB, "
        f"end {after_warm_up[-1]:.0f} MB, peak {max(r for _, r in samples):.0f} MB, "
        f"growth after warm-up {growth:+.1%}"
    )
    print(locust.stdout.strip().splitlines()[-1] if locust.stdout.strip() else locust.stderr[-500:])
    ok = failures == 0 and growth < 0.10 and locust.returncode == 0
    print("soak targets met" if ok else "SOAK TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

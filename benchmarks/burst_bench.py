"""Memory under bursts of bulk calls (issue 19): peak and resting worker RSS per burst.

    make bench-bursts [ARGS="--bursts 10 --calls 32"]

One worker, loopback. Each burst is ``--calls`` simultaneous 1,000,000-row calls (half
``/predict_columns`` JSON, about 24 MB each; half V2 binary, 12 MB each; see
``devtools/bursts.py``). Printed per burst: the answers by status (408 = a body refused as
too slow; 503 = refused by the memory budget, with Retry-After), the worker's peak RSS while
the burst ran and its RSS 3 s after. The goals: no 408 and no 5xx other than budgeted 503s;
resting RSS after the last burst within 150 MiB of the resting RSS after the first; every
peak below 75% of the pod's 2 GiB limit (1,536 MiB).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from devtools.bursts import bulk_bodies, fire
from devtools.served import start_service, stop, worker_rss_mb

ROOT = Path(__file__).resolve().parents[1]
POD_LIMIT_MB = 2048


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bursts", type=int, default=10)
    parser.add_argument("--calls", type=int, default=32)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--memory-limit-mb", type=int, default=POD_LIMIT_MB, help="the limit the budget assumes"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="burst-bench-") as tmp:
        where = Path(tmp)
        env = {**os.environ, "BENTOML_HOME": str(where / "store"), "BENTOML_DO_NOT_TRACK": "true"}
        subprocess.run([sys.executable, "-m", "training", "--quiet"], cwd=ROOT, env=env, check=True)
        bodies = bulk_bodies(args.rows)
        process, url, ready_s = start_service(
            where / "store", where / "serve.log", where, memory_limit_mb=str(args.memory_limit_mb)
        )
        try:
            start_mb = worker_rss_mb(process)
            print(f"ready in {ready_s:.1f} s; worker RSS at rest before the first burst: {start_mb:,.0f} MiB")
            print(f"{args.bursts} bursts of {args.calls} simultaneous {args.rows:,}-row calls:")
            results = []
            for n in range(1, args.bursts + 1):
                result = fire(url, bodies, lambda: worker_rss_mb(process), calls=args.calls)
                results.append(result)
                print(f"  burst {n}: {result.line()}", flush=True)
        finally:
            stop(process)

    statuses = sum((r.statuses for r in results), start=results[0].statuses.__class__())
    bad = {code: n for code, n in statuses.items() if code != 200 and code != 503}
    growth = results[-1].rest_mb - results[0].rest_mb
    peak = max(r.peak_mb for r in results)
    limit = 0.75 * args.memory_limit_mb
    retry_after = sum(r.retry_after for r in results)
    print(f"answers: {dict(sorted(statuses.items()))}; 503s with Retry-After: {retry_after}")
    print(f"  no 408 and no other 5xx: {'met' if not bad else f'NOT met {bad}'}")
    verdict = "met" if growth <= 150 else "NOT met"
    print(f"  resting growth after the first burst: {growth:+,.0f} MiB ({verdict})")
    print(f"  highest peak: {peak:,.0f} MiB of {limit:,.0f} allowed ({'met' if peak < limit else 'NOT met'})")


if __name__ == "__main__":
    main()

"""Slow declared bodies beside an honest bulk call: how long the honest call takes.

    make bench-slow-bodies [ARGS="--tricklers 3 --every 4"]

One worker, loopback, a memory budget drawn from ``--memory-limit-mb`` (a 2 GiB pod by
default). ``--tricklers`` connections each declare a ``--declared-mib`` POST
/predict_columns body, send ``--lead-kib`` of it at once, then one byte every ``--every``
seconds (within the 5 s body inactivity limit; ``tests/trickle.py``). ``--settle`` seconds
later, an honest ``--rows``-row /predict_columns call (about 24 bytes a row) is sent and
timed; before the tricklers, the same call alone gives the time it takes unhindered.
Printed: the worker's budget, both times with their status codes, whether the tricklers
were still connected when the honest call was answered, and the bytes they had trickled.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from devtools.bursts import Body, bulk_bodies
from devtools.served import start_service, stop
from tests.trickle import Tricklers

ROOT = Path(__file__).resolve().parents[1]
POD_LIMIT_MB = 2048


def timed(url: str, body: Body) -> tuple[int, float]:
    started = time.monotonic()
    try:
        status = httpx.post(f"{url}{body.path}", content=body.content, headers=body.headers, timeout=120)
    except httpx.HTTPError as exc:
        print(f"  honest call failed: {type(exc).__name__}: {exc}")
        return 0, time.monotonic() - started
    return status.status_code, time.monotonic() - started


def budget_mib(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    found = re.search(r"^crop_yield_memory_budget_bytes(?:\{[^}]*\})? (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) / 2**20 if found else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tricklers", type=int, default=3)
    parser.add_argument("--every", type=float, default=4.0, help="seconds between trickled bytes")
    parser.add_argument("--declared-mib", type=int, default=40)
    parser.add_argument("--lead-kib", type=int, default=0, help="bytes each trickler sends at once first")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds between tricklers and the call")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--memory-limit-mb", type=int, default=POD_LIMIT_MB, help="the limit the budget assumes"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="slow-bodies-bench-") as tmp:
        where = Path(tmp)
        env = {**os.environ, "BENTOML_HOME": str(where / "store"), "BENTOML_DO_NOT_TRACK": "true"}
        subprocess.run([sys.executable, "-m", "training", "--quiet"], cwd=ROOT, env=env, check=True)
        honest = bulk_bodies(args.rows)[0]
        process, url, ready_s = start_service(
            where / "store", where / "serve.log", where, memory_limit_mb=str(args.memory_limit_mb)
        )
        try:
            print(f"ready in {ready_s:.1f} s; memory budget {budget_mib(url):,.0f} MiB")
            status, alone = timed(url, honest)
            print(f"honest {args.rows:,}-row call alone: {status} in {alone:.2f} s")
            declared = args.declared_mib << 20
            with Tricklers(every_s=args.every) as tricklers:
                for _ in range(args.tricklers):
                    tricklers.http(url, honest.path, declared, lead=b" " * (args.lead_kib << 10))
                time.sleep(args.settle)
                status, beside = timed(url, honest)
                connected = tricklers.answered.count(False)
                sent = tricklers.sent
            print(
                f"beside {args.tricklers} connections declaring {args.declared_mib} MiB "
                f"(lead {args.lead_kib} KiB, then a byte every {args.every:g} s): {status} in {beside:.2f} s "
                f"({beside - alone:+.2f} s); {connected} of them still connected, {sent} bytes trickled"
            )
        finally:
            stop(process)


if __name__ == "__main__":
    main()

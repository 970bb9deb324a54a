"""What prediction intervals and extrapolation flags cost, measured side by side in one run.

    .venv/bin/python -m benchmarks.interval_bench [--duration 10] [--before PATH]

One served process (batching on): single-row ``POST /predict`` under wrk load without and
with ``"interval": 0.95``; 100,000 rows through ``/predict_columns`` and V2 binary tensors
without and with the bounds (median of 5). ``--before PATH`` also serves a checkout of the
code before intervals and flags existed (its own store, trained by its own code) and
measures the requests without intervals there: the price of the flags every response now
carries. Compare ratios: absolute numbers drift.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.service_bench import (
    BULK_ROWS,
    SINGLE,
    V2_INFER,
    Server,
    bulk_bodies,
    bulk_rows_per_s,
    run_wrk,
    wrk_script,
)
from devtools.served import free_port, launch, stop, wait_ready

ROOT = Path(__file__).resolve().parents[1]
BOUNDS = ["apples_lower", "apples_upper", "oranges_lower", "oranges_upper"]


def serve(root: Path, home: Path) -> Server:
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    subprocess.run([sys.executable, "-m", "training", "--quiet"], cwd=root, env=env, check=True)
    port = free_port()
    env |= {"CROP_YIELD_PORT": str(port), "CROP_YIELD_HOST": "127.0.0.1"}
    process = launch([sys.executable, "-m", "service"], env, None, cwd=root)
    url = f"http://127.0.0.1:{port}"
    return Server(str(root), process, url, wait_ready(process, url))


def with_bounds(body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
    """The V2 binary request of service_bench asking for the four bounds as well."""
    length = int(headers["inference-header-content-length"])
    header = json.loads(body[:length])
    header["outputs"] = [{"name": name} for name in ("apples", "oranges", *BOUNDS)]
    header["parameters"]["interval"] = 0.95
    encoded = json.dumps(header).encode()
    return encoded + body[length:], {**headers, "inference-header-content-length": str(len(encoded))}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--before", type=Path, default=None, help="checkout of the code before this feature")
    args = parser.parse_args()
    bodies = bulk_bodies()
    path, columns, json_type = bodies["columns"]
    columns_interval = json.dumps({**json.loads(columns), "interval": 0.95}).encode()
    _, v2_body, v2_headers = bodies["v2_binary"]
    v2_bounds = with_bounds(v2_body, v2_headers)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="interval-bench-") as tmp:
        tmpdir = Path(tmp)
        plain = wrk_script(tmpdir / "plain.lua", SINGLE)
        interval = wrk_script(tmpdir / "interval.lua", {**SINGLE, "interval": 0.95})
        runs = [("this code", ROOT)] + ([("before", args.before.resolve())] if args.before else [])
        for label, root in runs:
            server = serve(root, tmpdir / label.replace(" ", "-"))
            try:
                figures = results.setdefault(label, {})
                figures["1-row"] = run_wrk(server.url, plain, args.connections, args.duration).rps
                figures["100k columns"] = bulk_rows_per_s(server.url, path, columns, json_type)
                figures["100k V2 binary"] = bulk_rows_per_s(server.url, V2_INFER, v2_body, v2_headers)
                if label == "this code":
                    figures["1-row + interval"] = run_wrk(
                        server.url, interval, args.connections, args.duration
                    ).rps
                    figures["100k columns + interval"] = bulk_rows_per_s(
                        server.url, path, columns_interval, json_type
                    )
                    figures["100k V2 binary + bounds"] = bulk_rows_per_s(server.url, V2_INFER, *v2_bounds)
            finally:
                stop(server.process)
    now = results["this code"]
    print(
        f"machine: {os.cpu_count()} CPUs; wrk -t1 -c{args.connections} -d{args.duration}s; "
        f"bulk: {BULK_ROWS:,} rows\n"
    )
    print("| request | without interval | with interval (0.95) | ratio |")
    print("|---|---|---|---|")
    for name, unit in (("1-row", "req/s"), ("100k columns", "rows/s"), ("100k V2 binary", "rows/s")):
        extra = f"{name} + bounds" if "V2" in name else f"{name} + interval"
        print(f"| {name} ({unit}) | {now[name]:,.0f} | {now[extra]:,.0f} | {now[extra] / now[name]:.2f}x |")
    if "before" in results:
        before = results["before"]
        print("\nExtrapolation flags on every response: this code against the code before, no interval\n")
        print("| request | before | now | ratio |")
        print("|---|---|---|---|")
        for name in ("1-row", "100k columns", "100k V2 binary"):
            print(f"| {name} | {before[name]:,.0f} | {now[name]:,.0f} | {now[name] / before[name]:.2f}x |")


if __name__ == "__main__":
    main()

"""Several model versions served side by side: a served-set swap under load, and throughput.

    .venv/bin/python -m benchmarks.versions_bench [--part swaps|throughput|all] [--before PATH]

swaps (default): one service, 2 workers, explicit model control, serving v2. 32 asyncio
callers send single-row ``POST /predict`` (naming no version) through a steady phase, a swap
phase where a controller calls load v1, default v1, unload v2, load v2, default v2 (``--gap``
seconds apart), and a tail. Each caller reuses its connection but opens a fresh one every
50th call (the kernel may hand it to the other worker). Targets: no failed call, no answer
from a version not served at any moment of the call, and calls started after a ``default``
call returned answered by the new default within 5 s.

throughput: wrk -t1 single-row /predict, one worker, rounds alternating between servers:
``--before PATH`` (a checkout of older code, its own store trained by its own code, default
settings), this code serving one version, and this code serving two (latest:2). Compare
ratios: absolute numbers drift.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from benchmarks.service_bench import ROOT, SINGLE, run_wrk, wrk_script
from devtools.served import PORT_TAKEN, free_port, launch, serving_home, start_service, stop, wait_ready

BODY = json.dumps(SINGLE).encode()
JSON = {"content-type": "application/json"}
FRESH_EVERY = 50
OPS = [("load", "v1"), ("default", "v1"), ("unload", "v2"), ("load", "v2"), ("default", "v2")]
MAX_LAG_S = 5.0
WARM_UP_S = 2.0  # connections opening and first inferences: kept out of the steady figures
BEFORE, ONE, TWO = "(a) before, one version", "(b) now, one version", "(c) now, two versions"


@dataclass
class Call:
    start: float
    end: float
    fresh: bool
    status: int | None  # None: the call raised
    version: str | None
    problem: str  # why it failed (status and body, or the exception); "" when it did not


@dataclass
class Change:
    action: str
    version: str
    start: float
    end: float
    status: int
    body: str


def train(root: Path, store: Path, versions: list[tuple[str, str]]) -> None:
    env = {**os.environ, "BENTOML_HOME": str(store), "BENTOML_DO_NOT_TRACK": "true"}
    for version, seed in versions:
        command = [sys.executable, "-m", "training", "--quiet", "--version", version, "--seed", seed]
        subprocess.run(command, cwd=root, env=env, check=True, stdout=subprocess.DEVNULL)


def serve(store: Path, where: Path, **settings: str) -> tuple[subprocess.Popen[bytes], str]:
    where.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):  # a port picked free may be taken before the server binds it
        try:
            process, url, _ = start_service(store, where / "service.log", where, **settings)
            return process, url
        except RuntimeError as exc:
            if attempt == 2 or PORT_TAKEN not in str(exc):
                raise SystemExit(f"service did not start: {exc}") from None
    raise AssertionError("unreachable")


async def caller(index: int, url: str, clock: float, done: asyncio.Event, calls: list[Call]) -> None:
    # one SSL context for all: httpx builds one per client otherwise (certificate loading,
    # ~20 ms of CPU), which would make fresh connections far dearer than the call itself
    context = ssl.create_default_context()
    async with httpx.AsyncClient(base_url=url, timeout=30, verify=context) as client:
        count = index  # staggered, so the callers do not all open fresh connections at once
        while not done.is_set():
            count += 1
            fresh = count % FRESH_EVERY == 0
            start = time.perf_counter() - clock
            status, version, problem = None, None, ""
            try:
                if fresh:
                    async with httpx.AsyncClient(base_url=url, timeout=30, verify=context) as one:
                        answer = await one.post("/predict", content=BODY, headers=JSON)
                else:
                    answer = await client.post("/predict", content=BODY, headers=JSON)
                status, version = answer.status_code, answer.headers.get("x-model-version")
                if status != 200:
                    problem = f"{status}: {answer.text[:300]}"
                elif (model := answer.json().get("model")) != f"crop_yield:{version}":
                    problem = f"header x-model-version {version!r} but body model {model!r}"
            except Exception as exc:  # every failure is counted and shown, none stops the run
                problem = repr(exc)
            calls.append(Call(start, time.perf_counter() - clock, fresh, status, version, problem))


def change(url: str, action: str, version: str, clock: float) -> Change:
    """One repository call, timed in a thread of its own so that the callers' event loop does
    not delay its start and return times (the checks below rest on them)."""
    start = time.perf_counter() - clock
    answer = httpx.post(
        f"{url}/v2/repository/models/crop_yield/{action}",
        json={"parameters": {"version": version}},
        timeout=60,
    )
    return Change(action, version, start, time.perf_counter() - clock, answer.status_code, answer.text[:300])


async def swap_under_load(url: str, args: argparse.Namespace) -> tuple[list[Call], list[Change]]:
    clock, done, calls = time.perf_counter(), asyncio.Event(), list[Call]()
    callers = [asyncio.create_task(caller(i, url, clock, done, calls)) for i in range(args.callers)]
    changes = []
    await asyncio.sleep(WARM_UP_S + args.steady)
    for i, (action, version) in enumerate(OPS):
        if i:
            await asyncio.sleep(args.gap)
        changes.append(await asyncio.to_thread(change, url, action, version, clock))
    await asyncio.sleep(args.steady)
    done.set()
    await asyncio.gather(*callers)
    return calls, changes


def states(changes: list[Change]) -> list[tuple[float, float, set[str], str]]:
    """(from, to, served versions, default) of each served set: a set may be in effect from the
    start of the call that made it to the return of the next call (a change lands somewhere
    inside its call, and every worker serves it once the call answered 200)."""
    served, default = {"v2"}, "v2"
    result = [(-np.inf, changes[0].end if changes else np.inf, set(served), default)]
    for i, c in enumerate(changes):
        if c.action == "load":
            served = served | {c.version}
        elif c.action == "unload":
            served = served - {c.version}
        else:
            default = c.version
        until = changes[i + 1].end if i + 1 < len(changes) else np.inf
        result.append((c.start, until, set(served), default))
    return result


def ms(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q) * 1e3:.1f} ms" if values else "-"


def report_swaps(calls: list[Call], changes: list[Change]) -> None:
    timeline = states(changes)
    failed = [c for c in calls if c.problem]
    outside = []
    for c in calls:
        if c.status == 200 and c.version is not None:
            possible = set().union(*(v for lo, hi, v, _ in timeline if lo <= c.end and hi >= c.start))
            if c.version not in possible:
                outside.append(c)
    print(f"calls: {len(calls):,} ({sum(c.fresh for c in calls):,} on fresh connections)")
    print(f"failed calls (non-200, exception, header and body disagree): {len(failed)}")
    print(f"answers from a version not served at any moment of the call: {len(outside)}\n")
    swap_from, swap_to = changes[0].start, changes[-1].end
    phases = {
        f"warm-up (first {WARM_UP_S:.0f} s)": [c for c in calls if c.start < WARM_UP_S],
        "steady": [c for c in calls if WARM_UP_S <= c.start < swap_from],
        "swap": [c for c in calls if swap_from <= c.start <= swap_to],
        "tail": [c for c in calls if c.start > swap_to],
    }
    print("| phase | seconds | calls | calls/s | failed | p50 | p99 | answered by |")
    print("|---|---|---|---|---|---|---|---|")
    for name, group in phases.items():
        seconds = max(c.end for c in group) - min(c.start for c in group) if group else 0.0
        latencies = [c.end - c.start for c in group if not c.problem]
        versions = {v: sum(c.version == v for c in group) for v in sorted({str(c.version) for c in group})}
        print(
            f"| {name} | {seconds:.1f} | {len(group):,} | {len(group) / max(seconds, 1e-9):,.0f} "
            f"| {sum(bool(c.problem) for c in group)} | {ms(latencies, 50)} | {ms(latencies, 99)} "
            f"| {', '.join(f'{v}: {n:,}' for v, n in versions.items())} |"
        )
    print("\n| controller call | status | duration | new default lag, fresh connections | same, all calls |")
    print("|---|---|---|---|---|")
    defaults = [i for i, c in enumerate(changes) if c.action == "default"]
    for i, op in enumerate(changes):
        lag = lag_all = "-"
        if op.action == "default":
            old = timeline[i][3]  # the default before this call
            later = [changes[j].start for j in defaults if j > i]
            until = later[0] if later else np.inf  # up to the next default call
            stale = [k for k in calls if op.end < k.start < until and k.version == old]
            lag_fresh = max((k.start - op.end for k in stale if k.fresh), default=0.0)
            lag_any = max((k.start - op.end for k in stale), default=0.0)
            verdict = "ok" if lag_fresh <= MAX_LAG_S else f"OVER {MAX_LAG_S:.0f} s"
            lag, lag_all = f"{lag_fresh:.3f} s ({verdict})", f"{lag_any:.3f} s"
        status = str(op.status) if op.status == 200 else f"{op.status}: {op.body}"
        print(f"| {op.action} {op.version} | {status} | {op.end - op.start:.2f} s | {lag} | {lag_all} |")
    for title, shown in (("failed calls", failed), ("answers outside the served set", outside)):
        if shown:
            print(f"\n{title} (first 10 of {len(shown)}):")
            for c in shown[:10]:
                print(
                    f"- {c.start:.3f}-{c.end:.3f} s fresh={c.fresh} status={c.status} "
                    f"version={c.version} {c.problem}"
                )


def part_swaps(args: argparse.Namespace, store: Path, tmpdir: Path) -> None:
    where = tmpdir / "swaps"
    process, url = serve(
        store,
        where,
        model_control="explicit",
        version_policy="specific:v2",
        served_set_file=str(where / "served.json"),
        workers="2",
        control_interval="1",
    )
    try:
        calls, changes = asyncio.run(swap_under_load(url, args))
    finally:
        stop(process)
    print(
        f"machine: {os.cpu_count()} CPUs; 2 workers, explicit control, CONTROL_INTERVAL=1; "
        f"{args.callers} callers, fresh connection every {FRESH_EVERY}th call; "
        f"{args.steady} s steady, changes {args.gap} s apart, {args.steady} s tail\n"
    )
    report_swaps(calls, changes)


def part_throughput(args: argparse.Namespace, store: Path, tmpdir: Path) -> None:
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        if args.before:
            before = args.before.resolve()
            train(before, tmpdir / "before-store", [("v2", "5")])  # its own code writes its store
            port = free_port()
            env = {
                **os.environ,
                "BENTOML_HOME": str(serving_home(tmpdir / "before-store", tmpdir / "a")),
                "BENTOML_DO_NOT_TRACK": "true",
                "CROP_YIELD_HOST": "127.0.0.1",
                "CROP_YIELD_PORT": str(port),
                "CROP_YIELD_GRPC_PORT": str(free_port()),
            }
            log = tmpdir / "a" / "service.log"
            # cwd=before: `python -m service` and bentoml's workers import the older packages
            process = launch([sys.executable, "-m", "service"], env, log, cwd=before)
            url = f"http://127.0.0.1:{port}"
            try:
                wait_ready(process, url, log)
            except RuntimeError as exc:
                raise SystemExit(f"--before service did not start: {exc}") from None
            servers[BEFORE] = (process, url)
        servers[ONE] = serve(store, tmpdir / "b")
        servers[TWO] = serve(store, tmpdir / "c", version_policy="latest:2")
        script = wrk_script(tmpdir / "single.lua", {"inputs": SINGLE["inputs"]})
        runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in servers}
        for _ in range(args.rounds):  # alternating, so drift hits every server alike
            for name, (_, url) in servers.items():
                result = run_wrk(url, script, args.connections, args.duration)
                runs[name].append((result.rps, result.p99_ms, result.non_2xx + result.errors))
        served = {}
        for name, (_, url) in servers.items():
            answer = httpx.post(f"{url}/predict", content=BODY, headers=JSON, timeout=30)
            versions = httpx.get(f"{url}/metadata", timeout=10).json().get("versions", ["?"])
            # the older code may name the version in the body only
            by = answer.headers.get("x-model-version") or f"body: {answer.json().get('model')}"
            served[name] = (", ".join(versions), by)
    finally:
        for process, _ in servers.values():
            stop(process)
    print(
        f"machine: {os.cpu_count()} CPUs; one worker each; wrk -t1 -c{args.connections} "
        f"-d{args.duration}s after 3 s warm-up, {args.rounds} rounds alternating\n"
    )
    print("| server | served | answered by | req/s (median) | p99 (median) | non-2xx + errors | req/s runs |")
    print("|---|---|---|---|---|---|---|")
    rps = {}
    for name, results in runs.items():
        rps[name] = statistics.median(r for r, _, _ in results)
        p99 = statistics.median(p for _, p, _ in results)
        each = ", ".join(f"{r:,.0f}" for r, _, _ in results)
        versions, answered = served[name]
        print(
            f"| {name} | {versions} | {answered} | {rps[name]:,.0f} | {p99:.1f} ms "
            f"| {sum(e for _, _, e in results)} | {each} |"
        )
    pairs = [(TWO, BEFORE), (ONE, BEFORE), (TWO, ONE)] if BEFORE in rps else [(TWO, ONE)]
    print("\n" + "; ".join(f"{x[:3]}/{y[:3]} = {rps[x] / rps[y]:.3f}" for x, y in pairs))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["swaps", "throughput", "all"], default="swaps")
    parser.add_argument("--callers", type=int, default=32, help="swaps: concurrent callers")
    parser.add_argument("--steady", type=float, default=10, help="swaps: seconds before and after the swaps")
    parser.add_argument("--gap", type=float, default=2, help="swaps: seconds between two controller calls")
    parser.add_argument("--before", type=Path, default=None, help="throughput: a checkout of older code")
    parser.add_argument("--rounds", type=int, default=3, help="throughput: wrk runs per server")
    parser.add_argument("--duration", type=int, default=10, help="throughput: seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32, help="throughput: wrk connections")
    args = parser.parse_args()
    if args.before and args.part == "swaps":
        parser.error("--before is the throughput part's baseline: add --part throughput (or all)")
    with tempfile.TemporaryDirectory(prefix="versions-bench-") as tmp:
        store = Path(tmp) / "store"
        train(ROOT, store, [("v1", "1"), ("v2", "5")])  # other seeds: other weights
        if args.part in ("swaps", "all"):
            part_swaps(args, store, Path(tmp))
        if args.part == "all":
            print()
        if args.part in ("throughput", "all"):
            part_throughput(args, store, Path(tmp))


if __name__ == "__main__":
    main()

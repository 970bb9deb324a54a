"""What knowing whether the model is right costs per request: drift counting, payload logging
and tracing on, against the service before them, in one run.

    .venv/bin/python -m benchmarks.observability_bench --before PATH [--rounds 3] [--duration 10]

Servers, one worker each, rounds alternating so that machine drift hits each alike:

(a) ``--before PATH``: a checkout of the code before these features, its own store trained
    by its own code, default settings;
(b) this code, default settings: drift counting on (a schema-4 model), trace context read
    on every request, no exporter and no payload log;
(c) (b) plus payload logging at 10% sampling to a live local sink (``benchmarks.sink``, its
    own process) and spans exported over OTLP to the same sink at the default 1% ratio;
(d) as (c) with payload logging at 100%.

Each round: wrk -t1 single-row ``POST /predict`` (req/s, and the worker's own CPU time per
call) and six 100,000-row V2 binary-tensor
requests (rows/s of the median of the last five). Targets: (c) >= 0.95x (a) single-row and
>= 0.9x (a) for 100k-row V2 binary. Then a dead sink: (e) payload logging at 100% to a port
nobody listens on, under wrk for ``--dead-seconds``, the worker's resident memory sampled
every chunk, its rate against (b)'s in the same part, and the events' outcomes.
Compare ratios: absolute numbers drift.

With two or more CPUs (unless ``--no-pin``) every server runs on the last CPU and wrk, the
sink and this process on the first: on a 2-core machine unpinned, the three share both
cores, a busy sink takes throughput from the worker without costing it anything, and
rounds of the same server differed by a third.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from benchmarks.service_bench import ROOT, SINGLE, V2_INFER, bulk_bodies, bulk_rows_per_s, run_wrk, wrk_script
from devtools.served import free_port, launch, serving_home, stop, wait_ready, worker_rss_mb

BEFORE, DEFAULT, TEN, ALL = (
    "(a) before",
    "(b) now, defaults",
    "(c) now, payload log 10% + spans 1%",
    "(d) now, payload log 100% + spans 1%",
)


def train(root: Path, store: Path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(store), "BENTOML_DO_NOT_TRACK": "true"}
    subprocess.run([sys.executable, "-m", "training", "--quiet"], cwd=root, env=env, check=True)


def serve(
    root: Path, store: Path, where: Path, env_extra: dict[str, str], core: int | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CROP_YIELD_"))},
        "BENTOML_HOME": str(serving_home(store, where)),
        "BENTOML_DO_NOT_TRACK": "true",
        "CROP_YIELD_HOST": "127.0.0.1",
        "CROP_YIELD_PORT": str(port),
        "CROP_YIELD_GRPC_PORT": str(free_port()),
        **env_extra,
    }
    log = where / "service.log"
    where.mkdir(parents=True, exist_ok=True)
    process = launch([sys.executable, "-m", "service"], env, log, cwd=root)  # root's packages
    url = f"http://127.0.0.1:{port}"
    wait_ready(process, url, log)
    if core is not None:
        pin(process, core)
    return process, url


def pin(process: subprocess.Popen[bytes], core: int) -> None:
    """Every thread of the server's processes on ``core`` (threads started later inherit it)."""
    parent = psutil.Process(process.pid)
    for member in [parent, *parent.children(recursive=True)]:
        for thread in member.threads():
            with contextlib.suppress(ProcessLookupError):  # a thread that has ended since
                os.sched_setaffinity(thread.id, {core})


def worker_of(process: subprocess.Popen[bytes]) -> psutil.Process:
    """The server's worker: its process with the most memory (it holds the model)."""
    parent = psutil.Process(process.pid)
    return max([parent, *parent.children(recursive=True)], key=lambda p: p.memory_info().rss)


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def payload_outcomes(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found: dict[str, float] = {}
    for outcome, value in re.findall(
        r'crop_yield_payload_events_total\{[^}]*outcome="(\w+)"[^}]*\} (\S+)', text
    ):
        found[outcome] = found.get(outcome, 0.0) + float(value)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the code to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk per server per round")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--dead-seconds", type=int, default=60)
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="let the servers share every CPU")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    core = cores[-1] if args.pin and len(cores) >= 2 else None
    if core is not None:  # this process, and what it starts: the sink, wrk
        os.sched_setaffinity(0, {cores[0]})
    tmp = Path(tempfile.mkdtemp(prefix="observability-bench-"))
    sink_port = free_port()
    sink = launch(
        [sys.executable, "-m", "benchmarks.sink", str(sink_port)],
        dict(os.environ),
        tmp / "sink.log",
        cwd=ROOT,
    )
    sink_url = f"http://127.0.0.1:{sink_port}"
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        train(args.before.resolve(), tmp / "before-store")
        train(ROOT, tmp / "store")
        time.sleep(1)  # the sink is up by now
        exported = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink_url}
        servers[BEFORE] = serve(args.before.resolve(), tmp / "before-store", tmp / "a", {}, core)
        servers[DEFAULT] = serve(ROOT, tmp / "store", tmp / "b", {}, core)
        servers[TEN] = serve(
            ROOT,
            tmp / "store",
            tmp / "c",
            {**exported, "CROP_YIELD_PAYLOAD_LOG_URL": sink_url, "CROP_YIELD_PAYLOAD_LOG_SAMPLE": "0.1"},
            core,
        )
        servers[ALL] = serve(
            ROOT, tmp / "store", tmp / "d", {**exported, "CROP_YIELD_PAYLOAD_LOG_URL": sink_url}, core
        )
        script = wrk_script(tmp / "single.lua", {"inputs": SINGLE["inputs"]})
        _, binary, headers = bulk_bodies()["v2_binary"]
        workers = {name: worker_of(process) for name, (process, _) in servers.items()}
        cpu_us: dict[str, list[float]] = {name: [] for name in servers}
        single: dict[str, list[float]] = {name: [] for name in servers}
        p99: dict[str, list[float]] = {name: [] for name in servers}
        bulk: dict[str, list[float]] = {name: [] for name in servers}
        failed: dict[str, int] = dict.fromkeys(servers, 0)
        for _ in range(args.rounds):
            for name, (_, url) in servers.items():
                before_cpu = cpu_seconds(workers[name])
                result = run_wrk(url, script, args.connections, args.duration)
                # the worker's own CPU per call: what a feature costs it, whatever else (wrk,
                # the sink) takes the machine's two cores from it
                cpu_us[name].append(
                    (cpu_seconds(workers[name]) - before_cpu) / (result.rps * (args.duration + 3)) * 1e6
                )
                single[name].append(result.rps)
                p99[name].append(result.p99_ms)
                failed[name] += result.non_2xx + result.errors
                bulk[name].append(bulk_rows_per_s(url, V2_INFER, binary, headers))
        outcomes = {name: payload_outcomes(url) for name, (_, url) in servers.items() if name in (TEN, ALL)}
        rss = {name: worker_rss_mb(process) for name, (process, _) in servers.items()}
        for name in (TEN, ALL):
            stop(servers.pop(name)[0])
        dead_url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
        dead = serve(ROOT, tmp / "store", tmp / "e", {"CROP_YIELD_PAYLOAD_LOG_URL": dead_url}, core)
        servers["(e) dead sink"] = dead
        chunk = 10
        dead_rates, dead_rss, default_rates = [], [worker_rss_mb(dead[0])], []
        for _ in range(max(1, args.dead_seconds // chunk)):
            dead_rates.append(run_wrk(dead[1], script, args.connections, chunk).rps)
            dead_rss.append(worker_rss_mb(dead[0]))
            default_rates.append(run_wrk(servers[DEFAULT][1], script, args.connections, chunk).rps)
        dead_outcomes = payload_outcomes(dead[1])
        default_rss = worker_rss_mb(servers[DEFAULT][0])
    finally:
        for process, _ in servers.values():
            stop(process)
        stop(sink)

    where = "unpinned" if core is None else f"servers on CPU {core}, wrk and the sink on CPU {cores[0]}"
    print(
        f"machine: {os.cpu_count()} CPUs ({where}); one worker each; "
        f"wrk -t1 -c{args.connections} -d{args.duration}s "
        f"after 3 s warm-up, {args.rounds} rounds alternating; 100k-row V2 binary: median of 5\n"
    )
    base_single = statistics.median(single[BEFORE])
    base_bulk = statistics.median(bulk[BEFORE])
    print(
        "| server | single-row req/s (median) | ratio | worker CPU µs per call | ratio | p99 "
        "| 100k V2 binary rows/s | ratio | non-2xx | worker RSS |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    base_cpu = statistics.median(cpu_us[BEFORE])
    for name in single:
        s, b = statistics.median(single[name]), statistics.median(bulk[name])
        c = statistics.median(cpu_us[name])
        print(
            f"| {name} | {s:,.0f} | {s / base_single:.3f} | {c:.0f} | {c / base_cpu:.3f} "
            f"| {statistics.median(p99[name]):.1f} ms "
            f"| {b:,.0f} | {b / base_bulk:.3f} | {failed[name]} | {rss[name]:.0f} MB |"
        )
    print()
    for name, found in outcomes.items():
        print(f"payload events {name}: " + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(found.items())))
    print(
        f"\ndead sink, payload log 100%, {len(dead_rates)} x {chunk} s of wrk, alternating with (b): "
        f"req/s {', '.join(f'{r:,.0f}' for r in dead_rates)} against (b) "
        f"{', '.join(f'{r:,.0f}' for r in default_rates)} "
        f"(ratio {statistics.median(dead_rates) / statistics.median(default_rates):.3f}); worker RSS MB "
        + " → ".join(f"{m:.0f}" for m in dead_rss)
        + f" ((b) after the same load: {default_rss:.0f} MB); events: "
        + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(dead_outcomes.items()))
    )


if __name__ == "__main__":
    main()

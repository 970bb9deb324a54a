"""Training benchmark: figures for the issue notes, measured side by side in one run.

    .venv/bin/python benchmarks/training_bench.py [--rows 1000000] [--repeats 5]

1. The default fit in process (built-in 15 rows) against seed 004's own recipe
   (raw features, lr 1e-5, batch 5): time and optimality gap of each.
2. The whole ``python -m training`` process against the bare import of torch + bentoml.
3. A synthetic CSV of --rows rows (known weights plus N(0, 1) noise): wall time and peak
   resident memory of ``python -m training --data``, and how close the saved weights are
   to the known ones; the closed-form least squares on the same rows as the baseline.

Targets (issue 2): fit < 2 s, process < 10 s, 1M rows < 60 s and < 2 GB, weights within 1%.
Absolute times depend on the machine; compare the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file
from torch.utils.data import DataLoader, TensorDataset

from contract import FEATURE_NAMES, TARGET_NAMES, WEIGHTS_FILE
from training.data import load_builtin
from training.evaluation import least_squares, mse, optimality_gap
from training.fit import FitConfig, fit_linear
from training.pipeline import auto_batch_size

ROOT = Path(__file__).resolve().parents[1]

TRUE_WEIGHT = np.array([[-0.4, 0.85, 0.7], [-0.7, 0.6, 1.1]])
TRUE_BIAS = np.array([20.0, 30.0])


def seed_004_recipe(x: torch.Tensor, y: torch.Tensor, epochs: int) -> torch.nn.Linear:
    """The tutorial's loop, verbatim apart from the epoch count."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1e-5)
    loader = DataLoader(TensorDataset(x, y), 5, shuffle=True)
    for _ in range(epochs):
        for xb, yb in loader:
            loss = F.mse_loss(model(xb), yb)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            opt.zero_grad()
    return model


def gap_of(model: torch.nn.Linear, x: torch.Tensor, y: np.ndarray, optimal: float) -> float:
    """Gap of the model's weights, evaluated in float64 as the pipeline does."""
    with torch.no_grad():
        pred = x.double() @ model.weight.double().T + model.bias.double()
    return optimality_gap(mse(pred.numpy(), y), optimal, y)


def timed(fn, repeats: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def bench_fit(repeats: int) -> None:
    data = load_builtin(FEATURE_NAMES, TARGET_NAMES)
    x = torch.as_tensor(data.features, dtype=torch.float32)
    y = torch.as_tensor(data.targets, dtype=torch.float32)
    optimal = mse(least_squares(data.features, data.targets).predict(data.features), data.targets)
    print("## 1. Fit on the built-in 15 rows (in process)")
    print("| fit | time | epochs | optimality gap |")
    print("|---|---|---|---|")
    # The first fit in a process also pays torch's lazy imports (torch.optim pulls in
    # torch._dynamo, ~0.8 s), which is what `python -m training` sees.
    for label, runs in (("first fit in the process", 1), (f"median of {repeats} more", repeats)):
        seconds, result = timed(lambda: fit_linear(x, y, FitConfig(batch_size=auto_batch_size(len(x)))), runs)
        print(
            f"| ours ({label}): whitened SGD, lr 0.1, full batch (15), gradient stop | {seconds:.3f} s "
            f"| {result.epochs_run} | {gap_of(result.model, x, data.targets, optimal):.2e} |"  # type: ignore[attr-defined]
        )
    for epochs in (100, 10_000):
        seconds, model = timed(lambda e=epochs: seed_004_recipe(x, y, e), 1)  # type: ignore[misc]
        print(
            f"| seed 004 recipe: raw SGD, lr 1e-5, batch 5 | {seconds:.3f} s | {epochs} "
            f"| {gap_of(model, x, data.targets, optimal):.2e} |"  # type: ignore[arg-type]
        )


def run_measured(
    cmd: list[str], env: dict[str, str]
) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Wall seconds and peak RSS (MiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    code = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, subprocess.CompletedProcess(cmd, code, out, err)


def bench_process(home: Path, repeats: int) -> None:
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    print("\n## 2. Whole process (median of", repeats, "runs)")
    print("| command | wall | peak RSS |")
    print("|---|---|---|")
    rows = {
        "python -c 'import torch, bentoml' (import floor)": [sys.executable, "-c", "import torch, bentoml"],
        "python -m training --quiet": [sys.executable, "-m", "training", "--quiet"],
    }
    for label, cmd in rows.items():
        runs = [run_measured(cmd, env) for _ in range(repeats)]
        for _, _, done in runs:
            if done.returncode != 0:
                raise SystemExit(f"{label} failed:\n{done.stderr}")
        print(
            f"| {label} | {statistics.median(r[0] for r in runs):.2f} s | {max(r[1] for r in runs):.0f} MiB |"
        )


def bench_large(home: Path, rows: int, workdir: Path) -> None:
    rng = np.random.default_rng(42)
    x = rng.uniform([55, 30, 25], [110, 150, 80], size=(rows, 3))
    y = x @ TRUE_WEIGHT.T + TRUE_BIAS + rng.normal(0, 1, size=(rows, 2))
    path = workdir / "large.csv"
    start = time.perf_counter()
    np.savetxt(
        path,
        np.column_stack([x, y]),
        fmt="%.4f",
        delimiter=",",
        header=",".join([*FEATURE_NAMES, *TARGET_NAMES]),
        comments="",
    )
    size_mb, written_s = path.stat().st_size / 1e6, time.perf_counter() - start
    print(f"\n## 3. {rows:,}-row CSV ({size_mb:.0f} MB, written in {written_s:.1f} s)")

    start = time.perf_counter()
    table = np.loadtxt(path, delimiter=",", skiprows=1)
    ls = least_squares(table[:, :3], table[:, 3:])
    baseline = time.perf_counter() - start
    del table

    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    wall, peak, done = run_measured([sys.executable, "-m", "training", "--data", str(path)], env)
    if done.returncode != 0:
        raise SystemExit(f"training failed:\n{done.stderr}")
    name, version = done.stdout.strip().split(":")
    weights = load_file(str(home / "models" / name / version / WEIGHTS_FILE))
    w_err = np.max(np.abs(weights["weight"] - TRUE_WEIGHT) / np.abs(TRUE_WEIGHT))
    ls_err = np.max(np.abs(ls.weight - TRUE_WEIGHT) / np.abs(TRUE_WEIGHT))
    b_err = np.max(np.abs(weights["bias"] - TRUE_BIAS) / np.abs(TRUE_BIAS))
    print("| run | wall | peak RSS | max relative weight error | max relative bias error |")
    print("|---|---|---|---|---|")
    print(f"| python -m training --data (SGD) | {wall:.1f} s | {peak:.0f} MiB | {w_err:.3%} | {b_err:.3%} |")
    ls_b_err = np.max(np.abs(ls.bias - TRUE_BIAS) / np.abs(TRUE_BIAS))
    label = "baseline: np.loadtxt + closed-form lstsq, in process"
    print(f"| {label} | {baseline:.1f} s | - | {ls_err:.3%} | {ls_b_err:.3%} |")
    print("\ntraining report:\n" + done.stderr.strip())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    with tempfile.TemporaryDirectory(prefix="training-bench-") as tmp:
        home = Path(tmp) / "bentoml"
        bench_fit(args.repeats)
        bench_process(home, args.repeats)
        bench_large(home, args.rows, Path(tmp))


if __name__ == "__main__":
    main()

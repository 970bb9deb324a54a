"""What ground truth shows for a healthy model: live RMSE and interval coverage from the counters.

    .venv/bin/python -m benchmarks.feedback_demo [--rows 500] [--seed 0] [--shift 0]

Trains the default model (seed 004's 15 regions) into a temporary store, serves it, and sends
``--rows`` rows of feedback to ``POST /feedback`` in calls of 100: regions drawn like the
training data (a normal distribution with the training rows' means and covariance, clipped
to the training range) and yields from the least-squares fit of those rows plus normal
noise with each target's residual standard deviation (the metadata's ``intervals``), i.e.
new seasons like the training ones. ``--shift`` adds that many t/ha to every observed yield
(a season unlike the training ones). Then it reads ``/metrics`` and prints, per target, what
the rules of ``deploy/monitoring/rules.yml`` compute from the ``crop_yield_feedback_*``
counters (live RMSE, MAE, bias, 90% and 95% coverage, the live over training RMSE ratio)
and whether CropYieldLiveErrorHigh and CropYieldIntervalCoverageLow would fire.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import numpy as np
import yaml
from prometheus_client.parser import text_string_to_metric_families

from contract import FEATURE_NAMES, TARGET_NAMES
from contract.metadata import read_metadata
from devtools.served import start_service, stop
from training.data import load_builtin

ROOT = Path(__file__).resolve().parents[1]
BATCH = 100
RMSE_FACTOR = 1.5  # CropYieldLiveErrorHigh
MIN_COVERAGE = 0.9  # CropYieldIntervalCoverageLow (95% intervals)
MIN_ROWS = 100  # both alerts


def draw(rows: int, seed: int, residual_std: np.ndarray, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """(features rows×3, observed yields rows×2) drawn like seed 004's training data."""
    data = load_builtin(FEATURE_NAMES, TARGET_NAMES)
    x, y = data.features, data.targets
    design = np.column_stack([np.ones(len(x)), x])
    coefficients, *_ = np.linalg.lstsq(design, y, rcond=None)
    rng = np.random.default_rng(seed)
    features = rng.multivariate_normal(x.mean(axis=0), np.cov(x, rowvar=False), size=rows)
    features = np.clip(features, x.min(axis=0), x.max(axis=0)).round(2)
    truth = np.column_stack([np.ones(rows), features]) @ coefficients
    observed = truth + rng.normal(0.0, residual_std, size=truth.shape) + shift
    return features, np.clip(observed, 0.0, None).round(3)


def counters(url: str, version: str) -> dict[tuple[str, str, str], float]:
    """(metric, target, level or sign) → value, for the version's feedback and training RMSE."""
    found: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("version") == version and "target" in labels:
                extra = labels.get("level") or labels.get("sign") or ""
                found[(sample.name, labels["target"], extra)] = sample.value
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shift", type=float, default=0.0, help="t/ha added to every observed yield")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="feedback-demo-") as tmp:
        store = Path(tmp)
        trained = subprocess.run(
            [sys.executable, "-m", "training", "--quiet"],
            cwd=ROOT,
            env={**os.environ, "BENTOML_HOME": str(store), "BENTOML_DO_NOT_TRACK": "true"},
            capture_output=True,
            text=True,
            check=True,
        )
        tag = trained.stdout.strip()
        name, version = tag.split(":")
        raw = yaml.safe_load((store / "models" / name / version / "model.yaml").read_text())
        metadata = read_metadata(raw["metadata"], tag)
        assert metadata.intervals is not None
        residual_std = np.sqrt([metadata.intervals.residual_variance[t] for t in TARGET_NAMES])
        features, observed = draw(args.rows, args.seed, residual_std, args.shift)
        process, url, _ = start_service(store, store / "service.log", store)
        try:
            for start in range(0, args.rows, BATCH):
                body = {
                    "inputs": [
                        dict(zip(FEATURE_NAMES, row, strict=True))
                        for row in features[start : start + BATCH].tolist()
                    ],
                    "actuals": [
                        dict(zip(TARGET_NAMES, row, strict=True))
                        for row in observed[start : start + BATCH].tolist()
                    ],
                }
                httpx.post(f"{url}/feedback", json=body, timeout=30).raise_for_status()
            found = counters(url, version)
        finally:
            stop(process)
    print(f"model {tag}: {args.rows} feedback rows, seed {args.seed}, shift {args.shift:g} t/ha")
    spread = ", ".join(f"{t} {s:.3f}" for t, s in zip(TARGET_NAMES, residual_std, strict=True))
    print(f"residual std (metadata, the noise drawn): {spread} t/ha")
    print("target   rows  train RMSE  live RMSE  ratio   MAE    bias   cover 90  cover 95  alerts")
    for target in TARGET_NAMES:
        n = found[("crop_yield_feedback_rows_total", target, "")]
        rmse = np.sqrt(found[("crop_yield_feedback_squared_error_total", target, "")] / n)
        mae = found[("crop_yield_feedback_absolute_error_total", target, "")] / n
        bias = (
            found[("crop_yield_feedback_error_total", target, "positive")]
            - found[("crop_yield_feedback_error_total", target, "negative")]
        ) / n
        cover = {
            level: found[("crop_yield_feedback_inside_interval_total", target, level)] / n
            for level in ("0.9", "0.95")
        }
        training = found[("crop_yield_model_training_rmse", target, "")]
        firing = [
            alert
            for alert, condition in (
                ("CropYieldLiveErrorHigh", rmse / training > RMSE_FACTOR),
                ("CropYieldIntervalCoverageLow", cover["0.95"] < MIN_COVERAGE),
            )
            if condition and n >= MIN_ROWS
        ]
        print(
            f"{target:8} {n:5.0f}  {training:10.3f}  {rmse:9.3f}  {rmse / training:5.2f}  {mae:5.3f}  "
            f"{bias:+6.3f}  {cover['0.9']:8.3f}  {cover['0.95']:8.3f}  {', '.join(firing) or 'none'}"
        )


if __name__ == "__main__":
    main()

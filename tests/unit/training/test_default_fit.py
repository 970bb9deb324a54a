"""The default fit reaches the least-squares optimum on any sensible data: a sweep of
generated datasets through the training pipeline (in process, nothing saved)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools import synthetic
from training.data import min_rows
from training.fit import FitResult
from training.pipeline import (
    MAX_AUTO_BATCH,
    QualityGateError,
    TrainOptions,
    auto_batch_size,
    gate_hints,
    train,
)

pytestmark = pytest.mark.unit

SIZES = [min_rows(3), 6, 8, 10, 12, 16, 30, 60, 200, 1000, 5000]
SEEDS = [0, 1, 2]


@pytest.mark.parametrize("kind", synthetic.KINDS)
def test_every_generated_dataset_passes_the_gate_with_defaults(kind: str, tmp_path: Path) -> None:
    gaps = []
    for rows in SIZES:
        for seed in SEEDS:
            data = synthetic.make(kind, rows, seed).write_csv(tmp_path / f"{rows}-{seed}.csv")
            try:
                outcome = train(TrainOptions(data=data, save=False))
            except QualityGateError as exc:  # pragma: no cover - the failure being tested for
                pytest.fail(f"{kind}, {rows} rows, seed {seed}: {exc}")
            gaps.append(outcome.metadata.fit.optimality_gap)
    assert len(gaps) == len(SIZES) * len(SEEDS)
    assert max(gaps) <= TrainOptions().max_gap


def test_default_batches() -> None:
    assert auto_batch_size(15) == 15  # full batch: no SGD noise on small data
    assert auto_batch_size(1_000_000) == MAX_AUTO_BATCH


def test_gate_hints_name_what_helps() -> None:
    stopped = FitResult(model=None, losses=[1.0], epochs_run=5, converged=False)  # type: ignore[arg-type]
    converged = FitResult(model=None, losses=[1.0], epochs_run=3, converged=True)  # type: ignore[arg-type]
    hint = gate_hints(TrainOptions(batch_size=2, lr=0.5, standardize=False, epochs=5), stopped, rows=100)
    assert "--no-standardize" in hint
    assert "a larger --batch-size, or none" in hint
    assert "the default --lr 0.1" in hint
    assert "more --epochs (all 5 ran)" in hint
    assert "--epochs" not in gate_hints(TrainOptions(batch_size=2), converged, rows=100)
    assert "report this data set" in gate_hints(TrainOptions(), converged, rows=100)
    assert "--max-gap of at least 1e-6" in gate_hints(TrainOptions(max_gap=1e-9), converged, rows=100)

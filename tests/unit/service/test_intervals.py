"""Prediction intervals (service.inference.intervals) from what training records, against statsmodels'
OLS intervals and against the truth on data with known noise; and the extrapolation box."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import statsmodels.api as sm

from contract.metadata import IntervalBasis
from devtools import synthetic
from service.inference.intervals import BOUND_NAMES, Intervals, t_quantile
from service.inference.training_range import TrainingBox
from service.rest.encoding import outside_features, outside_rows
from training.pipeline import TrainOptions, TrainOutcome, train

pytestmark = pytest.mark.unit

LEVELS = [0.5, 0.9, 0.95, 0.999]


def trained(data: Path | None) -> tuple[TrainOutcome, np.ndarray, np.ndarray]:
    """A dry-run training on ``data`` (None: seed 004's 15 rows) and its training rows."""
    outcome = train(TrainOptions(data=data, save=False, holdout_fraction=0.0))
    if data is None:
        from training.data import load_builtin

        dataset = load_builtin(("temperature", "rainfall", "humidity"), ("apples", "oranges"))
        return outcome, dataset.features, dataset.targets
    table = np.loadtxt(data, delimiter=",", skiprows=1)
    return outcome, table[:, :3], table[:, 3:]


def served_outputs(outcome: TrainOutcome, rows: np.ndarray) -> np.ndarray:
    """What the service predicts: the saved float32 weights on float32 rows."""
    weight = outcome.fit.model.weight.detach().numpy()
    bias = outcome.fit.model.bias.detach().numpy()
    return rows.astype(np.float32) @ weight.T + bias


@pytest.mark.parametrize("source", ["seed-004", "near_duplicates-12", "collinear-40", "scales-300"])
def test_bounds_equal_statsmodels_observation_intervals(source: str, tmp_path: Path) -> None:
    if source == "seed-004":
        data = None
    else:
        kind, rows = source.split("-")
        data = synthetic.make(kind, int(rows), seed=3).write_csv(tmp_path / "data.csv")
    outcome, features, targets = trained(data)
    assert outcome.metadata.intervals is not None
    intervals = Intervals(outcome.metadata.intervals, "crop_yield:test")
    new = np.vstack([features[:5], features.mean(axis=0), features.max(axis=0) * 1.3])
    outputs = served_outputs(outcome, new)
    for level in LEVELS:
        ours = intervals.bounds(new.astype(np.float32), outputs, level)
        for j, target in enumerate(("apples", "oranges")):
            ols = sm.OLS(targets[:, j], sm.add_constant(features)).fit()
            frame = ols.get_prediction(sm.add_constant(new, has_constant="add")).summary_frame(
                alpha=1 - level
            )
            half = (frame["obs_ci_upper"] - frame["obs_ci_lower"]).to_numpy() / 2
            ours_half = intervals.half_widths(new.astype(np.float32), level)[:, j]
            # the widths: the same formula, from the saved model's residuals (within its gap)
            np.testing.assert_allclose(ours_half, half, rtol=1e-4)
            # the bounds: the served prediction ± that width, in float32 like the prediction
            np.testing.assert_allclose(ours[f"{target}_lower"], outputs[:, j] - ours_half, rtol=1e-6)
            np.testing.assert_allclose(ours[f"{target}_upper"], outputs[:, j] + ours_half, rtol=1e-6)
            # and the served prediction is within 2% of the row's half-width of OLS's own (the
            # fit's distance from the optimum, held below --max-gap by the gate)
            shift = np.abs(outputs[:, j] - frame["mean"].to_numpy()) / half
            assert shift.max() <= 2e-2, (level, target, shift)


def test_95_percent_intervals_cover_95_percent_of_new_truths(tmp_path: Path) -> None:
    data = synthetic.make("well", 1000, seed=5, noise=2.0)
    outcome, _, _ = trained(data.write_csv(tmp_path / "data.csv"))
    rng = np.random.default_rng(6)
    held_out = synthetic.features_of("well", 2000, rng)
    truth = held_out @ data.weight.T + data.bias + rng.normal(0, data.noise, size=(2000, 2))
    assert outcome.metadata.intervals is not None
    bounds = Intervals(outcome.metadata.intervals, "t").bounds(
        held_out.astype(np.float32), served_outputs(outcome, held_out), 0.95
    )
    for j, target in enumerate(("apples", "oranges")):
        covered = (bounds[f"{target}_lower"] <= truth[:, j]) & (truth[:, j] <= bounds[f"{target}_upper"])
        assert 0.93 <= covered.mean() <= 0.97, (target, covered.mean())


def test_t_quantiles() -> None:
    assert t_quantile(0.95, 10) == pytest.approx(2.2281389, rel=1e-7)
    assert t_quantile(0.5, 1) == pytest.approx(1.0, rel=1e-12)
    assert t_quantile(0.95, 10**9) == pytest.approx(1.959964, rel=1e-6)


def test_bound_names_and_the_no_basis_case() -> None:
    assert BOUND_NAMES == ("apples_lower", "apples_upper", "oranges_lower", "oranges_upper")
    basis = IntervalBasis(
        rows=5, dof=1, residual_variance={"apples": 4.0, "oranges": 0.0}, xtx_inverse=np.eye(4).tolist()
    )
    half = Intervals(basis, "t").half_widths(np.zeros((1, 3), np.float32), 0.5)
    np.testing.assert_allclose(half, [[2.0 * np.sqrt(2.0), 0.0]])  # t(0.75, 1) = 1; sqrt(1 + 1)


def test_training_box_flags_rows_outside_in_float32() -> None:
    box = TrainingBox([(68.1, 103.0), (0.0, 100.0), (40.0, 60.0)])
    rows = np.array([[68.1, 0.0, 60.0], [68.0, 50.0, 61.0], [104.0, -1.0, 50.0]], dtype=np.float32)
    outside = box.outside(rows)
    assert outside.tolist() == [[False, False, False], [True, False, True], [True, True, False]]
    assert outside_features(outside) == [[], ["temperature", "humidity"], ["temperature", "rainfall"]]
    assert {k: v.tolist() for k, v in outside_rows(outside).items()} == {
        "temperature": [1, 2],
        "rainfall": [2],
        "humidity": [1],
    }

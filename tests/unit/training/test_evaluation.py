"""The least-squares reference, the optimality gap, metrics and the holdout split."""

from __future__ import annotations

import numpy as np
import pytest

from contract import FEATURE_NAMES, TARGET_NAMES
from tests.helpers import SEED_004_QUERY
from training.data import load_builtin
from training.evaluation import least_squares, mse, optimality_gap, per_target_metrics, split_holdout


def test_least_squares_matches_numpy_polyfit() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 1)) * 5 + 80
    y = 2.5 * x - 7 + rng.normal(size=(40, 1))
    slope, intercept = np.polyfit(x[:, 0], y[:, 0], 1)
    ls = least_squares(x, y)
    assert ls.weight[0, 0] == pytest.approx(slope, rel=1e-10)
    assert ls.bias[0] == pytest.approx(intercept, rel=1e-10)


def test_least_squares_on_seed_004_gives_the_reference_prediction() -> None:
    data = load_builtin(FEATURE_NAMES, TARGET_NAMES)
    ls = least_squares(data.features, data.targets)
    apples, oranges = ls.predict(np.array([SEED_004_QUERY]))[0]
    assert apples == pytest.approx(53.80, abs=0.005)
    assert oranges == pytest.approx(66.81, abs=0.005)
    # notes/performance.md: the optimum MSE of seed 004 is 0.909
    assert mse(ls.predict(data.features), data.targets) == pytest.approx(0.909, abs=5e-4)


def test_gap_is_relative_to_the_optimum() -> None:
    targets = np.arange(10.0).reshape(-1, 1)
    assert optimality_gap(1.01, 1.0, targets) == pytest.approx(0.01)
    assert optimality_gap(1.0, 1.0, targets) == 0.0


def test_gap_on_exactly_linear_data_does_not_divide_by_zero() -> None:
    targets = np.arange(10.0).reshape(-1, 1)  # variance 8.25
    gap = optimality_gap(8.25e-9, 0.0, targets)
    assert gap == pytest.approx(1.0)


def test_metrics_per_target() -> None:
    targets = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    predictions = targets + np.array([[0.0, 1.0], [0.0, -1.0], [0.0, 1.0]])
    metrics = per_target_metrics(predictions, targets, ["a", "b"])
    assert metrics["a"] == {"mse": 0.0, "rmse": 0.0, "r2": 1.0}
    assert metrics["b"]["mse"] == pytest.approx(1.0)
    assert metrics["b"]["rmse"] == pytest.approx(1.0)
    assert metrics["b"]["r2"] == pytest.approx(1 - 1.0 / np.var([10.0, 20.0, 30.0]))


def test_holdout_only_with_enough_rows() -> None:
    train, holdout = split_holdout(15, 0.2, 50, seed=0)
    assert holdout is None
    assert train.tolist() == list(range(15))

    train, holdout = split_holdout(100, 0.2, 50, seed=0)
    assert holdout is not None
    assert len(holdout) == 20
    assert len(train) == 80
    assert sorted([*train, *holdout]) == list(range(100))
    again, _ = split_holdout(100, 0.2, 50, seed=0)
    assert again.tolist() == train.tolist()


def test_r2_of_a_constant_target_is_left_out_not_nan() -> None:
    targets = np.array([[5.0], [5.0], [5.0]])
    metrics = per_target_metrics(targets + 0.1, targets, ["flat"])
    assert "r2" not in metrics["flat"]
    assert metrics["flat"]["mse"] == pytest.approx(0.01)

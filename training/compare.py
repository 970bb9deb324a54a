"""Champion and challenger: how a new fit is evaluated against an existing model, and when
it counts as worse.

Both models are scored on the same rows, and the point is that they are scored alike: a
model scored on rows it was trained on looks better than on rows it was not (the MSE
ratio is about (n + p) / (n - p) for n rows and p coefficients: the default fit of the 15
built-in rows has a leave-one-out MSE 79% (apples) and 98% (oranges) above its in-sample
MSE), so mixing the two would decide the comparison by the evaluation, not by the models.
Which rows allow that depends on whether the champion was trained on this very data file
(the SHA-256 its metadata records equals this data's, ``same_data``):

- different data (the normal case: a new harvest): the champion has not seen these rows,
  so the challenger is judged out-of-sample too (``evaluation_plan``): the holdout split
  of 200 rows or more (the saved model is the one judged), every row by k-fold
  cross-validation below (leave-one-out below 20 rows; the saved model is then fitted on
  every row);
- the same data, and the champion was fitted on every row: the challenger's saved model is
  fitted on every row as well and both are scored in-sample on all of them
  (``in_sample_same_data``). Out-of-sample figures for the challenger against in-sample
  ones for the champion would refuse a retrain that is exactly as good;
- the same data, and the champion held rows out, which this run holds out too (the same
  --seed and --holdout-fraction split the same rows): both are fitted on the other rows and
  scored out-of-sample on those (``holdout_same_data``), whatever the row count;
- the same data, but the rows the champion was fitted on are not known here or differ from
  this run's split: the out-of-sample plan of different data, and the report says the
  champion's figures may be partly in-sample.

The figures per target are MSE, MAE, bias and the coverage of 90% and 95% prediction
intervals; the challenger is worse when its MSE on any target exceeds the champion's by
more than ``max_regression`` (relative). Pure numpy: the fits and the champion's
predictions are handed in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from contract.metadata import Comparison, TargetEvaluation
from training.evaluation import interval_half_widths, interval_statistics

COVERAGE_LEVELS = (0.90, 0.95)
"""Prediction-interval levels whose coverage is compared."""
HOLDOUT_FROM_ROWS = 200
"""From here on the holdout split (20% by default: 40 rows or more) evaluates the comparison;
below, a holdout is too small to tell a 5% MSE difference, so every row is cross-validated."""
LEAVE_ONE_OUT_BELOW_ROWS = 20
"""Below this, leave-one-out: 5-fold figures of the 15-row built-in data moved by up to 25%
(apples MSE 1.54 to 1.95) with the seed's fold assignment alone; one fit per row is cheap here."""
FOLDS = 5


class ChallengerWorseError(RuntimeError):
    """The new fit is worse than the model it was compared with; nothing was saved."""

    def __init__(self, comparison: Comparison, champion: str, folds: int | None, message: str) -> None:
        super().__init__(message)
        self.comparison, self.champion, self.folds = comparison, champion, folds


Evaluation = Literal["holdout", "cross_validation", "in_sample_same_data", "holdout_same_data"]


@dataclass(frozen=True)
class EvaluationPlan:
    evaluation: Evaluation
    folds: int | None
    """k of k-fold cross-validation (the row count for leave-one-out); None otherwise."""


IN_SAMPLE_SAME_DATA = EvaluationPlan("in_sample_same_data", None)
"""Same data as a champion fitted on every row: both fitted on, and scored on, every row."""
HOLDOUT_SAME_DATA = EvaluationPlan("holdout_same_data", None)
"""Same data and split as the champion: both scored on the rows both held out."""


def evaluation_plan(rows: int, holdout_fraction: float) -> EvaluationPlan:
    """The out-of-sample plan, for a champion that was not trained on these rows."""
    if rows >= HOLDOUT_FROM_ROWS and round(rows * holdout_fraction) > 0:
        return EvaluationPlan("holdout", None)
    return EvaluationPlan("cross_validation", rows if rows < LEAVE_ONE_OUT_BELOW_ROWS else FOLDS)


def kfold_indices(rows: int, folds: int, seed: int) -> list[np.ndarray]:
    """Disjoint, sorted index sets covering ``range(rows)``, sizes differing by at most one."""
    order = np.random.default_rng(seed).permutation(rows)
    return [np.sort(part) for part in np.array_split(order, folds)]


@dataclass(frozen=True)
class Predictions:
    values: np.ndarray
    """n×targets, float64."""
    bounds: dict[float, tuple[np.ndarray, np.ndarray]] | None
    """Per level of ``COVERAGE_LEVELS``: (lower, upper), each n×targets; None without intervals."""


def with_bounds(
    values: np.ndarray, rows: np.ndarray, xtx_inverse: np.ndarray, residual_variance: np.ndarray, dof: int
) -> Predictions:
    """Predictions with the intervals the service would give for them."""
    bounds = {}
    for level in COVERAGE_LEVELS:
        half = interval_half_widths(xtx_inverse, residual_variance, dof, rows, level)
        bounds[level] = (values - half, values + half)
    return Predictions(values, bounds)


Fit = Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]
"""Fits (features, targets) and returns the fitted model's float64 predict function."""


def out_of_fold(features: np.ndarray, targets: np.ndarray, folds: list[np.ndarray], fit: Fit) -> Predictions:
    """Each fold predicted (with intervals) by a fit on the other folds."""
    values = np.empty_like(targets, dtype=np.float64)
    lower = {level: np.empty_like(values) for level in COVERAGE_LEVELS}
    upper = {level: np.empty_like(values) for level in COVERAGE_LEVELS}
    for held in folds:
        train = np.setdiff1d(np.arange(len(features)), held)
        predict = fit(features[train], targets[train])
        stats = interval_statistics(features[train], targets[train], predict(features[train]))
        fold = with_bounds(
            predict(features[held]), features[held], stats.xtx_inverse, stats.residual_variance, stats.dof
        )
        values[held] = fold.values
        assert fold.bounds is not None
        for level, (low, high) in fold.bounds.items():
            lower[level][held], upper[level][held] = low, high
    return Predictions(values, {level: (lower[level], upper[level]) for level in COVERAGE_LEVELS})


def figures(predicted: Predictions, targets: np.ndarray, names: Sequence[str]) -> dict[str, TargetEvaluation]:
    out = {}
    for j, name in enumerate(names):
        error = predicted.values[:, j] - targets[:, j]
        coverage: dict[str, float] = {}
        if predicted.bounds is not None:
            for level, (low, high) in predicted.bounds.items():
                inside = (low[:, j] <= targets[:, j]) & (targets[:, j] <= high[:, j])
                coverage[f"coverage_{round(level * 100)}"] = float(inside.mean())
        out[name] = TargetEvaluation(
            mse=float(np.mean(error**2)),
            mae=float(np.mean(np.abs(error))),
            bias=float(np.mean(error)),
            **coverage,
        )
    return out


def compare(
    challenger: Predictions,
    champion: Predictions,
    targets: np.ndarray,
    names: Sequence[str],
    *,
    plan: EvaluationPlan,
    champion_source: str,
    max_regression: float,
    same_data: bool,
) -> Comparison:
    """The figures of both on the same rows and the verdict: worse when the challenger's MSE
    on any target is more than ``max_regression`` (relative) above the champion's. Per target,
    so a gain on one crop cannot hide a loss on the other."""
    ours, theirs = figures(challenger, targets, names), figures(champion, targets, names)
    change = {}
    for j, name in enumerate(names):
        # a champion that is exact on these rows (MSE 0) would divide by zero
        floor = 1e-9 * float(np.var(targets[:, j])) or 1e-30
        change[name] = (ours[name].mse - theirs[name].mse) / max(theirs[name].mse, floor)
    return Comparison(
        champion_source=champion_source,
        evaluation=plan.evaluation,
        rows=len(targets),
        challenger=ours,
        champion=theirs,
        mse_change=change,
        max_regression=max_regression,
        worse=any(c > max_regression for c in change.values()),
        same_data=same_data,
    )


def verdict(comparison: Comparison, champion: str) -> str:
    """One line: which targets regressed and by how much, or that none did."""
    limit = f"{comparison.max_regression:.1%}"
    regressed = [
        f"{name} MSE {change:+.1%}"
        for name, change in comparison.mse_change.items()
        if change > comparison.max_regression
    ]
    if regressed:
        worse = ", ".join(regressed)
        return f"the new fit is worse than {champion}: {worse} (more than --max-regression {limit})"
    return (
        f"the new fit is not worse than {champion}: no target's MSE is more than {limit} above the champion's"
    )


def report(comparison: Comparison, champion: str, folds: int | None) -> list[str]:
    """The side-by-side table printed by the CLI (stderr); the verdict is printed after it."""
    source = "model store" if comparison.champion_source == "store" else comparison.champion_source
    versus = f"challenger (this fit) vs champion {champion} ({source})"
    n = comparison.rows
    if comparison.evaluation == "in_sample_same_data":
        first = (
            f"comparison, {versus}: both scored on all {n} rows they were both trained on "
            "(same data as the champion): in-sample, like for like"
        )
    elif comparison.evaluation == "holdout_same_data":
        first = (
            f"comparison, {versus}: both scored on the {n} rows they both held out, both trained "
            "on the others (same data and split as the champion): out-of-sample, like for like"
        )
    elif comparison.evaluation == "holdout":
        first = f"comparison on the {n} held-out rows: {versus}"
    elif folds == n:
        first = f"comparison on all {n} rows, leave-one-out ({folds} fits): {versus}"
    else:
        first = f"comparison on all {n} rows, {folds}-fold cross-validation: {versus}"
    lines = [first, f"{'':<8} {'':<9} {'challenger':>11} {'champion':>11} {'change':>10}"]
    for name, ours in comparison.challenger.items():
        theirs = comparison.champion[name]
        rows = [
            ("MSE", f"{ours.mse:.4f}", f"{theirs.mse:.4f}", f"{comparison.mse_change[name]:+.1%}"),
            ("MAE", f"{ours.mae:.4f}", f"{theirs.mae:.4f}", ""),
            ("bias", f"{ours.bias:+.4f}", f"{theirs.bias:+.4f}", ""),
            ("cover 90", _share(ours.coverage_90), _share(theirs.coverage_90), ""),
            ("cover 95", _share(ours.coverage_95), _share(theirs.coverage_95), ""),
        ]
        for i, (figure, a, b, c) in enumerate(rows):
            lines.append(f"{name if i == 0 else '':<8} {figure:<9} {a:>11} {b:>11} {c:>10}".rstrip())
    if comparison.same_data and comparison.evaluation in ("holdout", "cross_validation"):
        lines.append(
            f"note: {champion} was trained on this same data file, but on other rows than this fit "
            "(or its metadata does not say which): its figures may be partly in-sample (optimistic) "
            "while the challenger's are not; with its --seed and --holdout-fraction both are judged "
            "on the rows it held out"
        )
    return lines


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"

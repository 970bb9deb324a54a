"""Judging a fit: the closed-form least-squares reference, the optimality gap and metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LeastSquares:
    weight: np.ndarray
    """targets × features"""
    bias: np.ndarray

    def predict(self, features: np.ndarray) -> np.ndarray:
        out: np.ndarray = features @ self.weight.T + self.bias
        return out


def least_squares(features: np.ndarray, targets: np.ndarray) -> LeastSquares:
    """The exact minimiser of the mean squared error of an affine map, in float64.

    Columns are centred first: it is the same solution, better conditioned when the
    intercept is large compared with the slopes (as with temperatures around 80 °F).
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    coef, *_ = np.linalg.lstsq(x - x_mean, y - y_mean, rcond=None)
    weight = coef.T
    return LeastSquares(weight=weight, bias=y_mean - weight @ x_mean)


@dataclass(frozen=True)
class IntervalStatistics:
    rows: int
    dof: int
    residual_variance: np.ndarray
    """per target"""
    xtx_inverse: np.ndarray
    """(features + 1)², intercept first"""


def interval_statistics(
    features: np.ndarray, targets: np.ndarray, predictions: np.ndarray
) -> IntervalStatistics:
    """What prediction intervals need, in float64: (XᵀX)⁻¹ of X = [1, features] from the
    SVD of X (better conditioned than inverting XᵀX; a pseudo-inverse when X is rank
    deficient, as statsmodels does), dof = rows - rank(X), and the residual variance of
    ``predictions`` (the saved model's) per target."""
    x = np.column_stack([np.ones(len(features)), np.asarray(features, np.float64)])
    _, singular, vt = np.linalg.svd(x, full_matrices=False)
    keep = singular > singular.max() * max(x.shape) * np.finfo(np.float64).eps
    vt = vt[keep]
    xtx_inverse = (vt.T / singular[keep] ** 2) @ vt
    dof = len(x) - int(keep.sum())
    residual = np.asarray(targets, np.float64) - np.asarray(predictions, np.float64)
    return IntervalStatistics(len(x), dof, (residual**2).sum(axis=0) / dof, xtx_inverse)


def interval_half_widths(
    xtx_inverse: np.ndarray, residual_variance: np.ndarray, dof: int, rows: np.ndarray, level: float
) -> np.ndarray:
    """n×targets half widths ``t(1-α/2, dof) · σ · sqrt(1 + x0ᵀ (XᵀX)⁻¹ x0)``, ``x0 = [1, x]``.

    The formula the service serves (``service.inference.intervals``), restated here because
    training must not import the service: a champion from the store and the challenger's
    fits are judged by the intervals a caller would get. float64, as there.
    """
    from scipy.special import stdtrit  # imported on use: scipy is slow to import

    design = np.column_stack([np.ones(len(rows)), np.asarray(rows, np.float64)])
    leverage = ((design @ np.asarray(xtx_inverse, np.float64)) * design).sum(axis=1)
    spread = np.sqrt(1.0 + np.maximum(leverage, 0.0))
    t = float(stdtrit(dof, 0.5 + level / 2))
    half: np.ndarray = t * spread[:, None] * np.sqrt(np.asarray(residual_variance, np.float64))[None, :]
    return half


def mse(predictions: np.ndarray, targets: np.ndarray) -> float:
    """Mean over rows and targets, like ``torch.nn.functional.mse_loss``."""
    return float(np.mean((np.asarray(predictions, np.float64) - targets) ** 2))


def optimality_gap(fit_mse: float, optimal_mse: float, targets: np.ndarray) -> float:
    """(fit MSE − optimal MSE) / optimal MSE.

    The denominator is floored at 1e-9 of the targets' variance: on exactly linear
    data (optimal MSE 0) a relative gap would otherwise divide by zero.
    """
    floor = 1e-9 * float(np.mean(np.var(targets, axis=0))) or 1e-30
    return (fit_mse - optimal_mse) / max(optimal_mse, floor)


def per_target_metrics(
    predictions: np.ndarray, targets: np.ndarray, names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """MSE, RMSE and R² for each target column.

    R² is left out for a constant target (it is undefined): NaN would make the metadata
    invalid JSON for /metadata, and BentoML's metadata does not take None.
    """
    out: dict[str, dict[str, float]] = {}
    for j, name in enumerate(names):
        error = np.asarray(predictions[:, j], np.float64) - targets[:, j]
        col_mse = float(np.mean(error**2))
        variance = float(np.var(targets[:, j]))
        out[name] = {"mse": col_mse, "rmse": float(np.sqrt(col_mse))}
        if variance > 0:
            out[name]["r2"] = 1.0 - col_mse / variance
    return out


def split_holdout(
    rows: int, fraction: float, min_rows: int, seed: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Indices for (train, holdout); no holdout below ``min_rows`` rows or for fraction 0."""
    order = np.random.default_rng(seed).permutation(rows)
    n_holdout = round(rows * fraction)
    if rows < min_rows or n_holdout == 0:
        return np.arange(rows), None
    return np.sort(order[n_holdout:]), np.sort(order[:n_holdout])

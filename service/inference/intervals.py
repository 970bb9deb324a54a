"""Prediction intervals: pure functions of the rows, the model's outputs and the store
entry's metadata (no torch, no server).

A linear model fitted by least squares has exact prediction intervals for a new
observation: ``ŷ ± t(1 - α/2, dof) · σ · sqrt(1 + x0ᵀ (XᵀX)⁻¹ x0)`` with ``x0 = [1, x]``,
``σ²`` the residual variance of a target and ``dof`` the residual degrees of freedom, all
recorded by training (``contract.metadata.IntervalBasis``). Computed in float64: the
quadratic form cancels large terms (temperatures around 80 °F squared).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from contract import FEATURE_NAMES, TARGET_NAMES
from contract.metadata import IntervalBasis
from service.inference.errors import NoIntervalsError

MIN_LEVEL, MAX_LEVEL = 0.5, 0.999
BOUND_NAMES: tuple[str, ...] = tuple(f"{t}_{side}" for t in TARGET_NAMES for side in ("lower", "upper"))
"""Output names of the bounds, target by target: apples_lower, apples_upper, oranges_..."""


@lru_cache(maxsize=64)
def t_quantile(level: float, dof: int) -> float:
    """The two-sided ``level`` quantile of Student's t with ``dof`` degrees of freedom."""
    from scipy.special import stdtrit  # on first use: scipy is slow to import

    return float(stdtrit(dof, 0.5 + level / 2))


class Intervals:
    def __init__(self, basis: IntervalBasis | None, tag: str) -> None:
        self.tag = tag
        self.basis = basis
        if basis is not None:
            self.xtx_inverse = np.asarray(basis.xtx_inverse, dtype=np.float64)
            self.sigma = np.sqrt([basis.residual_variance[name] for name in TARGET_NAMES])

    def half_widths(self, rows: np.ndarray, level: float) -> np.ndarray:
        """n×targets: ``t · σ · sqrt(1 + x0ᵀ (XᵀX)⁻¹ x0)`` for each row and target."""
        if self.basis is None:
            raise NoIntervalsError(
                f"model {self.tag} was trained before prediction intervals were recorded; retrain it"
            )
        design = np.empty((len(rows), len(FEATURE_NAMES) + 1))
        design[:, 0] = 1.0
        design[:, 1:] = rows
        leverage = ((design @ self.xtx_inverse) * design).sum(axis=1)
        spread = np.sqrt(1.0 + np.maximum(leverage, 0.0))
        half: np.ndarray = t_quantile(level, self.basis.dof) * spread[:, None] * self.sigma[None, :]
        return half

    def bounds(self, rows: np.ndarray, outputs: np.ndarray, level: float) -> dict[str, np.ndarray]:
        """``{"apples_lower": ..., "apples_upper": ..., ...}`` around the model's outputs, in
        float32 like the predictions (their shortest JSON form is half as long as float64's)."""
        half = self.half_widths(rows, level)
        center = np.asarray(outputs, dtype=np.float64)
        columns = {}
        for j, target in enumerate(TARGET_NAMES):
            columns[f"{target}_lower"] = (center[:, j] - half[:, j]).astype(np.float32)
            columns[f"{target}_upper"] = (center[:, j] + half[:, j]).astype(np.float32)
        return columns

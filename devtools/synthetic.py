"""Synthetic crop-yield datasets with known weights, for the fit sweep and the benchmarks.

Each kind stresses the default fit differently; all stay inside the loader's physical
bounds (``contract.FEATURES``) and have Gaussian noise of known standard deviation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract import FEATURE_NAMES, TARGET_NAMES

KINDS = ("well", "collinear", "near_duplicates", "scales")
TRUE_WEIGHT = np.array([[0.4, 0.9, 0.5], [-0.3, 0.8, 0.6]])
TRUE_BIAS = np.array([-10.0, 5.0])


@dataclass(frozen=True)
class Synthetic:
    features: np.ndarray  # rows × 3
    targets: np.ndarray  # rows × 2
    weight: np.ndarray
    bias: np.ndarray
    noise: float

    def write_csv(self, path: Path) -> Path:
        header = ",".join([*FEATURE_NAMES, *TARGET_NAMES])
        np.savetxt(
            path,
            np.hstack([self.features, self.targets]),
            delimiter=",",
            header=header,
            comments="",
            fmt="%.10g",
        )
        return path


def features_of(kind: str, rows: int, rng: np.random.Generator) -> np.ndarray:
    """rows × (temperature °F, rainfall mm, humidity %) of one kind."""
    if kind == "well":  # independent, realistic ranges
        return rng.uniform([50, 20, 20], [110, 150, 90], size=(rows, 3))
    if kind == "collinear":  # rainfall and humidity follow temperature closely (correlation > 0.999)
        t = rng.uniform(60, 100, rows)
        return np.column_stack(
            [t, 2 * t - 60 + rng.normal(0, 0.5, rows), 0.5 * t + 10 + rng.normal(0, 0.2, rows)]
        )
    if kind == "near_duplicates":  # groups of near-identical rows, like seed 004's 15 rows
        centres = rng.uniform([60, 30, 30], [100, 130, 80], size=(max(2, rows // 3), 3))
        picked = centres[np.arange(rows) % len(centres)]
        return picked + rng.normal(0, 0.3, size=(rows, 3))
    if kind == "scales":  # very different spreads: rainfall in thousands, humidity within 0.05 %
        return np.column_stack(
            [rng.uniform(70, 71, rows), rng.uniform(0, 9000, rows), 40 + rng.uniform(0, 0.05, rows)]
        )
    raise ValueError(f"unknown kind {kind!r}; one of {KINDS}")


def make(kind: str, rows: int, seed: int, noise: float = 1.0) -> Synthetic:
    """``targets = features @ TRUE_WEIGHT.T + TRUE_BIAS + N(0, noise²)``, reproducible by seed."""
    rng = np.random.default_rng(seed)
    features = features_of(kind, rows, rng)
    targets = features @ TRUE_WEIGHT.T + TRUE_BIAS + rng.normal(0, noise, size=(rows, 2))
    return Synthetic(features, targets, TRUE_WEIGHT, TRUE_BIAS, noise)

"""Drift: quantile bins of a column, the share of rows in each, and the population stability
index (PSI) between two such distributions. numpy only, so training (which records a
model's reference bins) and service (which bins live traffic into them) run the same code.

Bin convention, for edges ``e0 < e1 < … < en`` (n + 1 edges, n + 2 bins):

    bin 0      (−inf, e0)        below everything seen in training
    bin i      [e(i−1), e(i))    for 1 <= i <= n − 1: closed below, open above
    bin n      [e(n−1), en]      the last inner bin is closed on both sides, so the
                                 training maximum (en) falls inside, not in the tail
    bin n + 1  (en, +inf)        above everything seen in training

Edges are the training column's quantiles 0, 0.1, …, 1 (numpy's default linear method),
deduplicated: a column with ties has fewer bins. e0 and en are the training minimum and
maximum, so training data has no rows in the two tail bins.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

QUANTILES = np.linspace(0.0, 1.0, 11)
"""Deciles: up to 10 inner bins."""
EPSILON = 1e-4
"""Shares are clamped to at least this before PSI: an empty bin (a tail, in training data)
would otherwise give ln(0) = −inf. 1e-4 is one row in 10,000, the usual choice; it caps one
empty bin's term at about (share − 1e-4)·ln(share / 1e-4), e.g. 0.92 for a share of 0.1."""
MODERATE = 0.1
"""PSI at or above this: moderate drift (warn)."""
SIGNIFICANT = 0.25
"""PSI at or above this: significant drift (page)."""

Verdict = Literal["none", "moderate", "significant"]


def quantile_edges(values: np.ndarray) -> np.ndarray:
    """The bin edges of a training column (see the module doc): deduplicated deciles.

    A column with a single distinct value v gets edges [v, next float above v], so the one
    inner bin [v, v⁺] holds it and the convention needs no special case.
    """
    column = _finite_1d(values)
    if column.size == 0:
        raise ValueError("no values to take quantiles of")
    edges = np.unique(np.quantile(column, QUANTILES))  # sorted; ties collapse
    if edges.size == 1:
        edges = np.array([edges[0], np.nextafter(edges[0], np.inf)])
    return edges


def bin_indices(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each value's bin, 0 … len(edges), by the module doc's convention."""
    column = _finite_1d(values)
    edges = np.asarray(edges, dtype=np.float64)
    # side="right": a value equal to an edge goes to the bin that edge opens ([e, …)).
    index = np.searchsorted(edges, column, side="right")
    index[column == edges[-1]] = len(edges) - 1  # the last inner bin is closed above
    return index


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """How many values fall in each of the len(edges) + 1 bins."""
    return np.bincount(bin_indices(values, edges), minlength=len(edges) + 1)


def shares(counts: np.ndarray) -> np.ndarray:
    """Counts as fractions of their total."""
    total = counts.sum()
    if total == 0:
        raise ValueError("no rows: shares are undefined")
    out: np.ndarray = np.asarray(counts, dtype=np.float64) / total
    return out


def psi(actual: np.ndarray, reference: np.ndarray, epsilon: float = EPSILON) -> float:
    """Σ (a − r)·ln(a / r) over bins, both shares clamped to at least ``epsilon``."""
    a = np.maximum(np.asarray(actual, dtype=np.float64), epsilon)
    r = np.maximum(np.asarray(reference, dtype=np.float64), epsilon)
    if a.shape != r.shape:
        raise ValueError(f"{a.size} actual shares against {r.size} reference shares")
    return float(np.sum((a - r) * np.log(a / r)))


def verdict(value: float) -> Verdict:
    """none below MODERATE, moderate below SIGNIFICANT, significant from there on."""
    if math.isnan(value):
        raise ValueError("PSI is NaN")
    if value >= SIGNIFICANT:
        return "significant"
    return "moderate" if value >= MODERATE else "none"


def _finite_1d(values: np.ndarray) -> np.ndarray:
    column = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(column)):
        raise ValueError("values must be finite (no NaN or infinity)")
    return column

"""Explanations: each feature's share of each prediction, pure numpy (no torch, no server).

For a linear model ``y = W x + b`` the interventional Shapley values are exact and cheap:
the contribution of feature j to target k is ``W[k, j] · (x_j − mean_j)`` and the base value
of target k is ``W[k] · mean + b[k]``, the prediction at the training means (the means of the
training features, ``contract.metadata.Reference``, recorded from metadata schema 4 on). So
``base + Σ_j contributions[k, j]`` is the prediction itself, and a feature at its training
mean contributes 0. This is what ``shap.LinearExplainer`` with
``feature_perturbation="interventional"`` gives on a background whose mean is the training
means (tests/unit/service/test_explain.py compares the two when shap is installed). Computed
in float64, returned in float32 like the predictions.
"""

from __future__ import annotations

import numpy as np

from contract import FEATURE_NAMES, TARGET_NAMES
from contract.metadata import Reference
from service.inference.errors import NoExplanationsError

CONTRIBUTIONS, BASE_VALUES = "contributions", "base_values"
"""Names of the explanation's two parts, in every front end (JSON fields, V2 outputs)."""
BLOCK_ROWS = 65_536
"""Rows explained at a time (their float64 copy: 1.5 MB)."""


class Explainer:
    """The exact Shapley values of one linear model (weight targets×features, bias, means)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, means: np.ndarray) -> None:
        self.weight = np.asarray(weight, dtype=np.float64).reshape(len(TARGET_NAMES), len(FEATURE_NAMES))
        self.means = np.asarray(means, dtype=np.float64).reshape(len(FEATURE_NAMES))
        base = self.weight @ self.means + np.asarray(bias, dtype=np.float64).reshape(len(TARGET_NAMES))
        self.base_values: np.ndarray = base.astype(np.float32)
        """float32 [targets]: each target's prediction at the training means."""
        self.base_values.flags.writeable = False

    @classmethod
    def of(cls, reference: Reference | None, weight: np.ndarray, bias: np.ndarray) -> Explainer | None:
        """The model's explainer; None when its metadata records no training means."""
        if reference is None:
            return None
        return cls(weight, bias, np.array([reference.features[name].mean for name in FEATURE_NAMES]))

    def explain(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """n×features rows → (contributions float32 [n, targets, features], base values
        float32 [targets]); targets in ``contract.TARGET_NAMES`` order, features in
        ``contract.FEATURE_NAMES`` order.

        Computed in float64 a block of rows at a time, straight into the float32 result, so a
        bulk call holds no float64 copy of all its rows (1,000,000 rows: 24 MB, not 96).
        """
        contributions = np.empty((len(rows), *self.weight.shape), dtype=np.float32)
        for start in range(0, len(rows), BLOCK_ROWS):
            centred = np.asarray(rows[start : start + BLOCK_ROWS], dtype=np.float64) - self.means
            np.multiply(
                centred[:, None, :],
                self.weight[None, :, :],
                out=contributions[start : start + BLOCK_ROWS],
                casting="same_kind",
            )
        return contributions, self.base_values


MAX_EXPLAINED_ROWS = 100_000
"""Explanations are six numbers a row: a bulk call's memory reservation (``service.http.bodies``)
counts on answers about as large as the body, and a million explained rows would add three
to four times that (measured: +55-80 MB for a 21 MB body), so larger calls are refused."""


def explanation(explainer: Explainer | None, rows: np.ndarray, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """``explainer.explain(rows)``, or the refusal for a model that records no training means."""
    if explainer is None:
        raise NoExplanationsError(
            f"explain: model {tag} has no training means recorded (its metadata predates "
            "schema_version 4), so its predictions cannot be explained; retrain it"
        )
    if len(rows) > MAX_EXPLAINED_ROWS:
        raise NoExplanationsError(
            f"explain: at most {MAX_EXPLAINED_ROWS:,} rows per call are explained, this call has "
            f"{len(rows):,}; split it, or leave explain out"
        )
    return explainer.explain(rows)

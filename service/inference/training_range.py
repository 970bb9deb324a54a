"""The training data's range per feature: the extrapolation flags of every prediction and
the out-of-range metric (``service.observability.monitoring``) compare with the same bounds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class TrainingBox:
    """The training data's range per feature, compared in float32 (the precision rows are
    served in): a value equal to a training extreme is inside. The extrapolation flags and
    the out-of-range metric both use these comparisons."""

    def __init__(self, ranges: Sequence[tuple[float, float]]) -> None:
        self.lows = np.array([low for low, _ in ranges], dtype=np.float32)
        self.highs = np.array([high for _, high in ranges], dtype=np.float32)

    def below(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(rows < self.lows)

    def above(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(rows > self.highs)

    def outside(self, rows: np.ndarray) -> np.ndarray:
        """n×features booleans: the feature's value lies outside the training range."""
        outside: np.ndarray = self.below(rows) | self.above(rows)
        return outside

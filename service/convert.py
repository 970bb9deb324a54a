"""Pure conversions between API schemas and the model's row matrices (no torch, no server)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from contract import FEATURE_NAMES, TARGET_NAMES
from service.schemas import ColumnsRequestBase, CropConditions, YieldPrediction


def rows_to_matrix(rows: Sequence[CropConditions]) -> np.ndarray:
    """n rows → float32 array n×3, columns in ``contract.FEATURE_NAMES`` order."""
    return np.array([(r.temperature, r.rainfall, r.humidity) for r in rows], dtype=np.float32).reshape(
        len(rows), len(FEATURE_NAMES)
    )


def matrix_to_predictions(outputs: np.ndarray) -> list[YieldPrediction]:
    """n×2 model outputs → one ``YieldPrediction`` per row.

    ``model_construct`` skips re-validating numbers the model just produced.
    """
    return [YieldPrediction.model_construct(apples=a, oranges=o) for a, o in outputs.tolist()]


def columns_to_matrix(request: ColumnsRequestBase) -> np.ndarray:
    """Validated columns → float32 array n×3 (the columns are already numpy arrays)."""
    return np.column_stack([np.asarray(getattr(request, name), dtype=np.float32) for name in FEATURE_NAMES])


def matrix_to_columns(outputs: np.ndarray) -> dict[str, list[float]]:
    """n×2 model outputs → ``{"apples": [...], "oranges": [...]}``."""
    return {name: outputs[:, j].tolist() for j, name in enumerate(TARGET_NAMES)}

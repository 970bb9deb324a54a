"""Pure conversions between the JSON API's schemas and the data plane's matrices (no torch, no server)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from contract import FEATURE_NAMES, TARGET_NAMES
from service.inference.explain import BASE_VALUES, CONTRIBUTIONS
from service.rest.schemas import ColumnsRequestBase, CropConditions


def rows_to_matrix(rows: Sequence[CropConditions]) -> np.ndarray:
    """n rows → float32 array n×3, columns in ``contract.FEATURE_NAMES`` order."""
    return np.array([(r.temperature, r.rainfall, r.humidity) for r in rows], dtype=np.float32).reshape(
        len(rows), len(FEATURE_NAMES)
    )


def predictions_json(
    outputs: np.ndarray,
    outside: np.ndarray,
    bounds: dict[str, np.ndarray] | None,
    level: float | None,
    model: str,
    explanation: tuple[np.ndarray, np.ndarray] | None = None,
) -> bytes:
    """The ``PredictResponse`` body for n×2 outputs, the n×features outside-training-range
    flags and, when asked for, the interval bounds (``service.inference.intervals``) and the
    explanation (contributions n×targets×features and base values, ``service.inference.explain``).

    Built as plain dicts and written by orjson: the same document as the pydantic models,
    without their per-object construction cost.
    """
    names = outside_features(outside)
    predictions: list[dict[str, Any]] = [
        dict(zip(TARGET_NAMES, row, strict=True)) for row in outputs.tolist()
    ]
    if bounds is not None:
        for name, column in bounds.items():
            for prediction, value in zip(predictions, column.tolist(), strict=True):
                prediction[name] = value
    if explanation is not None:
        for prediction, contributions in zip(predictions, explanation[0].tolist(), strict=True):
            prediction[CONTRIBUTIONS] = by_target(contributions)
    for prediction, features in zip(predictions, names, strict=True):
        prediction["extrapolated"] = bool(features)
        prediction["outside_training_range"] = features
    document: dict[str, Any] = {"predictions": predictions, "model": model}
    if level is not None:
        document["interval"] = level
    if explanation is not None:
        document[BASE_VALUES] = dict(zip(TARGET_NAMES, explanation[1].tolist(), strict=True))
    return orjson.dumps(document)


def by_target(contributions: list[list[float]]) -> dict[str, dict[str, float]]:
    """One row's targets×features contributions → ``{"apples": {"temperature": ..}, ..}``."""
    return {
        target: dict(zip(FEATURE_NAMES, values, strict=True))
        for target, values in zip(TARGET_NAMES, contributions, strict=True)
    }


def columns_to_matrix(request: ColumnsRequestBase) -> np.ndarray:
    """Validated columns → float32 array n×3 (the columns are already numpy arrays)."""
    return np.column_stack([np.asarray(getattr(request, name), dtype=np.float32) for name in FEATURE_NAMES])


def matrix_to_columns(outputs: np.ndarray) -> dict[str, np.ndarray]:
    """n×2 model outputs → ``{"apples": array, "oranges": array}`` (contiguous float32)."""
    columns = np.ascontiguousarray(outputs.T)
    return {name: columns[j] for j, name in enumerate(TARGET_NAMES)}


def columns_json(
    outputs: np.ndarray,
    model: str,
    outside: np.ndarray,
    bounds: dict[str, np.ndarray] | None = None,
    level: float | None = None,
) -> bytes:
    """The ``ColumnsResponse`` body, serialized straight from the arrays.

    orjson writes float32 arrays in their shortest exact form: faster than building Python
    lists for pydantic, and fewer bytes on the wire for bulk responses (the figures:
    docs/architecture.md, "Figures behind the design").
    """
    document: dict[str, Any] = {**matrix_to_columns(outputs), **(bounds or {})}
    document["extrapolated"] = outside.any(axis=1)
    document["outside_training_range"] = outside_rows(outside)
    document["model"] = model
    if level is not None:
        document["interval"] = level
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def outside_features(outside: np.ndarray) -> list[list[str]]:
    """Per row, the names of the features outside the training range."""
    return [[FEATURE_NAMES[j] for j in np.flatnonzero(row)] for row in outside]


def outside_rows(outside: np.ndarray) -> dict[str, np.ndarray]:
    """Per feature, the indexes of the rows where it is outside the training range."""
    return {name: np.flatnonzero(outside[:, j]) for j, name in enumerate(FEATURE_NAMES)}

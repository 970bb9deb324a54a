"""Tensor/array <-> schema conversions, as pure functions."""

from __future__ import annotations

import numpy as np

from service.inference.intervals import BOUND_NAMES
from service.rest import encoding
from service.rest.schemas import (
    ColumnsResponse,
    CropConditions,
    PredictResponse,
    YieldPrediction,
    columns_request_model,
)


def test_rows_to_matrix_keeps_feature_order() -> None:
    rows = [
        CropConditions(temperature=1, rainfall=2, humidity=3),
        CropConditions(temperature=4, rainfall=5, humidity=6),
    ]
    matrix = encoding.rows_to_matrix(rows)
    assert matrix.dtype == np.float32
    assert matrix.tolist() == [[1, 2, 3], [4, 5, 6]]


OUTSIDE = np.array([[False, False, False], [True, False, True]])


def test_predictions_json_matches_the_documented_response() -> None:
    outputs = np.array([[1.5, 2.5], [3.0, 4.0]], dtype=np.float32)
    body = encoding.predictions_json(outputs, OUTSIDE, None, None, "crop_yield:v1")
    response = PredictResponse.model_validate_json(body)
    assert response.predictions == [
        YieldPrediction(apples=1.5, oranges=2.5, extrapolated=False, outside_training_range=[]),
        YieldPrediction(
            apples=3.0, oranges=4.0, extrapolated=True, outside_training_range=["temperature", "humidity"]
        ),
    ]
    assert b"lower" not in body  # no interval asked for: no bounds, no level
    assert b"interval" not in body


def test_predictions_json_with_bounds() -> None:
    outputs = np.array([[1.5, 2.5]], dtype=np.float32)
    bounds = {
        name: np.array([value]) for name, value in zip(BOUND_NAMES, [1.0, 2.0, 2.25, 2.75], strict=True)
    }
    body = encoding.predictions_json(outputs, OUTSIDE[:1], bounds, 0.9, "crop_yield:v1")
    response = PredictResponse.model_validate_json(body)
    assert response.interval == 0.9
    first = response.predictions[0]
    assert (first.apples_lower, first.apples_upper, first.oranges_lower, first.oranges_upper) == (
        1.0,
        2.0,
        2.25,
        2.75,
    )


def test_columns_round_trip() -> None:
    request = columns_request_model(10).model_validate(
        {"temperature": [1, 4], "rainfall": [2, 5], "humidity": [3, 6]}
    )
    assert encoding.columns_to_matrix(request).tolist() == [[1, 2, 3], [4, 5, 6]]
    columns = encoding.matrix_to_columns(np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32))
    assert {k: v.tolist() for k, v in columns.items()} == {"apples": [1.0, 3.0], "oranges": [2.0, 4.0]}


def test_columns_json_matches_the_documented_response() -> None:
    outputs = np.array([[53.79634, 66.80548], [57.32397, 69.54128]], dtype=np.float32)
    body = encoding.columns_json(outputs, "crop_yield:v1", OUTSIDE)
    assert body == (
        b'{"apples":[53.79634,57.32397],"oranges":[66.80548,69.54128],"extrapolated":[false,true],'
        b'"outside_training_range":{"temperature":[1],"rainfall":[],"humidity":[1]},"model":"crop_yield:v1"}'
    )
    response = ColumnsResponse.model_validate_json(body)
    assert response.apples == [53.79634, 57.32397]

"""Request/response schemas without a server: bounds, strictness, columns, OpenAPI details."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from service.rest.schemas import CropConditions, columns_request_model, predict_request_model

PredictRequest = predict_request_model(max_rows=5)
ColumnsRequest = columns_request_model(max_rows=5)
ROW = {"temperature": 73, "rainfall": 67, "humidity": 43}


def error_locs(exc: pytest.ExceptionInfo[ValidationError]) -> list[tuple[Any, ...]]:
    return [tuple(e["loc"]) for e in exc.value.errors()]


def test_a_valid_row() -> None:
    row = CropConditions.model_validate_json(b'{"temperature": 73, "rainfall": 67.5, "humidity": 43}')
    assert (row.temperature, row.rainfall, row.humidity) == (73.0, 67.5, 43.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("humidity", 100.01),
        ("humidity", -0.1),
        ("rainfall", -1),
        ("rainfall", 10_001),
        ("temperature", 141),
        ("temperature", -61),
        ("temperature", "73"),
        ("temperature", True),
        ("temperature", None),
        ("temperature", [73]),
    ],
)
def test_out_of_bounds_and_wrong_types_are_rejected(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as exc:
        CropConditions.model_validate({**ROW, field: value})
    assert error_locs(exc) == [(field,)]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_tokens_are_rejected(token: str) -> None:
    with pytest.raises(ValidationError) as exc:
        CropConditions.model_validate_json(f'{{"temperature": {token}, "rainfall": 1, "humidity": 1}}')
    assert error_locs(exc) == [("temperature",)]


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        CropConditions.model_validate({**ROW, "wind": 3})
    assert error_locs(exc) == [("wind",)]


def test_request_row_limits_and_error_location() -> None:
    assert len(PredictRequest.model_validate({"inputs": [ROW] * 5}).inputs) == 5
    for rows in ([], [ROW] * 6):
        with pytest.raises(ValidationError) as exc:
            PredictRequest.model_validate({"inputs": rows})
        assert error_locs(exc) == [("inputs",)]
    with pytest.raises(ValidationError) as exc:
        PredictRequest.model_validate({"inputs": [ROW, {**ROW, "humidity": 140}]})
    assert error_locs(exc) == [("inputs", 1, "humidity")]


def test_columns_become_arrays() -> None:
    request = ColumnsRequest.model_validate(
        {"temperature": [73, 74], "rainfall": [67, 66], "humidity": [43, 43.5]}
    )
    assert isinstance(request.humidity, np.ndarray)
    assert request.humidity.tolist() == [43.0, 43.5]


@pytest.mark.parametrize(
    ("body", "loc", "message"),
    [
        ({"temperature": [73, 74], "rainfall": [67], "humidity": [43, 43]}, (), "temperature=2, rainfall=1"),
        (
            {"temperature": [73, 74, 75], "rainfall": [1, 2, 3], "humidity": [43, 101, 102]},
            ("humidity",),
            "row 1: 101.0 is above the maximum 100 % (1 more rows like it)",
        ),
        (
            {"temperature": [73], "rainfall": [-5], "humidity": [43]},
            ("rainfall",),
            "row 0: -5.0 is below the minimum 0 mm",
        ),
        (
            {"temperature": [73, 1e400], "rainfall": [1, 2], "humidity": [4, 5]},
            ("temperature",),
            "is not a finite number",
        ),
        ({"temperature": [73], "rainfall": ["1"], "humidity": [4]}, ("rainfall", 0), "valid number"),
        ({"temperature": [], "rainfall": [], "humidity": []}, ("temperature",), "at least 1 item"),
        (
            {"temperature": [1] * 6, "rainfall": [1] * 6, "humidity": [1] * 6},
            ("temperature",),
            "at most 5 items",
        ),
        ({"temperature": [1], "rainfall": [1], "humidity": [1], "wind": [1]}, ("wind",), "Extra inputs"),
    ],
)
def test_column_checks_name_the_column_and_row(
    body: dict[str, Any], loc: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(ValidationError) as exc:
        ColumnsRequest.model_validate(body)
    assert loc in error_locs(exc)
    assert any(message in e["msg"] for e in exc.value.errors()), exc.value.errors()


def test_json_schema_carries_units_bounds_and_examples() -> None:
    schema = PredictRequest.model_json_schema()
    row = schema["$defs"]["CropConditions"]
    assert row["additionalProperties"] is False
    assert row["properties"]["rainfall"]["minimum"] == 0
    assert row["properties"]["rainfall"]["unit"] == "mm"
    assert row["properties"]["temperature"]["example"] == 73.0
    assert schema["properties"]["inputs"]["maxItems"] == 5
    columns = ColumnsRequest.model_json_schema()
    assert columns["properties"]["humidity"]["items"] == {"type": "number", "minimum": 0.0, "maximum": 100.0}

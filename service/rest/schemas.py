"""Request and response models of the HTTP API.

Per-row fields carry descriptions, units, physical bounds (from ``contract``) and
examples, and accept finite JSON numbers only; unknown fields are rejected. Bounds are
enforced by pydantic for ``/predict`` rows and by vectorized numpy checks for the
columnar ``/predict_columns`` body, where per-element validation and per-element error
lists would cost more than the prediction itself.

Examples use the singular ``example`` key: BentoML 1.4's ``/docs.json`` fails on ``examples``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from contract import FEATURES, TARGETS, Column
from contract.metadata import Lineage
from service.inference.intervals import MAX_LEVEL, MIN_LEVEL

FEATURE = {c.name: c for c in FEATURES}
TARGET = {c.name: c for c in TARGETS}
EXAMPLE_REGION: dict[str, Any] = {"temperature": 73.0, "rainfall": 67.0, "humidity": 43.0}
"""The first region of the shipped dataset, training/resources/crop_yield.csv (it yielded 56 t/ha
of apples, 70 of oranges)."""

STRICT_ROW = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _feature_field(name: str) -> Any:
    column = FEATURE[name]
    return Field(
        description=f"{column.description}, in {column.unit}",
        ge=column.minimum,
        le=column.maximum,
        json_schema_extra={"example": EXAMPLE_REGION[name], "unit": column.unit},
    )


def _target_field(column: Column, example: Any) -> Any:
    return Field(
        description=f"{column.description} ({column.unit})",
        json_schema_extra={"example": example, "unit": column.unit},
    )


class CropConditions(BaseModel):
    """Growing conditions of one region: the model's three inputs."""

    model_config = ConfigDict(**STRICT_ROW, json_schema_extra={"example": EXAMPLE_REGION})

    temperature: float = _feature_field("temperature")
    rainfall: float = _feature_field("rainfall")
    humidity: float = _feature_field("humidity")


def interval_field() -> Any:
    return Field(
        None,
        ge=MIN_LEVEL,
        le=MAX_LEVEL,
        description=(
            f"Confidence level ({MIN_LEVEL} to {MAX_LEVEL}) of prediction intervals to return with "
            "each prediction: the range that holds a region's actual yield with this probability. "
            "Leave out for predictions only."
        ),
        json_schema_extra={"example": 0.95},
    )


def _optional_output(example: Any, **extra: Any) -> Callable[[dict[str, Any]], None]:
    """Schema of a response field that is left out, not null, when it does not apply."""

    def edit(schema: dict[str, Any]) -> None:
        schema.pop("default", None)
        schema.update(example=example, **extra)

    return edit


def _bound_field(target: str, side: str, example: Any) -> Any:
    column = TARGET[target]
    return Field(
        None,
        description=f"{side.capitalize()} bound of the prediction interval of {target}, in "
        f"{column.unit}; present when the request asks for an interval",
        json_schema_extra=_optional_output(example, unit=column.unit),
    )


def explain_field() -> Any:
    return Field(
        False,
        description=(
            "Also return each prediction's explanation: per target, each feature's contribution "
            "(t/ha) to the prediction, and per target the base value, the prediction at the means "
            "of the training data, so that base value + contributions = prediction. They are the "
            "exact (interventional) Shapley values of the linear model; models trained before the "
            "training means were recorded (metadata schema_version 1 to 3) refuse with 400."
        ),
        json_schema_extra={"example": True},
    )


CONTRIBUTIONS_EXAMPLE: dict[str, Any] = {
    "apples": {"temperature": 4.83, "rainfall": -15.61, "humidity": -7.9},
    "oranges": {"temperature": 2.84, "rainfall": -14.66, "humidity": -10.64},
}
BASE_VALUES_EXAMPLE: dict[str, Any] = {"apples": 76.0, "oranges": 92.0}
"""The example region's explanation by the default model (base value + contributions = 57.32
t/ha of apples and 69.54 of oranges, the example prediction)."""


class FeatureContributions(BaseModel):
    """Each feature's contribution to one target's prediction, in that target's unit (t/ha):
    weight × (value − training mean), so 0 for a feature at its training mean."""

    temperature: float = Field(description="Contribution of the temperature (t/ha)")
    rainfall: float = Field(description="Contribution of the rainfall (t/ha)")
    humidity: float = Field(description="Contribution of the humidity (t/ha)")


class Contributions(BaseModel):
    """Per target, each feature's contribution to the prediction (t/ha): the prediction is the
    target's base value plus the three contributions."""

    model_config = ConfigDict(json_schema_extra={"example": CONTRIBUTIONS_EXAMPLE})

    apples: FeatureContributions
    oranges: FeatureContributions


class BaseValues(BaseModel):
    """Per target, the prediction at the training means (t/ha): what the contributions add to."""

    model_config = ConfigDict(json_schema_extra={"example": BASE_VALUES_EXAMPLE})

    apples: float = Field(description="Apple yield predicted at the training means (t/ha)")
    oranges: float = Field(description="Orange yield predicted at the training means (t/ha)")


EXTRAPOLATED_DESCRIPTION = (
    "True when an input lies outside the range of the model's training data "
    "(GET /metadata: train_min, train_max): the prediction extrapolates"
)


class YieldPrediction(BaseModel):
    """Predicted yields of one region, whether its inputs were inside the training range,
    and the prediction interval and explanation when asked for."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "apples": 57.32,
                "oranges": 69.54,
                "apples_lower": 54.38,
                "apples_upper": 60.27,
                "oranges_lower": 66.95,
                "oranges_upper": 72.14,
                "contributions": CONTRIBUTIONS_EXAMPLE,
                "extrapolated": False,
                "outside_training_range": [],
            }
        }
    )

    apples: float = _target_field(TARGET["apples"], 57.32)
    oranges: float = _target_field(TARGET["oranges"], 69.54)
    apples_lower: float | None = _bound_field("apples", "lower", 54.38)
    apples_upper: float | None = _bound_field("apples", "upper", 60.27)
    oranges_lower: float | None = _bound_field("oranges", "lower", 66.95)
    oranges_upper: float | None = _bound_field("oranges", "upper", 72.14)
    contributions: Contributions | None = Field(
        None,
        description="Per target, each feature's contribution to the prediction (t/ha); present when "
        "the request asks to explain",
        json_schema_extra=_optional_output(CONTRIBUTIONS_EXAMPLE),
    )
    extrapolated: bool = Field(description=EXTRAPOLATED_DESCRIPTION, json_schema_extra={"example": False})
    outside_training_range: list[str] = Field(
        description="The features outside the training range (empty when none)",
        json_schema_extra={"example": []},
    )


def _model_tag_field() -> Any:
    return Field(
        description="Model-store tag of the model that made the predictions",
        json_schema_extra={"example": "crop_yield:43mb76hhhgdsqax4"},
    )


class PredictRequestBase(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    inputs: list[CropConditions]
    interval: float | None = None
    explain: bool = False


def _level_echo() -> Any:
    return Field(
        None,
        description="The confidence level of the intervals, when the request asked for them",
        json_schema_extra=_optional_output(0.95),
    )


class PredictResponse(BaseModel):
    """One prediction per input row, in the order of the rows."""

    predictions: list[YieldPrediction] = Field(description="Predicted yields, one per input row, in order")
    model: str = _model_tag_field()
    interval: float | None = _level_echo()
    base_values: BaseValues | None = Field(
        None,
        description="Per target, the prediction at the training means, which each prediction's "
        "contributions add to; present when the request asks to explain",
        json_schema_extra=_optional_output(BASE_VALUES_EXAMPLE),
    )


def predict_request_model(max_rows: int) -> type[PredictRequestBase]:
    """The ``POST /predict`` body, with the configured row limit in its schema."""

    class PredictRequest(PredictRequestBase):
        """Rows of growing conditions to predict yields for."""

        model_config = ConfigDict(
            json_schema_extra={"example": {"inputs": [EXAMPLE_REGION], "interval": 0.95}}
        )

        inputs: list[CropConditions] = Field(
            min_length=1,
            max_length=max_rows,
            description=f"Regions to predict, 1 to {max_rows} rows",
        )
        interval: float | None = interval_field()
        explain: bool = explain_field()

    return PredictRequest


def _column_field(name: str, max_rows: int) -> Any:
    column = FEATURE[name]
    item_schema: dict[str, Any] = {"type": "number", "minimum": column.minimum, "maximum": column.maximum}
    return Field(
        min_length=1,
        max_length=max_rows,
        description=(
            f"{column.description}, in {column.unit}, one number per row "
            f"({column.minimum:g} to {column.maximum:g})"
        ),
        json_schema_extra={
            "example": [EXAMPLE_REGION[name]],
            "items": item_schema,
            "unit": column.unit,
        },
    )


class ColumnsRequestBase(BaseModel):
    """Columnar body: checked as whole arrays after parsing.

    After validation each column holds a float64 ``numpy.ndarray`` (the declared
    ``list[float]`` is the wire format), so the endpoint converts nothing twice.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    temperature: list[float]
    rainfall: list[float]
    humidity: list[float]
    interval: float | None = None

    @field_validator("temperature", "rainfall", "humidity", mode="after")
    @classmethod
    def _finite_and_in_range(cls, values: list[float], info: Any) -> Any:
        column = FEATURE[info.field_name]
        low = -np.inf if column.minimum is None else column.minimum
        high = np.inf if column.maximum is None else column.maximum
        array = np.asarray(values, dtype=np.float64)
        problems = [
            (~np.isfinite(array), "is not a finite number"),
            (array < low, f"is below the minimum {low:g} {column.unit}"),
            (array > high, f"is above the maximum {high:g} {column.unit}"),
        ]
        for mask, what in problems:
            bad = np.flatnonzero(mask)
            if bad.size:
                row = int(bad[0])
                more = f" ({bad.size - 1} more rows like it)" if bad.size > 1 else ""
                raise PydanticCustomError(
                    "row_value",
                    "row {row}: {value} {what}{more}",
                    {"row": row, "value": float(array[row]), "what": what, "more": more},
                )
        return array

    @model_validator(mode="after")
    def _equal_lengths(self) -> ColumnsRequestBase:
        lengths = {name: len(getattr(self, name)) for name in FEATURE}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{k}={v}" for k, v in lengths.items())
            raise PydanticCustomError("column_lengths", "columns differ in length: {shown}", {"shown": shown})
        return self


def columns_request_model(max_rows: int) -> type[ColumnsRequestBase]:
    """The ``POST /predict_columns`` body, with the configured row limit in its schema."""

    class ColumnsRequest(ColumnsRequestBase):
        """Growing conditions as three equally long columns (row i = element i of each)."""

        model_config = ConfigDict(
            json_schema_extra={
                "example": {**{name: [value] for name, value in EXAMPLE_REGION.items()}, "interval": 0.95}
            }
        )

        temperature: list[float] = _column_field("temperature", max_rows)
        rainfall: list[float] = _column_field("rainfall", max_rows)
        humidity: list[float] = _column_field("humidity", max_rows)
        interval: float | None = interval_field()

    return ColumnsRequest


class ColumnsResponse(BaseModel):
    """Predicted yields as columns, row i for input row i."""

    apples: list[float] = _target_field(TARGET["apples"], [57.32])
    oranges: list[float] = _target_field(TARGET["oranges"], [69.54])
    apples_lower: list[float] | None = _bound_field("apples", "lower", [54.38])
    apples_upper: list[float] | None = _bound_field("apples", "upper", [60.27])
    oranges_lower: list[float] | None = _bound_field("oranges", "lower", [66.95])
    oranges_upper: list[float] | None = _bound_field("oranges", "upper", [72.14])
    extrapolated: list[bool] = Field(
        description=f"Per row: {EXTRAPOLATED_DESCRIPTION[0].lower()}{EXTRAPOLATED_DESCRIPTION[1:]}",
        json_schema_extra={"example": [False]},
    )
    outside_training_range: dict[str, list[int]] = Field(
        description="Per feature, the (0-based) rows where it lies outside the training range",
        json_schema_extra={"example": {"temperature": [], "rainfall": [], "humidity": []}},
    )
    model: str = _model_tag_field()
    interval: float | None = _level_echo()


class FeatureInfo(BaseModel):
    name: str
    unit: str
    description: str
    valid_min: float | None = Field(description="Physical lower bound accepted by the API")
    valid_max: float | None = Field(description="Physical upper bound accepted by the API")
    train_min: float | None = Field(description="Smallest value in the training data")
    train_max: float | None = Field(description="Largest value in the training data")


class TargetInfo(BaseModel):
    name: str
    unit: str
    description: str


class IntervalInfo(BaseModel):
    """What the prediction intervals are based on."""

    rows: int = Field(description="Training rows")
    dof: int = Field(description="Residual degrees of freedom (rows - 4 parameters)")
    residual_std: dict[str, float] = Field(
        description="Per target, the residual standard deviation of the model on its training rows (t/ha)"
    )


class ServiceMetadata(BaseModel):
    """What is being served: model, features, targets, training quality, device."""

    model: str = _model_tag_field()
    created_at: str = Field(description="When the model was saved (ISO 8601)")
    versions: list[str] = Field(
        description="Every served version of the model (CROP_YIELD_VERSION_POLICY), the default first; "
        "the other fields describe the default",
        json_schema_extra={"example": ["43mb76hhhgdsqax4"]},
    )
    features: list[FeatureInfo]
    targets: list[TargetInfo]
    metrics: dict[str, Any] = Field(description="MSE, RMSE and R² per target, per split")
    optimality_gap: float | None = Field(description="(fit MSE − least-squares MSE) / least-squares MSE")
    training: dict[str, Any] = Field(description="Data digest, row counts, hyperparameters, versions")
    intervals: IntervalInfo | None = Field(
        description="Basis of the prediction intervals; null for a model trained before they were recorded"
    )
    lineage: Lineage | None = Field(
        description="Where the model came from: data digest, rows fitted and held out, the model it was "
        "compared with and the comparison's figures, whether it was forced, the training code's version; "
        "null for a model trained before lineage was recorded (metadata schema_version 1 or 2)"
    )
    device: str = Field(description="Where the model runs: cpu or cuda[:n]")
    service_version: str

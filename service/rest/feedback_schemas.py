"""Request and response models of ``POST /feedback``: the yields observed for rows predicted
earlier, and how far the model's predictions were from them.

Rows are the ``/predict`` rows (``service.rest.schemas.CropConditions``, the same bounds and
400s); the observed yields accept JSON numbers from 0 to ``MAX_YIELD`` t/ha only. Errors are
``actual − predicted`` in t/ha (positive: the model predicted too low; ``service.inference.feedback``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from contract import TARGETS
from service.observability.context import SANE_REQUEST_ID
from service.rest.schemas import (
    EXAMPLE_REGION,
    STRICT_ROW,
    CropConditions,
    _model_tag_field,
    _optional_output,
)

EXAMPLE_ACTUAL: dict[str, Any] = {"apples": 56.0, "oranges": 70.0}
"""What the region of ``EXAMPLE_REGION`` yielded (the first row of the shipped dataset)."""
EXAMPLE_INSIDE: dict[str, Any] = {"apples": True, "oranges": True}
EXAMPLE_ERRORS: dict[str, Any] = {
    "apples": -1.32,
    "oranges": 0.46,
    "inside_90": EXAMPLE_INSIDE,
    "inside_95": EXAMPLE_INSIDE,
    "request_id": "4bf92f3577b34da6",
}
EXAMPLE_TARGET_ERRORS: dict[str, Any] = {
    "rmse": 1.32,
    "mae": 1.32,
    "bias": -1.32,
    "coverage_90": 1.0,
    "coverage_95": 1.0,
}
ERROR_SIGN = "actual − predicted: positive when the model predicted too low"
UNIT = TARGETS[0].unit
"""The unit of every target (t/ha)."""
MAX_YIELD = 10_000.0
"""Largest observed yield accepted (t/ha): far above any crop's, and bound enough that no sum
of squared errors can overflow (a float's infinity would stay in the counters for good)."""

RequestId = Annotated[str, StringConstraints(pattern=f"^{SANE_REQUEST_ID.pattern}$")]


def _yield_field(description: str, example: float, ge: float | None = None, le: float | None = None) -> Any:
    """A yield, or an error of one, in t/ha (``UNIT``), with its example."""
    return Field(description=description, ge=ge, le=le, json_schema_extra={"example": example, "unit": UNIT})


def _observed_field(target: str) -> Any:
    return _yield_field(
        f"Observed {target} yield of the region, in {UNIT} (0 to {MAX_YIELD:,g})",
        EXAMPLE_ACTUAL[target],
        ge=0.0,
        le=MAX_YIELD,
    )


class ObservedYields(BaseModel):
    """The yields observed in one region: the ground truth for the input row at the same position."""

    model_config = ConfigDict(**STRICT_ROW, json_schema_extra={"example": EXAMPLE_ACTUAL})

    apples: float = _observed_field("apples")
    oranges: float = _observed_field("oranges")


class FeedbackRequestBase(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    inputs: list[CropConditions]
    actuals: list[ObservedYields]
    model_version: str | None = None
    request_ids: list[RequestId] | None = None

    @field_validator("actuals", "request_ids", mode="after")
    @classmethod
    def _one_per_input(cls, values: list[Any] | None, info: ValidationInfo) -> list[Any] | None:
        inputs = info.data.get("inputs")  # absent when the inputs were refused
        if values is not None and inputs is not None and len(values) != len(inputs):
            raise PydanticCustomError(
                "length_mismatch",
                "{field} has {given} entries for {rows} input rows: one per input row, in the same order",
                {"field": info.field_name, "given": len(values), "rows": len(inputs)},
            )
        return values


def feedback_request_model(max_rows: int) -> type[FeedbackRequestBase]:
    """The ``POST /feedback`` body, with the configured row limit (/predict's) in its schema."""

    class FeedbackRequest(FeedbackRequestBase):
        """Observed yields for rows predicted earlier: the service predicts the rows again with
        the same model version and scores its predictions against them."""

        model_config = ConfigDict(
            json_schema_extra={"example": {"inputs": [EXAMPLE_REGION], "actuals": [EXAMPLE_ACTUAL]}}
        )

        inputs: list[CropConditions] = Field(
            min_length=1,
            max_length=max_rows,
            description=f"The regions' growing conditions, as sent to /predict, 1 to {max_rows} rows",
        )
        actuals: list[ObservedYields] = Field(
            description="The yields observed in each region, one per input row, in the same order"
        )
        model_version: str | None = Field(
            None,
            min_length=1,
            max_length=128,
            description="The model version that made the predictions (GET /metadata: versions); "
            "leave out for the default version. The X-Model-Version header is taken too.",
            json_schema_extra={"example": "43mb76hhhgdsqax4"},
        )
        request_ids: list[RequestId] | None = Field(
            None,
            description="Optional: an id per input row (1 to 128 printable ASCII characters, no "
            "spaces), such as the X-Request-ID of the call that predicted it, echoed in its "
            "entry of the answer's errors",
            json_schema_extra={"example": ["4bf92f3577b34da6"]},
        )

    return FeedbackRequest


class InsideInterval(BaseModel):
    """Per target, whether the observed yield lay inside the prediction interval (bounds included)."""

    model_config = ConfigDict(json_schema_extra={"example": EXAMPLE_INSIDE})

    apples: bool
    oranges: bool


def _inside_field(level: int) -> Any:
    return Field(
        None,
        description=f"Whether each observed yield lay inside the {level}% prediction interval (the "
        f'interval /predict returns for "interval": 0.{level}); left out for a model version '
        "trained before intervals were recorded",
        json_schema_extra=_optional_output(EXAMPLE_INSIDE),
    )


class FeedbackRow(BaseModel):
    """One row's errors, in t/ha, and whether its observed yields lay inside the intervals."""

    model_config = ConfigDict(json_schema_extra={"example": EXAMPLE_ERRORS})

    apples: float = _yield_field(f"Apple yield error in {UNIT}, {ERROR_SIGN}", EXAMPLE_ERRORS["apples"])
    oranges: float = _yield_field(f"Orange yield error in {UNIT}, {ERROR_SIGN}", EXAMPLE_ERRORS["oranges"])
    inside_90: InsideInterval | None = _inside_field(90)
    inside_95: InsideInterval | None = _inside_field(95)
    request_id: str | None = Field(
        None,
        description="The row's entry of the request's request_ids; left out when it gave none",
        json_schema_extra=_optional_output(EXAMPLE_ERRORS["request_id"]),
    )


def _coverage_field(level: int) -> Any:
    return Field(
        None,
        ge=0,
        le=1,
        description=f"Share of the rows whose observed yield lay inside the {level}% prediction "
        "interval; left out for a model version trained before intervals were recorded",
        json_schema_extra=_optional_output(EXAMPLE_TARGET_ERRORS[f"coverage_{level}"]),
    )


class TargetErrors(BaseModel):
    """One target's errors over the request's rows."""

    model_config = ConfigDict(json_schema_extra={"example": EXAMPLE_TARGET_ERRORS})

    rmse: float = _yield_field(f"Root mean squared error, {UNIT}", EXAMPLE_TARGET_ERRORS["rmse"], ge=0)
    mae: float = _yield_field(f"Mean absolute error, {UNIT}", EXAMPLE_TARGET_ERRORS["mae"], ge=0)
    bias: float = _yield_field(f"Mean error, {UNIT} ({ERROR_SIGN})", EXAMPLE_TARGET_ERRORS["bias"])
    coverage_90: float | None = _coverage_field(90)
    coverage_95: float | None = _coverage_field(95)


class FeedbackSummary(BaseModel):
    """Per target, the errors over the request's rows."""

    apples: TargetErrors
    oranges: TargetErrors


class FeedbackResponse(BaseModel):
    """How far the model version's predictions were from the observed yields, row by row and
    in summary; the rows are counted in the service's crop_yield_feedback_* metrics."""

    model: str = _model_tag_field()
    model_version: str = Field(
        description="The version that made the predictions (also in the X-Model-Version header)",
        json_schema_extra={"example": "43mb76hhhgdsqax4"},
    )
    rows: int = Field(description="Rows scored", json_schema_extra={"example": 1})
    errors: list[FeedbackRow] = Field(description="One entry per input row, in order")
    summary: FeedbackSummary

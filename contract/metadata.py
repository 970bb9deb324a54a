"""The metadata of a model-store entry, typed: written by ``training``, validated by ``service``.

BentoML keeps an entry's metadata as plain YAML next to its files; this model is the one
definition of its layout. ``schema_version`` says which layout an entry has: a change that
an older reader cannot take bumps ``METADATA_SCHEMA_VERSION``, and a reader refuses
versions it does not know with one clear message (``read_metadata``) instead of failing
somewhere later on a missing key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from contract import FEATURE_NAMES, METADATA_SCHEMA_VERSION, TARGET_NAMES, drift

SUPPORTED_SCHEMA_VERSIONS = (1, 2, 3, METADATA_SCHEMA_VERSION)
"""Version 1 entries lack ``intervals`` (they serve predictions but no prediction intervals);
versions 1 and 2 lack ``lineage``; versions 1 to 3 lack ``reference`` (no drift checks)."""
STRICT = ConfigDict(extra="forbid", frozen=True)


class FeatureSummary(BaseModel):
    """A feature and the range of its values in the training data."""

    model_config = STRICT
    name: str
    unit: str
    description: str
    train_min: float = Field(description="Smallest value in the training data")
    train_max: float = Field(description="Largest value in the training data")


class TargetSummary(BaseModel):
    model_config = STRICT
    name: str
    unit: str
    description: str


class TargetMetrics(BaseModel):
    model_config = STRICT
    mse: float
    rmse: float
    r2: float | None = Field(None, description="Absent for a constant target (undefined)")


class FitSummary(BaseModel):
    model_config = STRICT
    mse: float
    optimal_mse: float = Field(description="The closed-form least-squares optimum's MSE")
    optimality_gap: float = Field(description="(mse - optimal_mse) / optimal_mse, scaled for tiny optima")
    epochs_run: int
    converged: bool
    final_loss: float
    seconds: float


class DataSummary(BaseModel):
    model_config = STRICT
    source: str
    sha256: str
    rows: int
    train_rows: int
    holdout_rows: int


class Hyperparameters(BaseModel):
    model_config = STRICT
    epochs: int
    lr: float
    standardize: bool
    max_gap: float
    holdout_fraction: float
    batch_size: int


class IntervalBasis(BaseModel):
    """What exact prediction intervals of the least-squares linear model need, computed in
    float64 from the training rows: ``y ± t(1-α/2, dof) · σ · sqrt(1 + x0ᵀ (XᵀX)⁻¹ x0)``
    with ``x0 = [1, features]``."""

    model_config = STRICT
    rows: int = Field(description="Training rows the statistics come from")
    dof: int = Field(ge=1, description="Residual degrees of freedom: rows - rank of X (intercept + features)")
    residual_variance: dict[str, float] = Field(
        description="Per target: the saved model's residual sum of squares / dof"
    )
    xtx_inverse: list[list[float]] = Field(
        description="(XᵀX)⁻¹ of the design matrix X = [1, features] (pseudo-inverse when rank-deficient)"
    )

    @field_validator("xtx_inverse")
    @classmethod
    def _square(cls, matrix: list[list[float]]) -> list[list[float]]:
        size = len(FEATURE_NAMES) + 1
        if len(matrix) != size or any(len(row) != size for row in matrix):
            raise ValueError(f"must be {size}×{size} (intercept + features)")
        return matrix

    @field_validator("residual_variance")
    @classmethod
    def _per_target(cls, variance: dict[str, float]) -> dict[str, float]:
        if tuple(variance) != TARGET_NAMES or any(not v >= 0 for v in variance.values()):
            raise ValueError(f"must give a variance >= 0 for each of {list(TARGET_NAMES)}")
        return variance


class TargetEvaluation(BaseModel):
    """One model's errors on one target over the evaluation rows (prediction - actual)."""

    model_config = STRICT
    mse: float
    mae: float
    bias: float = Field(description="Mean signed error: positive when the model predicts too high")
    coverage_90: float | None = Field(
        None, description="Share of rows inside the 90% prediction interval; absent without intervals"
    )
    coverage_95: float | None = Field(
        None, description="Share of rows inside the 95% prediction interval; absent without intervals"
    )


class Comparison(BaseModel):
    """The new fit (challenger) against an existing model (champion), both scored alike on the
    same rows; written by ``python -m training --compare-with``."""

    model_config = STRICT
    champion_source: str = Field(description="'store', or the URL of the service that answered")
    evaluation: Literal["holdout", "cross_validation", "in_sample_same_data", "holdout_same_data"] = Field(
        description="Other data than the champion's: holdout or cross_validation (both out-of-sample); "
        "the champion's own data: in_sample_same_data (both fitted on and scored on every row) or "
        "holdout_same_data (both scored on the rows both held out)"
    )
    rows: int = Field(description="Evaluation rows: the holdout, or every row")
    challenger: dict[str, TargetEvaluation] = Field(
        description="Per target; out-of-fold with cross-validation"
    )
    champion: dict[str, TargetEvaluation] = Field(description="Per target, on the same rows")
    mse_change: dict[str, float] = Field(
        description="Per target: (challenger MSE - champion MSE) / champion MSE"
    )
    max_regression: float = Field(description="The largest mse_change allowed on any target")
    worse: bool = Field(description="Some target's mse_change exceeded max_regression")
    same_data: bool = Field(
        description="The champion's recorded data digest is this data's; with evaluation holdout or "
        "cross_validation its figures may then be partly in-sample"
    )


class Lineage(BaseModel):
    """Where a model came from: its data, how it was evaluated, what it was compared with."""

    model_config = STRICT
    data: str = Field(description="'builtin' (the shipped CSV) or the CSV path given to training")
    sha256: str = Field(description="SHA-256 of the data file's bytes (the shipped CSV's too)")
    fit_rows: int = Field(description="Rows the saved model was fitted on")
    holdout_rows: int = Field(description="Rows held out of that fit (0 with cross-validation)")
    folds: int | None = Field(
        None, description="k of the k-fold cross-validation that evaluated the fit (rows: leave-one-out)"
    )
    compared_with: str | None = Field(None, description="The champion's tag, when compared")
    comparison: Comparison | None = None
    forced: bool = Field(description="Saved with --force although the comparison found it worse")
    project_version: str = Field(description="contract.__version__ of the training code")


class ColumnReference(BaseModel):
    """One column's distribution in the training rows, binned as ``contract.drift`` says:
    ``edges`` e0 < … < en give the bins (−inf, e0), [e0, e1), …, [e(n−1), en], (en, +inf)."""

    model_config = STRICT
    edges: list[float] = Field(description="Deduplicated deciles of the training rows, increasing")
    shares: list[float] = Field(description="Share of training rows per bin: len(edges) + 1, tails 0")
    mean: float

    @model_validator(mode="after")
    def _a_distribution(self) -> ColumnReference:
        if not all(map(math.isfinite, [*self.edges, *self.shares, self.mean])):
            raise ValueError("edges, shares and mean must be finite")
        if len(self.edges) < 2 or any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ValueError("edges must be at least 2 and strictly increasing")
        if len(self.shares) != len(self.edges) + 1:
            raise ValueError(
                f"{len(self.edges)} edges need {len(self.edges) + 1} shares, not {len(self.shares)}"
            )
        if any(s < 0 for s in self.shares) or abs(math.fsum(self.shares) - 1) > 1e-9:
            raise ValueError("shares must be >= 0 and sum to 1 (within 1e-9)")
        return self

    @classmethod
    def of(cls, values: np.ndarray) -> ColumnReference:
        edges = drift.quantile_edges(values)
        counts = drift.bin_counts(values, edges)
        return cls(edges=edges.tolist(), shares=drift.shares(counts).tolist(), mean=float(np.mean(values)))


class Reference(BaseModel):
    """The training distribution drift is measured against: each feature over the training
    rows, and each target as the saved model's *predictions* on them (live traffic has no
    actuals; the service bins its predictions)."""

    model_config = STRICT
    rows: int = Field(ge=1, description="Training rows the distributions come from")
    features: dict[str, ColumnReference]
    targets: dict[str, ColumnReference] = Field(description="Of the model's predictions, not the actuals")

    @field_validator("features", "targets")
    @classmethod
    def _the_models_columns(
        cls, columns: dict[str, ColumnReference], info: ValidationInfo
    ) -> dict[str, ColumnReference]:
        expected = FEATURE_NAMES if info.field_name == "features" else TARGET_NAMES
        # A mapping's order is not kept by every writer (a YAML dump may sort the keys): the
        # names must be the model's, and they come back in the model's order.
        if sorted(columns) != sorted(expected):
            raise ValueError(f"{info.field_name} are {list(columns)}, expected {list(expected)}")
        return {name: columns[name] for name in expected}

    @classmethod
    def of(cls, features: np.ndarray, predictions: np.ndarray) -> Reference:
        """From the training rows (rows × features) and the model's predictions on them."""
        return cls(
            rows=len(features),
            features={name: ColumnReference.of(features[:, j]) for j, name in enumerate(FEATURE_NAMES)},
            targets={name: ColumnReference.of(predictions[:, j]) for j, name in enumerate(TARGET_NAMES)},
        )


class ModelMetadata(BaseModel):
    """Everything an entry records besides its weights (``contract.WEIGHTS_FILE``)."""

    model_config = STRICT
    schema_version: int
    weights_file: str
    features: list[FeatureSummary]
    targets: list[TargetSummary]
    metrics: dict[str, dict[str, TargetMetrics]] = Field(description="Per split (train, holdout), per target")
    fit: FitSummary
    data: DataSummary
    hyperparameters: Hyperparameters
    seed: int
    versions: dict[str, str] = Field(description="Python and package versions of the training run")
    intervals: IntervalBasis | None = Field(None, description="From schema_version 2 on")
    lineage: Lineage | None = Field(None, description="From schema_version 3 on")
    reference: Reference | None = Field(None, description="From schema_version 4 on")

    @field_validator("features", "targets")
    @classmethod
    def _the_models_columns(cls, columns: list[Any], info: ValidationInfo) -> list[Any]:
        expected = FEATURE_NAMES if info.field_name == "features" else TARGET_NAMES
        names = tuple(c.name for c in columns)
        if names != expected:
            raise ValueError(f"{info.field_name} are {list(names)}, expected {list(expected)}")
        return columns

    @model_validator(mode="after")
    def _fields_of_the_version(self) -> ModelMetadata:
        if self.schema_version >= 2 and self.intervals is None:
            raise ValueError(f"schema_version {self.schema_version} entries record intervals")
        if self.schema_version >= 3 and self.lineage is None:
            raise ValueError(f"schema_version {self.schema_version} entries record lineage")
        if self.schema_version >= 4 and self.reference is None:
            raise ValueError(f"schema_version {self.schema_version} entries record a reference")
        return self

    def to_store(self) -> dict[str, Any]:
        """The plain dict BentoML stores (it takes no None values)."""
        return self.model_dump(mode="json", exclude_none=True)

    def range_of(self, feature: str) -> tuple[float, float]:
        summary = next(f for f in self.features if f.name == feature)
        return summary.train_min, summary.train_max


class MetadataError(ValueError):
    """An entry's metadata has an unknown layout version or does not follow the layout."""


def read_metadata(raw: Mapping[str, Any], tag: str) -> ModelMetadata:
    """Validate an entry's metadata; ``MetadataError`` with one line naming tag and problem."""
    supported = ", ".join(map(str, SUPPORTED_SCHEMA_VERSIONS))
    found = raw.get("schema_version")
    if found not in SUPPORTED_SCHEMA_VERSIONS:
        raise MetadataError(
            f"model {tag} has metadata schema_version {found!r}; this version reads {supported}: "
            "serve it with the release that trained it, or retrain it with this one"
        )
    try:
        return ModelMetadata.model_validate(dict(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "metadata"
        more = f" ({exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise MetadataError(
            f"model {tag} has malformed metadata (schema_version {found}): {where}: {first['msg']}{more}"
        ) from None

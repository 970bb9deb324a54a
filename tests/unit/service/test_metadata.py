"""Metadata layouts across schema versions, and what GET /metadata shows of the lineage."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from contract import METADATA_SCHEMA_VERSION
from contract.metadata import MetadataError, read_metadata
from service.inference.model import LinearModel
from service.rest.metadata import describe
from training.pipeline import TrainOptions, train

_FEATURES = [
    ("temperature", "°F", "Average temperature of the region", 68.0, 103.0),
    ("rainfall", "mm", "Rainfall in the region", 43.0, 135.0),
    ("humidity", "%", "Average relative humidity of the region", 36.0, 71.0),
]
SCHEMA_2_ENTRY: dict[str, Any] = {
    # What training wrote before lineage (schema_version 2), as a model.yaml holds it:
    # written out here rather than derived from today's output, so it stays the old layout.
    "schema_version": 2,
    "weights_file": "model.safetensors",
    "features": [
        {"name": n, "unit": u, "description": d, "train_min": lo, "train_max": hi}
        for n, u, d, lo, hi in _FEATURES
    ],
    "targets": [
        {"name": "apples", "unit": "t/ha", "description": "Predicted apple yield in tonnes per hectare"},
        {"name": "oranges", "unit": "t/ha", "description": "Predicted orange yield in tonnes per hectare"},
    ],
    "metrics": {
        "train": {"apples": {"mse": 1.02, "rmse": 1.01, "r2": 0.999}, "oranges": {"mse": 0.8, "rmse": 0.89}}
    },
    "fit": {
        "mse": 0.909447,
        "optimal_mse": 0.909446,
        "optimality_gap": 8.3e-07,
        "epochs_run": 102,
        "converged": True,
        "final_loss": 0.00076,
        "seconds": 1.3,
    },
    "data": {
        "source": "builtin:crop_yield.csv",
        "sha256": "e3cb",
        "rows": 15,
        "train_rows": 15,
        "holdout_rows": 0,
    },
    "hyperparameters": {
        "epochs": 2000,
        "lr": 0.1,
        "standardize": True,
        "max_gap": 0.0001,
        "holdout_fraction": 0.2,
        "batch_size": 15,
    },
    "seed": 0,
    "versions": {"python": "3.11.7", "torch": "2.13.0+cpu", "bentoml": "1.4.39"},
    "intervals": {
        "rows": 15,
        "dof": 11,
        "residual_variance": {"apples": 1.39, "oranges": 1.09},
        "xtx_inverse": [
            [8.18, -0.063, 0.002, -0.055],
            [-0.063, 0.0006, 0.0, 0.0003],
            [0.002, 0.0, 0.0001, -0.0002],
            [-0.055, 0.0003, -0.0002, 0.0009],
        ],
    },
}
SCHEMA_1_ENTRY = {k: v for k, v in SCHEMA_2_ENTRY.items() if k != "intervals"} | {"schema_version": 1}
SCHEMA_3_ENTRY: dict[str, Any] = SCHEMA_2_ENTRY | {
    # What training wrote before the drift reference (schema_version 3): lineage, no reference.
    "schema_version": 3,
    "lineage": {
        "data": "builtin",
        "sha256": "e3cb",
        "fit_rows": 15,
        "holdout_rows": 0,
        "forced": False,
        "project_version": "0.1.0",
    },
}
OLD_ENTRIES = [SCHEMA_1_ENTRY, SCHEMA_2_ENTRY, SCHEMA_3_ENTRY]


@pytest.mark.parametrize("entry", OLD_ENTRIES, ids=["schema 1", "schema 2", "schema 3"])
def test_entries_of_older_schemas_still_load_without_a_reference(
    entry: dict[str, Any], tmp_path: Path
) -> None:
    meta = read_metadata(copy.deepcopy(entry), "crop_yield:old")
    assert meta.reference is None
    assert (meta.lineage is None) == (entry["schema_version"] < 3)
    assert (meta.intervals is None) == (entry["schema_version"] == 1)
    save_file({"weight": torch.ones(2, 3), "bias": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    model = LinearModel.load(tmp_path, "crop_yield:old", copy.deepcopy(entry), "", torch.device("cpu"))
    assert model.metadata.reference is None
    assert model.metadata == meta


def test_this_schema_requires_lineage_and_a_reference() -> None:
    assert METADATA_SCHEMA_VERSION == 4
    with pytest.raises(MetadataError, match="schema_version 3 entries record lineage"):
        read_metadata(SCHEMA_2_ENTRY | {"schema_version": 3}, "crop_yield:new")
    with pytest.raises(MetadataError, match="schema_version 4 entries record a reference"):
        read_metadata(SCHEMA_3_ENTRY | {"schema_version": 4}, "crop_yield:new")


def test_lineage_and_reference_survive_the_store_round_trip() -> None:
    """BentoML keeps no None values: to_store drops them and reading gives them back."""
    stored = train(TrainOptions(save=False)).metadata
    assert stored.lineage is not None
    assert stored.reference is not None
    assert "compared_with" not in stored.to_store()["lineage"]
    assert read_metadata(stored.to_store(), "x:y") == stored


def plane_serving(metadata: Any) -> Any:
    model = SimpleNamespace(
        tag="crop_yield:v1",
        created_at=datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
        metadata=metadata,
        device=torch.device("cpu"),
    )
    return SimpleNamespace(model=model, versions=["v1"])


def test_get_metadata_shows_the_lineage(valid_metadata: dict[str, Any]) -> None:
    meta = read_metadata(valid_metadata, "crop_yield:v1")
    body = describe(plane_serving(meta)).model_dump(mode="json")
    assert body["lineage"]["data"] == "builtin"
    assert body["lineage"]["sha256"] == valid_metadata["data"]["sha256"]
    assert body["lineage"]["fit_rows"] == 15
    assert body["lineage"]["compared_with"] is None
    old = describe(plane_serving(read_metadata(SCHEMA_2_ENTRY, "crop_yield:v1"))).model_dump(mode="json")
    assert old["lineage"] is None

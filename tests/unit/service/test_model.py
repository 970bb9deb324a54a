"""Loading a real store entry written by the training pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from service.inference.errors import NoIntervalsError
from service.inference.intervals import Intervals
from service.inference.model import LinearModel, ModelLoadError
from training.pipeline import TrainOptions, train

VALID_BASIS: dict[str, Any] = {
    "rows": 15,
    "dof": 11,
    "residual_variance": {"apples": 1.0, "oranges": 2.0},
    "xtx_inverse": [[0.0] * 4] * 4,
}


def test_loads_a_trained_entry_and_predicts_like_the_fitted_module(session_home: Path) -> None:
    outcome = train(TrainOptions(model_name="served"))
    assert outcome.tag is not None
    name, version = outcome.tag.split(":")
    model = LinearModel.load(
        session_home / "models" / name / version,
        outcome.tag,
        outcome.metadata.to_store(),
        "",
        torch.device("cpu"),
    )
    assert model.metadata == outcome.metadata
    rows = np.random.default_rng(0).uniform(0, 100, (64, 3)).astype(np.float32)
    with torch.no_grad():
        expected = outcome.fit.model(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(model.predict(rows), expected, rtol=1e-6, atol=1e-5)


def test_a_row_gets_the_same_bits_whatever_batch_it_comes_in(session_home: Path) -> None:
    """Small CPU batches skip torch (numpy, with torch's order of operations): a row alone,
    in a batch of 64 (both the numpy path) and in 10,000 (torch's addmm) is the same float32."""
    outcome = train(TrainOptions(model_name="bits", save=False))
    weight, bias = outcome.fit.model.weight.detach(), outcome.fit.model.bias.detach()
    model = LinearModel("bits:v1", weight, bias, torch.device("cpu"), outcome.metadata, "")
    rows = np.random.default_rng(1).uniform([50, 20, 20], [110, 150, 90], (10_000, 3)).astype(np.float32)
    bulk = model.predict(rows)
    with torch.inference_mode():
        np.testing.assert_array_equal(bulk, torch.addmm(bias, torch.from_numpy(rows), weight.T).numpy())
    np.testing.assert_array_equal(
        np.concatenate([model.predict(rows[i : i + 64]) for i in range(0, 640, 64)]), bulk[:640]
    )
    np.testing.assert_array_equal(
        np.concatenate([model.predict(rows[i : i + 1]) for i in range(200)]), bulk[:200]
    )


def test_wrong_shapes_are_refused(tmp_path: Path, valid_metadata: dict[str, Any]) -> None:
    save_file({"weight": torch.zeros(3, 3), "bias": torch.zeros(3)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="expected"):
        LinearModel.load(tmp_path, "x:y", valid_metadata, "", torch.device("cpu"))


def test_a_truncated_weights_file_is_refused_naming_it(
    tmp_path: Path, valid_metadata: dict[str, Any]
) -> None:
    """safetensors' own error would escape the worker's start as a traceback."""
    path = tmp_path / "model.safetensors"
    save_file({"weight": torch.ones(2, 3), "bias": torch.zeros(2)}, str(path))
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(
        ModelLoadError, match=r"model x:y: model\.safetensors cannot be read: .*not fully covered"
    ):
        LinearModel.load(tmp_path, "x:y", valid_metadata, "", torch.device("cpu"))


def test_missing_weights_are_refused(tmp_path: Path, valid_metadata: dict[str, Any]) -> None:
    with pytest.raises(ModelLoadError, match=r"no model\.safetensors"):
        LinearModel.load(tmp_path, "x:y", valid_metadata, "", torch.device("cpu"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema_version": 5}, "model x:y has metadata schema_version 5; this version reads 1, 2, 3, 4"),
        ({"schema_version": None}, "schema_version None"),
        ({"features": []}, "malformed metadata (schema_version 4): features: Value error, features are []"),
        ({"fit": {"mse": 1.0}}, "malformed metadata (schema_version 4): fit.optimal_mse: Field required"),
        (
            {"intervals": None},
            "(schema_version 4): metadata: Value error, schema_version 4 entries record intervals",
        ),
        (
            {"lineage": None},
            "(schema_version 4): metadata: Value error, schema_version 4 entries record lineage",
        ),
        (
            {"reference": None},
            "(schema_version 4): metadata: Value error, schema_version 4 entries record a reference",
        ),
        (
            {"intervals": {**VALID_BASIS, "dof": 0}},
            "intervals.dof: Input should be greater than or equal to 1",
        ),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
    ],
)
def test_metadata_it_cannot_read_is_refused_naming_the_problem(
    tmp_path: Path, valid_metadata: dict[str, Any], change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ModelLoadError) as raised:
        LinearModel.load(tmp_path, "x:y", {**valid_metadata, **change}, "", torch.device("cpu"))
    assert message in str(raised.value)


def test_a_version_1_entry_serves_without_intervals(tmp_path: Path, valid_metadata: dict[str, Any]) -> None:
    save_file({"weight": torch.ones(2, 3), "bias": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    old = {k: v for k, v in valid_metadata.items() if k not in ("intervals", "lineage")} | {
        "schema_version": 1
    }
    model = LinearModel.load(tmp_path, "x:y", old, "", torch.device("cpu"))
    intervals = Intervals(model.metadata.intervals, model.tag)
    with pytest.raises(NoIntervalsError, match="model x:y was trained before prediction intervals"):
        intervals.half_widths(np.ones((1, 3), np.float32), 0.95)

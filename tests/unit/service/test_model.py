"""Loading a real store entry written by the training pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from service.model import LinearModel, ModelLoadError
from training.pipeline import TrainOptions, train


def test_loads_a_trained_entry_and_predicts_like_the_fitted_module(session_home: Path) -> None:
    outcome = train(TrainOptions(model_name="served"))
    assert outcome.tag is not None
    name, version = outcome.tag.split(":")
    model = LinearModel.load(
        session_home / "models" / name / version, outcome.tag, {}, "", torch.device("cpu")
    )
    rows = np.random.default_rng(0).uniform(0, 100, (64, 3)).astype(np.float32)
    with torch.no_grad():
        expected = outcome.fit.model(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(model.predict(rows), expected, rtol=1e-6, atol=1e-5)


def test_wrong_shapes_are_refused(tmp_path: Path) -> None:
    save_file({"weight": torch.zeros(3, 3), "bias": torch.zeros(3)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="expected"):
        LinearModel.load(tmp_path, "x:y", {}, "", torch.device("cpu"))


def test_missing_weights_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no model\.safetensors"):
        LinearModel.load(tmp_path, "x:y", {}, "", torch.device("cpu"))

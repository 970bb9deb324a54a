"""Saving to the model store, in process (the session's temporary BENTOML_HOME)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import training.store
from contract import WEIGHTS_FILE
from tests.helpers import CSV_HEADER, builtin_rows, store_snapshot
from training.cli import main
from training.pipeline import TrainOptions, train
from training.store import StoreError

pytestmark = pytest.mark.integration


def test_reloaded_weights_predict_like_the_fitted_module(session_home: Path) -> None:
    outcome = train(TrainOptions(model_name="roundtrip"))
    assert outcome.tag is not None
    name, version = outcome.tag.split(":")
    weights = load_file(str(session_home / "models" / name / version / WEIGHTS_FILE))
    assert set(weights) == {"weight", "bias"}
    assert weights["weight"].dtype == torch.float32

    rows = torch.as_tensor(np.random.default_rng(0).uniform([60, 40, 30], [105, 140, 75], (1000, 3)))
    rows = rows.to(torch.float32)
    reloaded = torch.nn.Linear(3, 2)
    reloaded.load_state_dict(weights)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(rows), outcome.fit.model(rows), rtol=0, atol=0)


def test_failure_while_saving_leaves_no_entry(session_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = train(TrainOptions(model_name="atomic"))
    before = store_snapshot(session_home)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    # The only stand-in in this suite: a full disk cannot be produced on demand.
    monkeypatch.setattr(training.store, "save_file", disk_full)
    with pytest.raises(StoreError, match="No space left on device"):
        train(TrainOptions(model_name="atomic", seed=1))
    assert store_snapshot(session_home) == before
    assert (session_home / "models" / "atomic" / "latest").read_text() == first.tag.split(":")[1]  # type: ignore[union-attr]


def test_dry_run_saves_nothing(session_home: Path) -> None:
    before = store_snapshot(session_home)
    outcome = train(TrainOptions(model_name="dry", save=False))
    assert outcome.tag is None
    assert outcome.metadata.fit.optimality_gap <= 1e-4
    assert store_snapshot(session_home) == before


def test_constant_target_gives_json_safe_metadata(tmp_path: Path) -> None:
    # A target that never varies has no R²; the metadata must still be valid JSON (/metadata).
    lines = [CSV_HEADER, *(f"{r.rsplit(',', 2)[0]},50,{r.rsplit(',', 1)[1]}" for r in builtin_rows())]
    path = tmp_path / "flat.csv"
    path.write_text("\n".join(lines) + "\n")
    assert main(["--data", str(path), "--model-name", "flat-apples"]) == 0  # report included
    outcome = train(TrainOptions(data=path, model_name="flat-apples", save=False))
    assert "r2" not in outcome.metadata.to_store()["metrics"]["train"]["apples"]
    json.dumps(outcome.metadata.to_store(), allow_nan=False)

"""``python -m training.drift``, end to end: a real training run into a temp store, then the
drift report of the training data (PSI 0), of shifted rows (significant) and its errors."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import CSV_HEADER, REPO_ROOT, builtin_rows, run_training_cli

pytestmark = pytest.mark.integration


def run_drift(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    return run_training_cli(args, home, timeout=60, module="training.drift")


def psi_by_column(result: subprocess.CompletedProcess[str]) -> dict[str, tuple[float, str]]:
    assert result.returncode == 0, result.stderr
    body: dict[str, Any] = json.loads(result.stdout)
    return {c["name"]: (c["psi"], c["verdict"]) for c in body["columns"]}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("drift-store")
    trained = run_training_cli(["--version", "v1", "--quiet"], home)
    assert trained.returncode == 0, trained.stderr
    return home


def shifted_csv(tmp_path: Path, with_targets: bool = True) -> Path:
    """The built-in rows 20 °F warmer; without the target columns when asked."""
    rows = [r.split(",") for r in builtin_rows()]
    lines = [CSV_HEADER if with_targets else "temperature,rainfall,humidity"]
    for row in rows:
        row[0] = str(float(row[0]) + 20)
        lines.append(",".join(row if with_targets else row[:3]))
    path = tmp_path / "shifted.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_training_data_has_not_drifted(store: Path) -> None:
    data = str(REPO_ROOT / "training" / "resources" / "crop_yield.csv")
    table = run_drift([data], store)  # against crop_yield:latest by default
    assert table.returncode == 0, table.stderr
    assert "against crop_yield:v1 (reference: 15 training rows)" in table.stdout
    assert sum(line.endswith("no drift") for line in table.stdout.splitlines()) == 5
    # the same rows, the same float64 predictions: exactly the reference shares
    got = psi_by_column(run_drift([data, "--against", "crop_yield:v1", "--json"], store))
    assert got == {
        name: (0.0, "none") for name in ("temperature", "rainfall", "humidity", "apples", "oranges")
    }


@pytest.mark.parametrize("with_targets", [True, False], ids=["full file", "features only"])
def test_warmer_rows_drift_significantly_in_temperature_and_the_predictions(
    store: Path, tmp_path: Path, with_targets: bool
) -> None:
    got = psi_by_column(run_drift([str(shifted_csv(tmp_path, with_targets)), "--json"], store))
    for moved in ("temperature", "apples", "oranges"):
        assert got[moved][0] >= 0.25, got
        assert got[moved][1] == "significant", got
    assert got["rainfall"] == got["humidity"] == (0.0, "none")
    table = run_drift([str(shifted_csv(tmp_path, with_targets))], store)
    assert table.returncode == 0
    assert sum(line.endswith("significant (page)") for line in table.stdout.splitlines()) == 3


def test_unusable_models_and_files_exit_2_naming_the_problem(store: Path, tmp_path: Path) -> None:
    data = str(shifted_csv(tmp_path))
    unknown = run_drift([data, "--against", "crop_yield:nope"], store)
    assert unknown.returncode == 2
    assert "model crop_yield:nope is not in the model store" in unknown.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("temperature,rainfall\n70,80\n")
    refused = run_drift([str(bad)], store)
    assert refused.returncode == 2
    assert "bad.csv, line 1: missing column(s) 'humidity'" in refused.stderr
    assert run_drift([str(tmp_path / "absent.csv")], store).returncode == 2
    assert refused.stdout == ""


def test_a_model_without_a_reference_is_refused(store: Path, tmp_path: Path) -> None:
    """An entry written before schema_version 4 (its model.yaml edited back to version 3)."""
    home = tmp_path / "old-store"
    shutil.copytree(store, home)
    path = home / "models" / "crop_yield" / "v1" / "model.yaml"
    info = yaml.safe_load(path.read_text())
    info["metadata"]["schema_version"] = 3
    del info["metadata"]["reference"]
    path.write_text(yaml.safe_dump(info, sort_keys=False))
    old = run_drift([str(shifted_csv(tmp_path))], home)
    assert old.returncode == 2
    assert "model crop_yield:v1 records no reference distribution (metadata schema_version 3" in old.stderr

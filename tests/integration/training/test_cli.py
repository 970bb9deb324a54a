"""``python -m training`` end to end: real processes, real model stores in temp folders."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from contract import FEATURE_NAMES, TARGET_NAMES, WEIGHTS_FILE
from tests.helpers import (
    BAD_CSV_CASES,
    CSV_HEADER,
    REPO_ROOT,
    SEED_004_QUERY,
    builtin_rows,
    run_training_cli,
    store_snapshot,
)
from training.cli import main
from training.data import load_builtin
from training.evaluation import least_squares
from training.pipeline import TrainOptions, train

pytestmark = pytest.mark.integration


def entry_dir(home: Path, tag: str) -> Path:
    name, version = tag.split(":")
    return home / "models" / name / version


def latest_version(home: Path, name: str = "crop_yield") -> str:
    return (home / "models" / name / "latest").read_text().strip()


def predict_from_store(home: Path, tag: str, rows: list[list[float]]) -> np.ndarray:
    """What a reader that knows only the contract (safetensors + numpy) predicts."""
    weights = load_file(str(entry_dir(home, tag) / WEIGHTS_FILE))
    assert weights["weight"].shape == (2, 3)
    assert weights["bias"].shape == (2,)
    out: np.ndarray = np.asarray(rows, np.float32) @ weights["weight"].T + weights["bias"]
    return out


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    home = tmp_path_factory.mktemp("bentoml")
    plots = tmp_path_factory.mktemp("plots")
    result = run_training_cli(["--plots", str(plots)], home)
    assert result.returncode == 0, result.stderr
    return home, result


def test_default_run_prints_the_new_tag(default_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    home, result = default_run
    tag = result.stdout.strip()
    assert tag.startswith("crop_yield:")
    assert latest_version(home) == tag.split(":")[1]
    assert "optimality gap" in result.stderr
    assert f"saved: {tag}" in result.stderr


def test_default_model_predicts_the_least_squares_value(
    default_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    home, result = default_run
    apples, oranges = predict_from_store(home, result.stdout.strip(), [SEED_004_QUERY])[0]
    data = load_builtin(FEATURE_NAMES, TARGET_NAMES)
    expected = least_squares(data.features, data.targets).predict(np.array([SEED_004_QUERY]))[0]
    assert abs(apples - expected[0]) < 0.05
    assert abs(oranges - expected[1]) < 0.05
    assert abs(apples - 53.80) < 0.05
    assert abs(oranges - 66.81) < 0.05


def test_metadata_records_the_contract(default_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    home, result = default_run
    info = yaml.safe_load((entry_dir(home, result.stdout.strip()) / "model.yaml").read_text())
    meta = info["metadata"]
    assert info["labels"]["framework"] == "pytorch"
    assert meta["weights_file"] == WEIGHTS_FILE
    assert [f["name"] for f in meta["features"]] == list(FEATURE_NAMES)
    assert [f["unit"] for f in meta["features"]] == ["°F", "mm", "%"]
    assert meta["features"][0]["train_min"] == 68.0
    assert meta["features"][0]["train_max"] == 103.0
    assert [t["name"] for t in meta["targets"]] == list(TARGET_NAMES)
    assert 0 <= meta["fit"]["optimality_gap"] <= 1e-4
    assert meta["fit"]["optimal_mse"] == pytest.approx(0.9094, abs=1e-3)
    assert meta["metrics"]["train"]["apples"]["r2"] > 0.99
    assert "holdout" not in meta["metrics"]  # 15 rows: too few to hold any out
    csv_bytes = (REPO_ROOT / "training" / "resources" / "crop_yield.csv").read_bytes()
    assert meta["data"]["sha256"] == hashlib.sha256(csv_bytes).hexdigest()
    assert meta["data"]["rows"] == 15
    assert meta["hyperparameters"]["batch_size"] == 15  # full batch for small data
    assert meta["schema_version"] == 4
    reference = meta["reference"]  # drift baseline: deciles of the 15 training rows
    assert reference["rows"] == 15
    assert list(reference["features"]) == list(FEATURE_NAMES)
    assert list(reference["targets"]) == list(TARGET_NAMES)
    assert reference["features"]["temperature"]["edges"][::10] == [68.0, 103.0]  # min and max
    assert meta["lineage"]["sha256"] == meta["data"]["sha256"]
    assert (meta["lineage"]["data"], meta["lineage"]["fit_rows"], meta["lineage"]["forced"]) == (
        "builtin",
        15,
        False,
    )
    intervals = meta["intervals"]
    assert (intervals["rows"], intervals["dof"]) == (15, 11)
    assert len(intervals["xtx_inverse"]) == 4
    assert set(intervals["residual_variance"]) == {"apples", "oranges"}
    assert meta["seed"] == 0
    assert meta["versions"]["torch"].startswith("2.13.0")
    assert meta["versions"]["bentoml"] == "1.4.39"


def test_plots_are_written(default_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    _, result = default_run
    plots = [line.removeprefix("plot: ") for line in result.stderr.splitlines() if line.startswith("plot: ")]
    names = sorted(Path(p).name for p in plots)
    assert names == ["loss_curve.png", "predicted_vs_actual_apples.png", "predicted_vs_actual_oranges.png"]
    for p in plots:
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_help_documents_every_option(fresh_home: Path) -> None:
    result = run_training_cli(["--help"], fresh_home)
    assert result.returncode == 0
    for option in [
        "--data",
        "--epochs",
        "--batch-size",
        "--lr",
        "--seed",
        "--model-name",
        "--max-gap",
        "--plots",
        "--version",
        "--holdout-fraction",
        "--no-standardize",
        "--dry-run",
        "--quiet",
        "--compare-with",
        "--max-regression",
        "--force",
        "--token",
    ]:
        assert option in result.stdout
    assert "5 worse than the --compare-with model" in " ".join(result.stdout.split())
    assert store_snapshot(fresh_home) == {}


def test_bad_data_exits_2_and_writes_nothing(tmp_path: Path, fresh_home: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(CSV_HEADER + "\n73,67,forty,56,70\n" + "\n".join(builtin_rows()))
    result = run_training_cli(["--data", str(bad)], fresh_home)
    assert result.returncode == 2
    assert f"{bad}, line 2, column 'humidity': 'forty' is not a number" in result.stderr
    assert result.stdout == ""
    assert store_snapshot(fresh_home) == {}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--epochs", "0"], "--epochs: must be a positive integer"),
        (["--seed", "-1"], "--seed: must be an integer >= 0"),
    ],
)
def test_bad_option_names_the_option(fresh_home: Path, args: list[str], fragment: str) -> None:
    result = run_training_cli(args, fresh_home)
    assert result.returncode == 2
    assert fragment in result.stderr


def test_bad_tag_is_refused_before_fitting(fresh_home: Path) -> None:
    result = run_training_cli(["--version", "no good", "--if-missing"], fresh_home)
    assert result.returncode == 2
    assert "invalid model tag 'crop_yield:no good'" in result.stderr
    assert "fit:" not in result.stderr
    assert store_snapshot(fresh_home) == {}


def test_quality_gate_refuses_to_save(fresh_home: Path) -> None:
    result = run_training_cli(["--epochs", "1"], fresh_home)
    assert result.returncode == 3
    assert "above the least-squares optimum" in result.stderr
    assert "--max-gap" in result.stderr
    assert "try more --epochs (all 1 ran)" in result.stderr  # what would help, not a guess
    assert "--lr" not in result.stderr
    assert store_snapshot(fresh_home) == {}


def test_divergence_refuses_to_save(fresh_home: Path) -> None:
    result = run_training_cli(["--no-standardize", "--lr", "0.01"], fresh_home)
    assert result.returncode == 3
    assert "diverged" in result.stderr
    assert "lower the learning rate" in result.stderr
    assert store_snapshot(fresh_home) == {}


def test_existing_tag_is_never_overwritten(fresh_home: Path) -> None:
    first = run_training_cli(["--version", "v1", "--quiet"], fresh_home)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "crop_yield:v1"
    before = store_snapshot(fresh_home)
    second = run_training_cli(["--version", "v1", "--seed", "5", "--quiet"], fresh_home)
    assert second.returncode == 4
    assert "crop_yield:v1 already exists" in second.stderr
    assert store_snapshot(fresh_home) == before


def test_user_csv_with_holdout_and_json_safe_metadata(tmp_path: Path, fresh_home: Path) -> None:
    # 120 rows from a known linear map plus noise, columns shuffled: holdout metrics appear.
    rng = np.random.default_rng(0)
    x = rng.uniform([60, 40, 30], [105, 140, 75], size=(120, 3))
    y = x @ np.array([[-0.4, 0.85, 0.7], [-0.7, 0.6, 1.1]]).T + [20, 30] + rng.normal(0, 0.5, (120, 2))
    lines = ["apples,humidity,temperature,oranges,rainfall"]
    lines += [f"{a},{h},{t},{o},{r}" for (t, r, h), (a, o) in zip(x, y, strict=True)]
    path = tmp_path / "regions.csv"
    path.write_text("\n".join(lines) + "\n")
    result = run_training_cli(["--data", str(path), "--quiet", "--model-name", "regional"], fresh_home)
    assert result.returncode == 0, result.stderr
    tag = result.stdout.strip()
    assert tag.startswith("regional:")
    meta = yaml.safe_load((entry_dir(fresh_home, tag) / "model.yaml").read_text())["metadata"]
    assert meta["data"]["holdout_rows"] == 24
    assert meta["data"]["train_rows"] == 96
    assert meta["metrics"]["holdout"]["oranges"]["r2"] > 0.99
    json.dumps(meta, allow_nan=False)


@pytest.fixture(scope="module")
def guard_model() -> str:
    outcome = train(TrainOptions(model_name="bad-data-guard"))
    assert outcome.tag is not None
    return outcome.tag


@pytest.mark.parametrize("case", BAD_CSV_CASES, ids=list(BAD_CSV_CASES))
def test_every_bad_csv_exits_2_and_leaves_the_store_unchanged(
    case: str, tmp_path: Path, session_home: Path, guard_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # In process (fast) against the session store, which holds a model of this name.
    text, fragments = BAD_CSV_CASES[case]
    path = tmp_path / "data.csv"
    path.write_text(text)
    before = store_snapshot(session_home)
    assert main(["--data", str(path), "--model-name", "bad-data-guard"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"error: bad training data: {path}")
    for fragment in fragments:
        assert fragment in err
    assert store_snapshot(session_home) == before


def test_if_missing_trains_once(fresh_home: Path) -> None:
    first = run_training_cli(["--if-missing", "--quiet"], fresh_home)
    assert first.returncode == 0, first.stderr
    before = store_snapshot(fresh_home)
    second = run_training_cli(["--if-missing"], fresh_home)
    assert second.returncode == 0
    assert second.stdout == first.stdout
    assert "not training" in second.stderr
    assert store_snapshot(fresh_home) == before


def test_two_runs_at_once_make_two_complete_entries(fresh_home: Path) -> None:
    import os
    import sys

    env = {**os.environ, "BENTOML_HOME": str(fresh_home), "BENTOML_DO_NOT_TRACK": "true"}
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "training", "--quiet", "--seed", str(seed)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    tags = []
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        tags.append(out.strip())
    assert len(set(tags)) == 2
    for tag in tags:
        entry = entry_dir(fresh_home, tag)
        info = yaml.safe_load((entry / "model.yaml").read_text())
        assert info["metadata"]["seed"] in (1, 2)
        assert predict_from_store(fresh_home, tag, [SEED_004_QUERY]).shape == (1, 2)
    assert latest_version(fresh_home) in {t.split(":")[1] for t in tags}
    leftovers = [
        p
        for p in (fresh_home / "models" / "crop_yield").iterdir()
        if p.name not in {"latest", *[t.split(":")[1] for t in tags]}
    ]
    assert leftovers == []


@pytest.mark.parametrize(
    ("case", "args", "code"),
    [
        ("bad data", ["--data", "/nonexistent/data.csv"], 2),
        ("bad tag", ["--model-name", "Not A Tag!"], 2),
        ("quality gate", ["--epochs", "1"], 3),
        ("divergence", ["--no-standardize", "--lr", "0.01"], 3),
        ("existing tag", ["--version", "first"], 4),
    ],
)
def test_failed_runs_leave_latest_and_entries_unchanged(
    fresh_home: Path, case: str, args: list[str], code: int
) -> None:
    first = run_training_cli(["--quiet", "--version", "first"], fresh_home)
    assert first.returncode == 0, first.stderr
    before = store_snapshot(fresh_home)
    failed = run_training_cli(args, fresh_home)
    assert failed.returncode == code, failed.stderr
    assert store_snapshot(fresh_home) == before
    assert latest_version(fresh_home) == "first"

"""Helpers shared by the test tiers (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED_004_QUERY = [75.0, 63.0, 44.0]
"""The tutorial's example region; least squares predicts apples 53.80, oranges 66.81."""

CSV_HEADER = "temperature,rainfall,humidity,apples,oranges"
SHUTDOWN_AFTER_DEADLINE_S = 4
"""How long a served process may take to exit after CROP_YIELD_GRACEFUL_SHUTDOWN_TIMEOUT has run
out with calls still in flight on both transports: the shutdown hooks and the process exit
(0.8 s measured here; room left for a loaded machine). Held by test_grpc.py's shutdown test;
the manifests' termination grace period must cover the preStop sleep, the graceful timeout
and this (tests/deploy)."""


def store_snapshot(home: Path) -> dict[str, bytes]:
    """Every file under the model store with its bytes, to prove a run changed nothing."""
    models = home / "models"
    if not models.exists():
        return {}
    return {str(p.relative_to(models)): p.read_bytes() for p in sorted(models.rglob("*")) if p.is_file()}


def run_training_cli(
    args: list[str], home: Path, timeout: float = 120, module: str = "training"
) -> subprocess.CompletedProcess[str]:
    """``python -m training ARGS`` (or another ``module``: ``training.drift``) in a subprocess
    with its own model store."""
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def builtin_rows() -> list[str]:
    """The data lines of the shipped seed-004 CSV (without the header)."""
    text = (REPO_ROOT / "training" / "resources" / "crop_yield.csv").read_text()
    return text.strip().splitlines()[1:]


# Broken CSV files, each with the fragments its error message must contain (the file's
# own path is checked as well). Line numbers count the header as line 1.
ROWS = builtin_rows()


def with_cell(line_index: int, column: int, value: str) -> str:
    """The built-in CSV with one cell replaced; line_index counts data rows from 0."""
    rows = [r.split(",") for r in ROWS]
    rows[line_index][column] = value
    return "\n".join([CSV_HEADER, *(",".join(r) for r in rows)]) + "\n"


BAD_CSV_CASES: dict[str, tuple[str, list[str]]] = {
    "empty file": ("", ["data.csv", "file is empty"]),
    "only blank lines": ("\n\n  \n", ["data.csv", "file is empty"]),
    "missing column": (
        "temperature,rainfall,apples,oranges\n1,2,3,4\n",
        ["data.csv", "line 1", "missing column(s) 'humidity'"],
    ),
    "duplicate column": (
        CSV_HEADER + ",apples\n" + "\n".join(r + ",1" for r in ROWS),
        ["line 1", "column 'apples' appears twice"],
    ),
    "non-numeric cell": (
        with_cell(1, 1, "lots"),
        ["data.csv, line 3, column 'rainfall'", "'lots' is not a number"],
    ),
    "empty cell": (with_cell(4, 0, ""), ["line 6, column 'temperature'", "'' is not a number"]),
    "NaN": (with_cell(2, 2, "nan"), ["line 4, column 'humidity'", "'nan' is not a finite number"]),
    "infinity": (with_cell(0, 3, "-inf"), ["line 2, column 'apples'", "'-inf' is not a finite number"]),
    "overflowing literal": (with_cell(0, 4, "1e999"), ["line 2, column 'oranges'", "not a finite number"]),
    "ragged row": (
        CSV_HEADER + "\n" + "\n".join(ROWS[:5]) + "\n1,2,3\n" + "\n".join(ROWS[5:]),
        ["line 7", "expected 5 fields as in the header, found 3"],
    ),
    "too few rows": (CSV_HEADER + "\n" + "\n".join(ROWS[:4]) + "\n", ["4 data row(s); at least 5"]),
    "header only": (CSV_HEADER + "\n", ["0 data row(s)"]),
    "constant feature": (
        "\n".join([CSV_HEADER, *(f"70,{r.split(',', 1)[1]}" for r in ROWS)]),
        ["column 'temperature'", "same value 70", "constant feature"],
    ),
}


def require_tool(name: str) -> str:
    """Path of a command-line tool; skipped without it, except in CI where it must exist."""
    import shutil

    import pytest

    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(
                f"{name} is required in CI (podman: deploy/podman/setup.sh; prometheus, promtool: "
                "deploy/monitoring/setup.sh; kubectl: preinstalled)"
            )
        pytest.skip(f"{name} not installed")
    return path

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


def store_snapshot(home: Path) -> dict[str, bytes]:
    """Every file under the model store with its bytes, to prove a run changed nothing."""
    models = home / "models"
    if not models.exists():
        return {}
    return {str(p.relative_to(models)): p.read_bytes() for p in sorted(models.rglob("*")) if p.is_file()}


def run_training_cli(args: list[str], home: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m training ARGS`` in a subprocess with its own model store."""
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
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

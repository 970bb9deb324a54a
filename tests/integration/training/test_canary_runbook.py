"""The canary runbook's first step (docs/canary.md, "0. Train the new model and compare it
with the one in service") run as written, against a store holding the model in service."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.helpers import REPO_ROOT, run_training_cli

RUNBOOK = REPO_ROOT / "docs" / "canary.md"


def step_zero() -> str:
    text = RUNBOOK.read_text()
    section = text.split("## 0.", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return block


def test_the_runbooks_train_and_compare_step_saves_a_model_with_its_lineage(tmp_path: Path) -> None:
    store = tmp_path / "store"
    served = run_training_cli(["--quiet", "--version", "seed004-default"], store)
    assert served.returncode == 0, served.stderr
    work = tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(REPO_ROOT / ".venv")
    shutil.copy(REPO_ROOT / "training" / "resources" / "crop_yield.csv", work / "new_harvest.csv")
    env = {
        **os.environ,
        "BENTOML_HOME": str(store),
        "BENTOML_DO_NOT_TRACK": "true",
        "V": "seed005",
        "PYTHONPATH": str(REPO_ROOT),
    }
    result = subprocess.run(
        ["bash", "-c", step_zero()],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = result.stdout.splitlines()
    assert lines[:2] == ["crop_yield:seed005", "0"], result.stdout + result.stderr
    assert "challenger (this fit) vs champion crop_yield:seed004-default" in result.stderr
    assert "compared_with: crop_yield:seed004-default" in result.stdout  # bentoml models get
    assert "sha256:" in result.stdout

"""`bentoml build` works offline from bentofile.yaml, and the built bento serves by itself."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from contract import WEIGHTS_FILE
from tests.helpers import REPO_ROOT
from tests.integration.conftest import free_port, launch, stop_service, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BENTOML = [sys.executable, "-m", "bentoml"]


def test_build_export_and_serve_the_bento(trained_home: tuple[Path, str], tmp_path: Path) -> None:
    home, model_tag = trained_home
    # uv (a dev dependency, next to this interpreter) lets the build skip the online lock step.
    env = {
        **os.environ,
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "true",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    built = subprocess.run(
        [*BENTOML, "build", "--output", "tag"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr + built.stdout
    bento_tag = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    assert bento_tag.startswith("crop_yield:")

    archive = tmp_path / "crop_yield.bento"
    exported = subprocess.run(
        [*BENTOML, "export", bento_tag, str(archive)], env=env, capture_output=True, text=True
    )
    assert exported.returncode == 0, exported.stderr
    unpacked = tmp_path / "bento"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")

    # The bento carries its code (service and contract, not training or tests) and its model.
    src = {p.name for p in (unpacked / "src").iterdir()}
    assert {"service", "contract"} <= src
    assert not {"training", "tests", "benchmarks"} & src
    info = yaml.safe_load((unpacked / "bento.yaml").read_text())
    assert info["services"][0]["models"][0]["tag"] == model_tag
    name, version = model_tag.split(":")
    weights = load_file(str(unpacked / "models" / name / version / WEIGHTS_FILE))

    # Serve the unpacked folder from elsewhere with an empty store: code and model come from it.
    empty_home = tmp_path / "empty-home"
    empty_home.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    command = [*BENTOML, "serve", str(unpacked), "--host", "127.0.0.1", "--port", str(port)]
    process = launch(command, {**env, "BENTOML_HOME": str(empty_home)}, log, cwd=tmp_path)
    try:
        wait_ready(process, url, log)
        rows = np.array([[75.0, 63.0, 44.0], [60.0, 120.0, 80.0]])
        inputs = [dict(zip(("temperature", "rainfall", "humidity"), r, strict=True)) for r in rows.tolist()]
        response = httpx.post(f"{url}/predict", json={"inputs": inputs})
        assert response.status_code == 200, response.text
        assert response.json()["model"] == model_tag
        got = np.array([[p["apples"], p["oranges"]] for p in response.json()["predictions"]])
        expected = rows @ weights["weight"].T.astype(np.float64) + weights["bias"]
        np.testing.assert_allclose(got, expected, atol=1e-4)
    finally:
        stop_service(process)
    assert f'Starting production HTTP BentoServer from "{unpacked}"' in log.read_text()

"""The README's examples, executed against a real served process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT
from tests.integration.conftest import Server

pytestmark = pytest.mark.integration

README = (REPO_ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.DOTALL)
CURL = [code for lang, code in BLOCKS if lang == "bash" and code.lstrip().startswith("curl")]
PYTHON_CLIENTS = [code for lang, code in BLOCKS if lang == "python" and "localhost:3000" in code]


def test_readme_has_the_examples() -> None:
    assert len(CURL) >= 3
    assert len(PYTHON_CLIENTS) >= 3  # httpx, the generated client and tritonclient


@pytest.mark.parametrize("snippet", CURL, ids=[f"curl-{i}" for i in range(len(CURL))])
def test_curl_examples(server: Server, snippet: str) -> None:
    command = snippet.replace("http://localhost:3000", server.url)
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    if "model_name" in body:  # Open Inference Protocol
        assert f"{body['model_name']}:{body['model_version']}" == server.tag
        assert [o["name"] for o in body["outputs"]] == ["apples", "oranges"]
    else:
        assert body["model"] == server.tag
        assert "predictions" in body or "apples" in body


@pytest.mark.parametrize("snippet", PYTHON_CLIENTS, ids=[f"python-{i}" for i in range(len(PYTHON_CLIENTS))])
def test_python_client_examples(server: Server, snippet: str, generated_client_path: Path) -> None:
    host = server.url.removeprefix("http://")
    code = snippet.replace("http://localhost:3000", server.url).replace("localhost:3000", host)
    # the generated client's example imports the package the README's commands generate
    env = {**os.environ, "PYTHONPATH": str(generated_client_path)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False, env=env
    )
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"apples 53\.8\d t/ha, oranges 66\.8\d t/ha\n", result.stdout), result.stdout


def test_readme_settings_table_matches_the_settings_object() -> None:
    from service.settings import Settings

    rows = re.findall(r"^\| `CROP_YIELD_(\w+)` \| `([^`]*)` \| (.*) \|$", README, flags=re.MULTILINE)
    documented = {name.lower(): (default, text) for name, default, text in rows}
    actual = {name: (str(f.default), f.description) for name, f in Settings.model_fields.items()}
    assert documented == actual

"""The build descriptions agree with pyproject.toml, the one list of pinned dependencies."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import yaml

from contract import __version__
from tests.helpers import REPO_ROOT


def pyproject() -> dict[str, object]:
    with (REPO_ROOT / "pyproject.toml").open("rb") as f:
        project: dict[str, object] = tomllib.load(f)["project"]
    return project


def test_bentofile_pins_the_runtime_dependencies() -> None:
    bentofile = yaml.safe_load((REPO_ROOT / "bentofile.yaml").read_text())
    assert sorted(bentofile["python"]["packages"]) == sorted(pyproject()["dependencies"])  # type: ignore[arg-type]
    assert bentofile["python"]["lock_packages"] is False  # offline builds
    assert bentofile["service"] == "service.service:CropYieldService"


def test_dockerfile_requirements_come_from_pyproject() -> None:
    script = REPO_ROOT / "deploy" / "docker" / "requirements.py"
    runtime = subprocess.run(
        [sys.executable, str(script), str(REPO_ROOT / "pyproject.toml")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert runtime == pyproject()["dependencies"]
    assert all("==" in line for line in runtime)
    with_train = subprocess.run(
        [sys.executable, str(script), str(REPO_ROOT / "pyproject.toml"), "train"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert {"matplotlib==3.11.2", "tqdm==4.70.1"} <= set(with_train)


def test_version_has_one_source() -> None:
    assert "version" in pyproject()["dynamic"]  # type: ignore[operator]
    from importlib.metadata import version

    assert version("crop-yield-service") == __version__


def test_the_repository_stands_alone() -> None:
    """Nothing points outside the repository: a user who clones it has only what is in it."""
    outside = re.compile(r"\.\./" + "shared" + r"\b|/work/" + "main")
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    offenders = []
    for name in tracked:
        path = REPO_ROOT / name
        if path.suffix in (".gz", ".png") or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if outside.search(line):
                offenders.append(f"{name}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
    readme = (REPO_ROOT / "README.md").read_text()
    for link in re.findall(r"\]\((docs/[^)]+)\)", readme):
        assert (REPO_ROOT / link).is_file(), link

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

    def pins(*args: str) -> list[str]:
        command = [sys.executable, str(script), str(REPO_ROOT / "pyproject.toml"), *args]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()

    # The image's two install layers: everything but torch (shared by CPU and CUDA), then torch.
    assert pins("--only", "torch") == ["torch==2.13.0"]
    assert sorted(pins("--without", "torch") + pins("--only", "torch")) == sorted(runtime)


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


def test_the_readme_lists_the_machine_packages() -> None:
    """The prerequisites table names every package of the list the set-up scripts install."""
    listed = (REPO_ROOT / "devtools" / "system-packages.txt").read_text()
    groups = dict(
        line.split(":", 1) for line in listed.splitlines() if line.strip() and not line.startswith("#")
    )
    assert {"container", "monitoring", "browser", "benchmark"} <= set(groups)
    assert "iptables" in groups["container"].split()
    readme = (REPO_ROOT / "README.md").read_text()
    for group, packages in groups.items():
        assert f"| {group} | {' '.join(packages.split())} |" in readme, group
    for script in ("deploy/podman/setup.sh", "deploy/monitoring/setup.sh", "devtools/browser-setup.sh"):
        assert "apt-tools.sh" in (REPO_ROOT / script).read_text(), script

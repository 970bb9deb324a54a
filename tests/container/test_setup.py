"""The podman set-up script's smoke check: it proves what it set up, and a missing piece
stops it with one line naming that piece (not an error deep inside a test fixture)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.container.conftest import CONTAINERS_CONF
from tests.helpers import REPO_ROOT, require_tool

SETUP = REPO_ROOT / "deploy" / "podman" / "setup.sh"


def run_setup(path: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path, "CONTAINERS_CONF": str(CONTAINERS_CONF), "CI": "true"}
    return subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, env=env, timeout=300)


def test_setup_proves_the_network_and_kube_play() -> None:
    require_tool("podman")
    result = run_setup(os.environ["PATH"])
    assert result.returncode == 0, result.stderr
    assert "bridge network and kube play work" in result.stderr


def test_a_missing_iptables_is_named_in_one_line(tmp_path: Path) -> None:
    require_tool("podman")
    iptables = shutil.which("iptables")
    assert iptables is not None
    # The same PATH without the folder that holds iptables, plus every other command of it.
    hidden = Path(iptables).parent.resolve()
    shadow = tmp_path / "bin"
    shadow.mkdir()
    for entry in hidden.iterdir():
        if not entry.name.startswith("iptables") and entry.is_file():
            (shadow / entry.name).symlink_to(entry)
    path = os.pathsep.join(
        [str(shadow), *(p for p in os.environ["PATH"].split(os.pathsep) if Path(p).resolve() != hidden)]
    )
    result = run_setup(path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == ["podman set-up: 'iptables' is not on PATH (netavark needs it for the bridge network)"]

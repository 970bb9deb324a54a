"""A real served process for the integration tests: trained model, temp store, free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.helpers import REPO_ROOT, run_training_cli


@dataclass(frozen=True)
class Server:
    url: str
    home: Path
    tag: str
    process: subprocess.Popen[bytes]
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(
    command: list[str], env: dict[str, str], log: Path, cwd: Path = REPO_ROOT
) -> subprocess.Popen[bytes]:
    """Start a server process in its own process group, output to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the test can signal the whole process group
        )


def wait_ready(process: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 60) -> None:
    """Return once ``url``/readyz answers 200; fail with the server's log otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop_service(process)
    raise RuntimeError(f"server not ready after {timeout} s:\n{log.read_text()}")


def serving_home(store: Path, where: Path) -> Path:
    """A BentoML home of its own for one server, whose models are ``store``'s (a symlink).

    ``bentoml serve`` empties ``$BENTOML_HOME/prometheus_multiproc_dir`` when it starts, so
    servers sharing a home would erase each other's metrics.
    """
    home = where / "bentoml-home"
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "models").exists():
        (home / "models").symlink_to(store / "models", target_is_directory=True)
    return home


def start_service(home: Path, log: Path, **settings: str) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m service`` with CROP_YIELD_* settings, serving the models of the store at
    ``home``; returns once /readyz answers 200."""
    port = free_port()
    env = {
        **os.environ,
        "BENTOML_HOME": str(serving_home(home, log.parent)),
        "BENTOML_DO_NOT_TRACK": "true",
        "CROP_YIELD_HOST": "127.0.0.1",
        "CROP_YIELD_PORT": str(port),
        **{f"CROP_YIELD_{k.upper()}": v for k, v in settings.items()},
    }
    process = launch([sys.executable, "-m", "service"], env, log)
    url = f"http://127.0.0.1:{port}"
    wait_ready(process, url, log)
    return process, url


def stop_service(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A model store holding one default model, trained by the real pipeline."""
    home = tmp_path_factory.mktemp("served-store")
    result = run_training_cli(["--quiet"], home)
    assert result.returncode == 0, result.stderr
    return home, result.stdout.strip()


@contextmanager
def serving(trained: tuple[Path, str], where: Path, **settings: str) -> Iterator[Server]:
    """A served process of the trained store with CROP_YIELD_* settings, its log in ``where``."""
    home, tag = trained
    log = where / "service.log"
    process, url = start_service(home, log, **settings)
    try:
        yield Server(url, home, tag, process, log)
    finally:
        stop_service(process)


@pytest.fixture(scope="session")
def server(trained_home: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(trained_home, tmp_path_factory.mktemp("logs")) as served:
        yield served

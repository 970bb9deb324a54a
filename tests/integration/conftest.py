"""A real served process for the integration tests: trained model, temp store, free port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devtools import served
from tests.helpers import run_training_cli


@dataclass(frozen=True)
class Server:
    url: str
    home: Path
    tag: str
    process: subprocess.Popen[bytes]
    log: Path
    grpc_port: int


def start_service(home: Path, log: Path, **settings: str) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m service`` with CROP_YIELD_* settings serving the store at ``home``, in a
    home of its own beside ``log``; returns once /readyz answers 200."""
    process, url, _ = served.start_service(home, log, log.parent, **settings)
    return process, url


stop_service = served.stop
free_port = served.free_port
launch = served.launch
wait_ready = served.wait_ready


@contextmanager
def serving(trained: tuple[Path, str], where: Path, **settings: str) -> Iterator[Server]:
    """A served process of the trained store with CROP_YIELD_* settings, its log in ``where``."""
    home, tag = trained
    log = where / "service.log"
    pinned = "grpc_port" in settings
    for attempt in range(3):
        if not pinned:
            settings["grpc_port"] = str(free_port())
        try:
            process, url = start_service(home, log, **settings)  # a new HTTP port each time
            break
        except RuntimeError as exc:  # another process took a port between its pick and its bind
            if attempt == 2 or served.PORT_TAKEN not in str(exc):
                raise
    try:
        yield Server(url, home, tag, process, log, int(settings["grpc_port"]))
    finally:
        stop_service(process)


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A model store holding one default model, trained by the real pipeline."""
    home = tmp_path_factory.mktemp("served-store")
    result = run_training_cli(["--quiet"], home)
    assert result.returncode == 0, result.stderr
    return home, result.stdout.strip()


@pytest.fixture(scope="session")
def server(trained_home: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(trained_home, tmp_path_factory.mktemp("logs")) as running:
        yield running


CLIENT_PACKAGE = "crop_yield_prediction_service_client"


@pytest.fixture(scope="session")
def generated_client_path(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where openapi-python-client put the client it generated from the served /docs.json
    (the directory holding the ``crop_yield_prediction_service_client`` package)."""
    where = tmp_path_factory.mktemp("client")
    (where / "docs.json").write_text(json.dumps(httpx.get(f"{server.url}/docs.json").json()))
    venv_bin = str(Path(sys.executable).parent)  # the generator formats its output with ruff
    result = subprocess.run(
        [f"{venv_bin}/openapi-python-client", "generate", "--path", "docs.json", "--output-path", "client"],
        cwd=where,
        env={**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (where / "client" / CLIENT_PACKAGE).is_dir()
    return where / "client"

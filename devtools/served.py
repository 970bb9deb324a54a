"""Served processes for tests, benchmarks and load tests: free ports, start, readiness, stop.

One implementation of "start ``python -m service`` (or another server) on a free loopback
port, wait until it answers, stop it with its whole process group".
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
PORT_TAKEN = "Address already in use"
"""In a server's log when a port ``free_port`` found free was taken by another process before
the server bound it (ports are picked, then bound: the race cannot be closed from outside)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(
    command: list[str], env: dict[str, str], log: Path | None, cwd: Path = REPO_ROOT
) -> subprocess.Popen[bytes]:
    """Start a server in its own process group (so all of it can be signalled), output to ``log``."""
    if log is None:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    with log.open("wb") as out:
        return subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_ready(
    process: subprocess.Popen[bytes],
    url: str,
    log: Path | None = None,
    timeout: float = 60,
    path: str = "/readyz",
) -> float:
    """Seconds until ``url + path`` answered 200; stops the server and raises otherwise."""
    started = time.monotonic()
    checked = started
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            output = log.read_text() if log else ""
            raise RuntimeError(f"server exited with {process.returncode}:\n{output}")
        if log is not None and time.monotonic() - checked > 0.5:
            # a worker that cannot bind its port is restarted for ever: say so at once
            checked = time.monotonic()
            if log.exists() and PORT_TAKEN in (output := log.read_text(errors="replace")):
                stop(process)
                raise RuntimeError(f"a port of the server was taken:\n{output}")
        try:
            if httpx.get(f"{url}{path}", timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    stop(process)
    raise RuntimeError(f"server not ready after {timeout} s:\n{log.read_text() if log else ''}")


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM to the server's process group (SIGKILL after ``timeout``); its exit status."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


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


def start_service(
    store: Path, log: Path | None, where: Path, **settings: str
) -> tuple[subprocess.Popen[bytes], str, float]:
    """``python -m service`` with CROP_YIELD_* settings serving the models of ``store``;
    returns (process, url, seconds to ready) once /readyz answers 200."""
    port = free_port()
    env = {
        **os.environ,
        "BENTOML_HOME": str(serving_home(store, where)),
        "BENTOML_DO_NOT_TRACK": "true",
        "CROP_YIELD_HOST": "127.0.0.1",
        "CROP_YIELD_PORT": str(port),
        "CROP_YIELD_GRPC_PORT": str(free_port()),  # never the shared default (SO_REUSEPORT)
        **{f"CROP_YIELD_{k.upper()}": v for k, v in settings.items()},
    }
    process = launch([sys.executable, "-m", "service"], env, log)
    url = f"http://127.0.0.1:{port}"
    return process, url, wait_ready(process, url, log)


def worker_rss_mb(process: subprocess.Popen[bytes]) -> float:
    """Largest resident set among the server's processes (the worker holds the model)."""
    parent = psutil.Process(process.pid)
    return max(p.memory_info().rss for p in [parent, *parent.children(recursive=True)]) / 2**20

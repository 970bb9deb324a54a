"""Start and stop TorchServe serving the same Linear(3, 2), for the service benchmark.

Standard library only, so any interpreter can drive it; TorchServe itself runs from the
venv made by setup_peers.sh (default .peers/torchserve) and needs ``java`` on PATH.

    .venv/bin/python benchmarks/peers/torchserve_peer.py --weights W.safetensors --port 8080

serves until Ctrl-C / SIGTERM, then runs ``torchserve --stop``. From Python::

    with TorchServePeer(weights) as peer:          # start() ... stop()
        httpx.post(f"{peer.url}/predictions/crop_yield", json={...})

Everything TorchServe writes (the .mar, config.properties, logs, its pid file, the
unpacked model) lies in one temporary folder, removed on stop.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_VENV = HERE.parents[1] / ".peers" / "torchserve"
MODEL = "crop_yield"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as answer:
        return json.load(answer)


class TorchServePeer:
    def __init__(self, weights: Path, port: int | None = None, venv: Path = DEFAULT_VENV):
        self.weights = Path(weights).resolve()
        self.port = port or free_port()
        self.bin = Path(venv) / "bin"
        self.url = f"http://127.0.0.1:{self.port}"
        self.management = f"http://127.0.0.1:{free_port()}"
        self.work: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def _env(self) -> dict[str, str]:
        # TorchServe keeps its pid file in the temp dir (so --stop must see the same one),
        # unpacks models into TEMP and writes logs to LOG_LOCATION (else ./logs).
        assert self.work is not None
        logs = str(self.work / "logs")
        return {
            **os.environ,
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "TMPDIR": str(self.work),
            "TEMP": str(self.work),
            "LOG_LOCATION": logs,
            "METRICS_LOCATION": logs,
        }

    def _archive(self, store: Path) -> None:
        """crop_yield.mar = the handler + the weights (as model.safetensors, the name the
        handler reads)."""
        assert self.work is not None
        shutil.copyfile(self.weights, self.work / "model.safetensors")
        subprocess.run(
            [
                str(self.bin / "torch-model-archiver"),
                "--model-name", MODEL,
                "--version", "1.0",
                "--handler", str(HERE / "torchserve_handler.py"),
                "--extra-files", str(self.work / "model.safetensors"),
                "--export-path", str(store),
            ],
            check=True, cwd=self.work, env=self._env(),
        )  # fmt: skip

    def _config(self, store: Path) -> Path:
        """config.properties: loopback only, one worker, batches of up to 32 within 1 ms."""
        assert self.work is not None
        model = {
            "defaultVersion": True,
            "marName": f"{MODEL}.mar",
            "minWorkers": 1,
            "maxWorkers": 1,
            "batchSize": 32,
            "maxBatchDelay": 1,
            "responseTimeout": 60,
        }
        settings = {
            "inference_address": self.url,
            "management_address": self.management,
            "metrics_address": f"http://127.0.0.1:{free_port()}",
            # gRPC cannot be turned off; keep it on loopback and off the default 7070/7071.
            "grpc_inference_address": "127.0.0.1",
            "grpc_inference_port": free_port(),
            "grpc_management_address": "127.0.0.1",
            "grpc_management_port": free_port(),
            # Frontend <-> Python worker Unix sockets ($TMPDIR/.ts.sock.N) count from here.
            "initial_worker_port": free_port(),
            "model_store": store,
            "load_models": f"{MODEL}.mar",
            "models": json.dumps({MODEL: {"1.0": model}}),
            "default_workers_per_model": 1,
            "disable_token_authorization": "true",
            # No TS_* environment overrides, no per-minute system metrics subprocess.
            "enable_envvars_config": "false",
            "disable_system_metrics": "true",
        }
        path = self.work / "config.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        return path

    def start(self, timeout: float = 120) -> float:
        """Archive, configure and start TorchServe; seconds until the model's worker is READY.
        On failure nothing is left behind (no process, no temporary folder)."""
        if shutil.which("java") is None:
            raise RuntimeError("TorchServe needs java on PATH (Debian: default-jre-headless)")
        started = time.monotonic()
        self.work = Path(tempfile.mkdtemp(prefix="torchserve-peer-"))
        try:
            self.process = self._launch()
            while not self.ready():
                if self.process.poll() is not None or time.monotonic() - started > timeout:
                    raise RuntimeError(f"torchserve not ready:\n{self.log_tail()}")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return time.monotonic() - started

    def _launch(self) -> subprocess.Popen[bytes]:
        assert self.work is not None
        store = self.work / "model_store"
        store.mkdir()
        self._archive(store)
        config = self._config(store)
        with (self.work / "torchserve.out").open("wb") as log:
            return subprocess.Popen(
                [
                    str(self.bin / "torchserve"), "--start", "--foreground",
                    "--ncs", "--disable-token-auth",
                    "--ts-config", str(config), "--model-store", str(store),
                ],
                cwd=self.work, env=self._env(), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() reaches all of it
            )  # fmt: skip

    def ready(self) -> bool:
        """The model's worker is READY (management API). Not /ping: that says Healthy even
        while the worker keeps failing to start."""
        try:
            [model] = _get_json(f"{self.management}/models/{MODEL}")
            return any(worker["status"] == "READY" for worker in model["workers"])
        except (OSError, ValueError, KeyError):
            return False

    def log_tail(self, lines: int = 30) -> str:
        """The end of the frontend's output and of the Python worker's log (handler errors)."""
        assert self.work is not None
        tails = []
        for path in (self.work / "torchserve.out", self.work / "logs" / "model_log.log"):
            if path.exists():
                tails += [f"== {path.name}", *path.read_text(errors="replace").splitlines()[-lines:]]
        return "\n".join(tails)

    def stop(self, keep_files: bool = False) -> None:
        """``torchserve --stop`` (it waits for the Java frontend to exit); SIGKILL to the
        whole process group if anything is left; then remove the temporary folder."""
        if self.process is not None:
            subprocess.run(
                [str(self.bin / "torchserve"), "--stop", "--foreground"],
                cwd=self.work, env=self._env(), timeout=90, check=False,
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
            with contextlib.suppress(ProcessLookupError):  # anything still in the group
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None
        if self.work is not None and not keep_files:
            shutil.rmtree(self.work, ignore_errors=True)
            self.work = None

    def __enter__(self) -> TorchServePeer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True, help="a safetensors file")
    parser.add_argument("--port", type=int, default=8080, help="inference port")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    args = parser.parse_args()
    peer = TorchServePeer(args.weights, args.port, args.venv)
    # Ctrl-C and SIGTERM both end in peer.stop() (SIGINT set explicitly: a shell's
    # background job starts with it ignored).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        seconds = peer.start()
        print(f"ready in {seconds:.1f} s: POST {peer.url}/predictions/{MODEL}", flush=True)
        print(f"management: {peer.management}, files: {peer.work}", flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        peer.stop()
        print("stopped", flush=True)


if __name__ == "__main__":
    main()

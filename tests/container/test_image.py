"""The built image: size, labels, gRPC, non-root, read-only root, healthcheck, SIGTERM, model choice."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from safetensors.numpy import load_file

from contract import __version__
from devtools.bursts import bulk_bodies, fire
from tests.container.conftest import answers_grpc, podman
from tests.helpers import run_training_cli
from tests.integration.conftest import free_port

BAKED_TAG = "crop_yield:seed004-default"
HARDENED = [
    "--read-only",
    "--tmpfs",
    "/tmp:rw,size=256m",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
]


def run_container(image: str, name: str, *extra: str) -> str:
    """Start a hardened container; return its base URL once /readyz answers 200."""
    port = free_port()
    podman("rm", "--force", name, check=False)
    podman("run", "--detach", "--name", name, *HARDENED, "-p", f"127.0.0.1:{port}:3000", *extra, image)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return url
        except httpx.HTTPError:
            time.sleep(0.3)
    logs = podman("logs", name, check=False)
    raise AssertionError(f"container not ready:\n{logs.stdout}{logs.stderr}")


@pytest.fixture(scope="module")
def served(image: str) -> Iterator[tuple[str, str]]:
    name = "crop-yield-test"
    url = run_container(image, name, "-p", "127.0.0.1::8001")  # gRPC on any free host port
    yield name, url
    podman("rm", "--force", name, check=False)


def baked_weights(image: str, tmp_path: Path) -> dict[str, np.ndarray]:
    path = f"/opt/crop-yield/bentoml/models/crop_yield/{BAKED_TAG.split(':')[1]}/model.safetensors"
    raw = podman("run", "--rm", "--entrypoint", "cat", image, path, text=False).stdout
    (tmp_path / "w.safetensors").write_bytes(raw)
    return load_file(str(tmp_path / "w.safetensors"))


def test_image_size_and_labels(image: str) -> None:
    info = json.loads(podman("image", "inspect", image).stdout)[0]
    size_gb = info["Size"] / 1e9
    print(f"image size: {size_gb:.2f} GB")
    # CPU torch is most of it; the gRPC stack (grpcio, protobuf, health, reflection) took the
    # image from just under 1.5 GB to 1.51 GB.
    assert size_gb < 1.6
    labels = info["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.source"]
    assert labels["io.crop-yield.model-tag"] == BAKED_TAG
    assert info["Config"]["User"] == "10001:10001"
    assert {"3000/tcp", "8001/tcp"} <= set(info["Config"]["ExposedPorts"])


def test_serves_correct_predictions(served: tuple[str, str], image: str, tmp_path: Path) -> None:
    _, url = served
    assert httpx.get(f"{url}/metadata").json()["service_version"] == __version__
    rows = np.array([[75.0, 63.0, 44.0], [60.0, 120.0, 80.0], [95.0, 40.0, 30.0]])
    inputs = [dict(zip(("temperature", "rainfall", "humidity"), r, strict=True)) for r in rows.tolist()]
    response = httpx.post(f"{url}/predict", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == BAKED_TAG
    got = np.array([[p["apples"], p["oranges"]] for p in body["predictions"]])
    weights = baked_weights(image, tmp_path)
    np.testing.assert_allclose(
        got, rows @ weights["weight"].T.astype(np.float64) + weights["bias"], atol=1e-4
    )
    assert got[0] == pytest.approx([53.80, 66.81], abs=0.05)


def test_answers_grpc(served: tuple[str, str]) -> None:
    name, _ = served
    answers_grpc(podman("port", name, "8001/tcp").stdout.strip())


def test_runs_as_non_root_on_a_read_only_root(served: tuple[str, str]) -> None:
    name, _ = served
    assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
    info = json.loads(podman("container", "inspect", name).stdout)[0]
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    denied = podman("exec", name, "touch", "/app/x", check=False)
    assert denied.returncode != 0
    assert "Read-only file system" in denied.stderr
    processes = podman("top", name, "user", "args").stdout.splitlines()[1:]
    assert processes
    assert all(line.split()[0] in {"app", "10001"} for line in processes), processes


def test_healthcheck_passes(served: tuple[str, str]) -> None:
    name, _ = served
    assert podman("healthcheck", "run", name, check=False).returncode == 0


def test_sigterm_lets_in_flight_requests_finish(image: str) -> None:
    name = "crop-yield-sigterm"
    url = run_container(image, name)
    n = 1_000_000  # a bulk request that takes a few hundred milliseconds
    body = json.dumps({"temperature": [73.0] * n, "rainfall": [67.0] * n, "humidity": [43.0] * n})
    result: dict[str, httpx.Response] = {}

    def call() -> None:
        result["r"] = httpx.post(
            f"{url}/predict_columns", content=body, headers={"content-type": "application/json"}, timeout=60
        )

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.2)  # the request is in flight
    started = time.monotonic()
    podman("stop", "--time", "30", name)
    stopped_after = time.monotonic() - started
    caller.join()
    try:
        assert result["r"].status_code == 200
        assert len(result["r"].json()["apples"]) == n
        state = json.loads(podman("container", "inspect", name).stdout)[0]["State"]
        assert state["ExitCode"] == 0
        assert stopped_after < 20  # well inside the graceful-shutdown timeout
    finally:
        podman("rm", "--force", name, check=False)


def test_bursts_under_a_2g_memory_limit_are_answered_and_never_oom_killed(image: str) -> None:
    name = "crop-yield-memory"
    url = run_container(image, name, "--memory", "2g")
    try:
        metrics = httpx.get(f"{url}/metrics").text
        (budget,) = re.findall(r"^crop_yield_memory_budget_bytes (\S+)$", metrics, flags=re.MULTILINE)
        assert 0 < float(budget) < 0.75 * 2**31  # drawn from the container's cgroup limit
        result = fire(url, bulk_bodies(), lambda: 0.0, calls=32)
        assert not result.errors, result.errors
        assert set(result.statuses) <= {200, 503}, result.line()
        assert result.retry_after == result.statuses[503]
        assert result.statuses[200] >= 16, result.line()
        state = json.loads(podman("container", "inspect", name).stdout)[0]["State"]
        assert state["Running"], state
        assert not state["OOMKilled"], state
        assert httpx.get(f"{url}/readyz").status_code == 200
    finally:
        podman("rm", "--force", name, check=False)


def test_operator_can_mount_another_model_store(image: str, tmp_path: Path) -> None:
    store = tmp_path / "store"
    trained = run_training_cli(["--version", "mounted", "--seed", "3", "--quiet"], store)
    assert trained.returncode == 0, trained.stderr
    subprocess.run(["chmod", "-R", "a+rX", str(tmp_path)], check=True)  # readable by uid 10001
    name = "crop-yield-mounted"
    url = run_container(
        image,
        name,
        "-v",
        f"{store}:/mnt/store:ro",
        "-e",
        "BENTOML_HOME=/mnt/store",
        "-e",
        "CROP_YIELD_MODEL_TAG=crop_yield:mounted",
    )
    try:
        assert httpx.get(f"{url}/metadata").json()["model"] == "crop_yield:mounted"
    finally:
        podman("rm", "--force", name, check=False)

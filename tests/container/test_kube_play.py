"""`podman kube play` of the rendered Deployment (its pod starts with the manifest's security
context and read-only root, and serves /predict) and of the KServe InferenceService's
predictor as a Pod (its V2 probes answer and it serves V2 inference)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.container.conftest import answers_grpc, podman
from tests.helpers import REPO_ROOT
from tests.integration.conftest import free_port


def rendered(overlay: str, kind: str) -> dict[str, Any]:
    """The one object of ``kind`` in ``kubectl kustomize deploy/kubernetes/<overlay>``."""
    text = subprocess.run(
        ["kubectl", "kustomize", str(REPO_ROOT / "deploy" / "kubernetes" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (found,) = [d for d in yaml.safe_load_all(text) if d and d["kind"] == kind]
    result: dict[str, Any] = found
    return result


def local_deployment(image: str, port: int, grpc_port: int) -> dict[str, Any]:
    deployment = rendered("overlays/cpu", "Deployment")
    deployment["spec"]["replicas"] = 1
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    container["image"] = image
    container["imagePullPolicy"] = "Never"
    http, grpc = container["ports"]
    http.update(hostPort=port, hostIP="127.0.0.1")
    grpc.update(hostPort=grpc_port, hostIP="127.0.0.1")
    result: dict[str, Any] = deployment
    return result


@contextmanager
def played(manifest: Path, document: dict[str, Any], ready_path: str, port: int) -> Iterator[str]:
    """``podman kube play`` the document; yields the pod's URL once ``ready_path`` answers 200."""
    manifest.write_text(yaml.safe_dump(document))
    podman("kube", "down", str(manifest), check=False)
    result = podman("kube", "play", str(manifest), check=False, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}{ready_path}", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("pod not ready: " + podman("pod", "ps", check=False).stdout)
        yield url
    finally:
        podman("kube", "down", str(manifest), check=False)


def test_kube_play_runs_the_deployment(image: str, tmp_path: Path) -> None:
    port, grpc_port = free_port(), free_port()
    deployment = local_deployment(image, port, grpc_port)
    with played(tmp_path / "deployment.yaml", deployment, "/readyz", port) as url:
        response = httpx.post(
            f"{url}/predict", json={"inputs": [{"temperature": 75, "rainfall": 63, "humidity": 44}]}
        )
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["apples"] == pytest.approx(53.80, abs=0.05)
        answers_grpc(f"127.0.0.1:{grpc_port}")

        names = podman("ps", "--filter", "label=app.kubernetes.io/name=crop-yield", "--format", "{{.Names}}")
        (name,) = [n for n in names.stdout.split() if "infra" not in n]
        info = json.loads(podman("container", "inspect", name).stdout)[0]
        assert info["HostConfig"]["ReadonlyRootfs"] is True
        assert info["Config"]["User"].split(":")[0] == "10001"
        assert set(info["EffectiveCaps"] or []) == set()
        assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
        assert podman("exec", name, "touch", "/tmp/writable").returncode == 0


def local_kserve_pod(image: str, port: int, grpc_port: int) -> dict[str, Any]:
    """The KServe predictor of the rendered InferenceService, as the Pod KServe would create."""
    isvc = rendered("kserve/cpu", "InferenceService")
    spec = {k: v for k, v in isvc["spec"]["predictor"].items() if k not in ("minReplicas", "maxReplicas")}
    (container,) = spec["containers"]
    container["image"] = image
    container["imagePullPolicy"] = "Never"
    http, grpc = container["ports"]
    http.update(hostPort=port, hostIP="127.0.0.1")
    grpc.update(hostPort=grpc_port, hostIP="127.0.0.1")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "crop-yield-predictor",
            "labels": {"app.kubernetes.io/name": "crop-yield-kserve"},
        },
        "spec": spec,
    }


def test_kube_play_runs_the_kserve_predictor(image: str, tmp_path: Path) -> None:
    port, grpc_port = free_port(), free_port()
    pod = local_kserve_pod(image, port, grpc_port)
    with played(tmp_path / "predictor.yaml", pod, "/v2/health/ready", port) as url:
        assert httpx.get(f"{url}/v2/health/live").json() == {"live": True}
        body = {
            "inputs": [
                {"name": name, "shape": [1], "datatype": "FP32", "data": [value]}
                for name, value in (("temperature", 75), ("rainfall", 63), ("humidity", 44))
            ]
        }
        response = httpx.post(f"{url}/v2/models/crop_yield/infer", json=body)
        assert response.status_code == 200, response.text
        apples = next(o for o in response.json()["outputs"] if o["name"] == "apples")
        assert apples["data"][0] == pytest.approx(53.80, abs=0.05)
        answers_grpc(f"127.0.0.1:{grpc_port}")

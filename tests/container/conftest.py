"""Container tier: builds the real image with podman once per session.

These tests are marked ``container``; they skip where podman is missing, except in CI,
where .ci/run has installed it (deploy/podman/setup.sh) and a skip would hide a failure.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devtools.grpc_requests import infer_request
from service.grpc import inference_pb2_grpc as rpc
from tests.helpers import REPO_ROOT, require_tool

IMAGE = "localhost/crop-yield:test"
CONTAINERS_CONF = REPO_ROOT / "deploy" / "podman" / "containers.conf"


def podman(
    *args: str, check: bool = True, timeout: float = 120, text: bool = True
) -> subprocess.CompletedProcess[Any]:
    """Run podman with the project's containers.conf (runc, file-descriptor limits)."""
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    return subprocess.run(
        ["podman", *args], capture_output=True, text=text, env=env, check=check, timeout=timeout
    )


def build_image(tag: str, **env: str) -> str:
    """``deploy/podman/build.sh TAG`` (extra environment: ``CUDA="1"`` for the CUDA image)."""
    require_tool("podman")
    built = subprocess.run(
        ["bash", str(REPO_ROOT / "deploy" / "podman" / "build.sh"), tag],
        capture_output=True,
        text=True,
        env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF), **env},
        timeout=1800,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return tag


@pytest.fixture(scope="session")
def image() -> str:
    return build_image(IMAGE)


def answers_grpc(address: str) -> None:
    """The gRPC port at ``address`` reports SERVING and predicts the region of the README's example."""
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        answer = rpc.GRPCInferenceServiceStub(channel).ModelInfer(  # type: ignore[no-untyped-call]
            infer_request(np.array([[75.0, 63.0, 44.0]])), timeout=10
        )
    apples = next(t for t in answer.outputs if t.name == "apples")
    assert apples.contents.fp32_contents[0] == pytest.approx(53.80, abs=0.05)

"""Several versions of the model served side by side (CROP_YIELD_VERSION_POLICY), addressed
by version over V2 REST and gRPC, against served processes with two workers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from safetensors.numpy import load_file

from devtools import grpc_requests
from service.grpc import inference_pb2 as pb
from service.grpc import inference_pb2_grpc as rpc
from tests.helpers import REPO_ROOT, run_training_cli
from tests.integration.conftest import Server, serving

ROWS = np.array([[73.0, 67.0, 43.0], [91.0, 88.0, 64.0]], dtype=np.float32)
FEATURES = ("temperature", "rainfall", "humidity")


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A store holding v1 and then v2 (another seed: other weights)."""
    home = tmp_path_factory.mktemp("two-versions")
    for version, seed in (("v1", "1"), ("v2", "5")):
        result = run_training_cli(["--quiet", "--version", version, "--seed", seed], home)
        assert result.returncode == 0, result.stderr
    return home, "crop_yield:v2"


@pytest.fixture(scope="module")
def both(two_versions: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(
        two_versions, tmp_path_factory.mktemp("both"), version_policy="latest:2", workers="2"
    ) as server:
        yield server


def expected(home: Path, version: str) -> np.ndarray:
    weights = load_file(str(home / "models" / "crop_yield" / version / "model.safetensors"))
    return ROWS @ weights["weight"].T + weights["bias"]


def v2_infer(server: Server, path: str) -> httpx.Response:
    body = {
        "inputs": [
            {"name": n, "shape": [len(ROWS)], "datatype": "FP32", "data": ROWS[:, j].tolist()}
            for j, n in enumerate(FEATURES)
        ]
    }
    return httpx.post(f"{server.url}{path}", json=body, timeout=30)


def test_each_version_answers_with_its_own_weights_over_rest(both: Server) -> None:
    assert not np.allclose(expected(both.home, "v1"), expected(both.home, "v2"))
    for path, version in (
        ("/v2/models/crop_yield/infer", "v2"),  # the newest is the default
        ("/v2/models/crop_yield/versions/v2/infer", "v2"),
        ("/v2/models/crop_yield/versions/v1/infer", "v1"),
    ):
        answer = v2_infer(both, path)
        assert answer.status_code == 200, answer.text
        document = answer.json()
        assert document["model_version"] == version
        got = np.column_stack([o["data"] for o in document["outputs"][:2]])
        np.testing.assert_allclose(got, expected(both.home, version), rtol=1e-5)


def test_a_version_not_served_is_404_naming_the_served_ones(both: Server) -> None:
    answer = v2_infer(both, "/v2/models/crop_yield/versions/v9/infer")
    assert answer.status_code == 404
    assert answer.json()["error"] == (
        "not found: version 'v9' of model 'crop_yield' is not served here; served: 'v2', 'v1'"
    )
    assert httpx.get(f"{both.url}/v2/models/crop_yield/versions/v9/ready").status_code == 404


def test_metadata_lists_the_served_versions_the_default_first(both: Server) -> None:
    assert httpx.get(f"{both.url}/v2/models/crop_yield").json()["versions"] == ["v2", "v1"]
    assert httpx.get(f"{both.url}/v2/models/crop_yield/versions/v1").json()["versions"] == ["v1"]
    assert httpx.get(f"{both.url}/v2/models/crop_yield/versions/v1/ready").json()["ready"] is True
    metadata = httpx.get(f"{both.url}/metadata").json()
    assert (metadata["model"], metadata["versions"]) == ("crop_yield:v2", ["v2", "v1"])


def test_each_version_over_grpc(both: Server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{both.grpc_port}") as channel:
        stub = rpc.GRPCInferenceServiceStub(channel)
        for asked, version in (("", "v2"), ("v1", "v1"), ("v2", "v2")):
            answer = stub.ModelInfer(grpc_requests.infer_request(ROWS, raw=True, model_version=asked))
            assert answer.model_version == version
            got = np.column_stack([np.frombuffer(raw, "<f4") for raw in answer.raw_output_contents[:2]])
            np.testing.assert_allclose(got, expected(both.home, version), rtol=1e-5)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(grpc_requests.infer_request(ROWS, raw=True, model_version="v9"))
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        assert "served: 'v2', 'v1'" in (refused.value.details() or "")
        metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name="crop_yield"))
        assert list(metadata.versions) == ["v2", "v1"]


def test_a_pinned_default_answers_calls_that_name_no_version(
    two_versions: tuple[Path, str], tmp_path: Path
) -> None:
    with serving(two_versions, tmp_path, version_policy="all", default_version="v1") as server:
        assert v2_infer(server, "/v2/models/crop_yield/infer").json()["model_version"] == "v1"
        assert httpx.get(f"{server.url}/v2/models/crop_yield").json()["versions"] == ["v1", "v2"]
        answer = httpx.post(
            f"{server.url}/predict", json={"inputs": [dict(zip(FEATURES, ROWS[0].tolist(), strict=True))]}
        )
        assert answer.json()["model"] == "crop_yield:v1"


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        (
            {"CROP_YIELD_VERSION_POLICY": "specific:v1,v7"},
            "version(s) v7 not in the model store (it holds v2, v1)",
        ),
        ({"CROP_YIELD_VERSION_POLICY": "newest"}, "'newest' is not a version policy"),
        ({"CROP_YIELD_DEFAULT_VERSION": "v1"}, "CROP_YIELD_DEFAULT_VERSION='v1' is not served"),
    ],
)
def test_a_policy_it_cannot_serve_stops_start_up_with_one_line(
    two_versions: tuple[Path, str], settings: dict[str, str], fragment: str
) -> None:
    home, _ = two_versions
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", **settings}
    result = subprocess.run(
        [sys.executable, "-m", "service"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert fragment in line

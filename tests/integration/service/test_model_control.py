"""The served set changing while serving, against served processes with two workers:
explicit control through the repository API (REST and gRPC, with tritonclient), the
served-set file every worker follows (and a restart), a failed load, poll mode following
the model store, canary weights and the shadow comparison."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from safetensors.numpy import load_file

from tests.helpers import REPO_ROOT, run_training_cli
from tests.integration.conftest import Server, serving

ROW = {"temperature": 73.0, "rainfall": 67.0, "humidity": 43.0}
CONVERGE_S = 5.0


def train(home: Path, version: str, seed: str) -> None:
    result = run_training_cli(["--quiet", "--version", version, "--seed", seed], home)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """v1, v2 and v3 (other seeds: other weights); v3's weights file is cut short."""
    home = tmp_path_factory.mktemp("control-store")
    for version, seed in (("v1", "1"), ("v2", "5"), ("v3", "7")):
        train(home, version, seed)
    weights = home / "models" / "crop_yield" / "v3" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    return home


def expected(home: Path, version: str) -> list[float]:
    weights = load_file(str(home / "models" / "crop_yield" / version / "model.safetensors"))
    row = np.array(list(ROW.values()), dtype=np.float32)
    return (row @ weights["weight"].T + weights["bias"]).tolist()


def predict(server: Server, version: str | None = None) -> httpx.Response:
    """One call on a fresh connection (the kernel may hand it to either worker)."""
    headers = {} if version is None else {"X-Model-Version": version}
    return httpx.post(f"{server.url}/predict", json={"inputs": [ROW]}, headers=headers, timeout=30)


def answered_by(server: Server, calls: int = 12, version: str | None = None) -> set[str]:
    versions = set()
    for _ in range(calls):
        answer = predict(server, version)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-model-version"] == answer.json()["model"].partition(":")[2]
        versions.add(answer.headers["x-model-version"])
    return versions


def repository(server: Server, action: str, version: str | None = None) -> httpx.Response:
    body = {} if version is None else {"parameters": {"version": version}}
    return httpx.post(f"{server.url}/v2/repository/models/crop_yield/{action}", json=body, timeout=30)


def index(server: Server) -> dict[str, dict[str, Any]]:
    return {e["version"]: e for e in httpx.post(f"{server.url}/v2/repository/index", timeout=10).json()}


@pytest.fixture(scope="module")
def explicit(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    where = tmp_path_factory.mktemp("explicit")
    with serving(
        (store, "crop_yield:v2"),
        where,
        model_control="explicit",
        version_policy="specific:v2",
        served_set_file=str(where / "served.json"),
        workers="2",
    ) as server:
        yield server


def test_explicit_load_default_unload_and_rollback_reach_every_worker(explicit: Server, store: Path) -> None:
    assert answered_by(explicit) == {"v2"}
    entries = index(explicit)
    assert entries["v2"] == {
        "name": "crop_yield",
        "version": "v2",
        "state": "READY",
        "reason": "default",
        "default": True,
    }
    assert (entries["v1"]["state"], entries["v1"]["reason"]) == (
        "UNAVAILABLE",
        "not loaded (POST /v2/repository/models/crop_yield/load)",
    )

    client = httpclient.InferenceServerClient(explicit.url.removeprefix("http://"))
    client.load_model("crop_yield", headers={"x-model-version": "v1"})  # tritonclient names no version
    assert answered_by(explicit, version="v1") == {"v1"}  # every worker serves it on return
    answer = predict(explicit, "v1")
    assert answer.json()["predictions"][0]["apples"] == pytest.approx(expected(store, "v1")[0], rel=1e-5)
    assert answered_by(explicit) == {"v2"}  # loading does not move the default

    changed = repository(explicit, "default", "v1")
    assert changed.json() == {"name": "crop_yield", "versions": ["v1", "v2"], "default": "v1"}
    assert answered_by(explicit) == {"v1"}
    refused = repository(explicit, "unload", "v1")
    assert refused.status_code == 409
    assert "is the default: make another version the default first" in refused.json()["error"]

    assert repository(explicit, "default", "v2").status_code == 200  # rollback
    assert answered_by(explicit) == {"v2"}
    listed = grpc_unload_and_list(explicit, "v1")
    assert {m["version"]: m.get("state") for m in listed} == {
        "v3": "UNAVAILABLE",
        "v2": "READY",
        "v1": "UNAVAILABLE",
    }
    assert predict(explicit, "v1").status_code == 404
    recorded = json.loads(Path(explicit_setting(explicit, "served_set_file")).read_text())
    assert (recorded["versions"], recorded["default"]) == (["v2"], "v2")


# tritonclient.grpc registers the protocol's messages under the same names as the service's
# own stubs (which other test modules import): it runs in a process of its own.
TRITON_GRPC = textwrap.dedent(
    """
    import json, sys
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(sys.argv[1]) as client:
        client.unload_model("crop_yield", headers={"x-model-version": sys.argv[2]})
        print(json.dumps(client.get_model_repository_index(as_json=True)["models"]))
    """
)


def grpc_unload_and_list(server: Server, version: str) -> list[dict[str, str]]:
    """tritonclient.grpc's unload_model of ``version``, then its repository index."""
    result = subprocess.run(
        [sys.executable, "-c", TRITON_GRPC, f"127.0.0.1:{server.grpc_port}", version],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    listed: list[dict[str, str]] = json.loads(result.stdout)
    return listed


def test_a_failed_load_changes_nothing_and_the_index_says_why(explicit: Server) -> None:
    before = index(explicit)
    refused = repository(explicit, "load", "v3")
    assert refused.status_code == 400
    assert "version 'v3' was not loaded" in refused.json()["error"]
    after = index(explicit)
    assert (after["v3"]["state"], "v3" in after["v3"]["reason"]) == ("UNAVAILABLE", True)
    assert {v: e["state"] for v, e in after.items()} == {v: e["state"] for v, e in before.items()}
    assert answered_by(explicit) == {before_default(before)}
    missing = repository(explicit, "load", "v9")
    assert (missing.status_code, "not in the model store" in missing.json()["error"]) == (404, True)


def before_default(entries: dict[str, dict[str, Any]]) -> str:
    return next(v for v, e in entries.items() if e["default"])


def test_the_served_set_outlives_a_restart(explicit: Server, store: Path, tmp_path: Path) -> None:
    assert repository(explicit, "load", "v1").status_code == 200
    assert repository(explicit, "default", "v1").status_code == 200
    served_file = Path(explicit_setting(explicit, "served_set_file"))
    assert json.loads(served_file.read_text())["default"] == "v1"
    with serving(
        (store, "crop_yield:v2"), tmp_path, model_control="explicit", served_set_file=str(served_file)
    ) as restarted:
        assert answered_by(restarted, calls=3) == {"v1"}
        assert httpx.get(f"{restarted.url}/metadata").json()["versions"] == ["v1", "v2"]
    assert repository(explicit, "default", "v2").status_code == 200
    assert repository(explicit, "unload", "v1").status_code == 200


def explicit_setting(server: Server, name: str) -> str:
    environ = Path(f"/proc/{server.process.pid}/environ").read_bytes().split(b"\0")
    prefix = f"CROP_YIELD_{name.upper()}=".encode()
    return next(v[len(prefix) :].decode() for v in environ if v.startswith(prefix))


def test_a_swap_under_load_fails_no_call(explicit: Server) -> None:
    """Callers on fresh and kept connections while v1 is loaded, made the default, v2
    unloaded, loaded again and made the default again: every call answered 200 by a version
    served at some moment of the call (the full figures: make bench-versions)."""
    answers: list[tuple[float, float, int, str]] = []
    stop = threading.Event()

    def caller(fresh: bool) -> None:
        with httpx.Client(base_url=explicit.url, timeout=30) as kept:
            while not stop.is_set():
                started = time.monotonic()
                answer = predict(explicit) if fresh else kept.post("/predict", json={"inputs": [ROW]})
                version = answer.headers.get("x-model-version", "")
                answers.append((started, time.monotonic(), answer.status_code, version))

    callers = [threading.Thread(target=caller, args=(i % 2 == 0,)) for i in range(6)]
    for thread in callers:
        thread.start()
    steps = [
        ("load", "v1"),
        ("default", "v1"),
        ("unload", "v2"),
        ("load", "v2"),
        ("default", "v2"),
        ("unload", "v1"),
    ]
    # (the change's call began, it returned, the set after it): a set may be in effect from
    # the moment its call begins until the next change's call returns
    changes: list[tuple[float, float, set[str]]] = [(0.0, 0.0, {"v2"})]
    try:
        time.sleep(0.5)
        for action, version in steps:
            begun = time.monotonic()
            assert repository(explicit, action, version).status_code == 200, (action, version)
            after = set(changes[-1][2])
            if action == "load":
                after.add(version)
            elif action == "unload":
                after.discard(version)
            changes.append((begun, time.monotonic(), after))
            time.sleep(0.3)
    finally:
        stop.set()
        for thread in callers:
            thread.join()
    assert len(answers) > 100
    assert {status for _, _, status, _ in answers} == {200}
    until = [returned for _, returned, _ in changes[1:]] + [float("inf")]
    for started, ended, _, version in answers:
        possible = set().union(
            *(
                after
                for (begun, _, after), last in zip(changes, until, strict=True)
                if begun <= ended and last >= started
            )
        )
        assert version in possible, (started, ended, version, changes)
    assert answered_by(explicit, calls=4) == {"v2"}


def test_without_explicit_control_the_set_cannot_be_changed(store: Path, tmp_path: Path) -> None:
    with serving((store, "crop_yield:v2"), tmp_path, version_policy="specific:v2") as server:
        refused = repository(server, "load", "v1")
        assert refused.status_code == 409
        assert "model control is 'none'" in refused.json()["error"]
        assert index(server)["v2"]["state"] == "READY"


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "not within the time"
        time.sleep(0.2)
    return time.monotonic() - started


def test_poll_mode_follows_the_store(tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("poll-store")
    train(home, "p1", "1")
    with serving(
        (home, "crop_yield:p1"),
        tmp_path_factory.mktemp("poll"),
        model_control="poll",
        control_interval="0.5",
        workers="2",
    ) as server:
        assert answered_by(server, calls=3) == {"p1"}
        train(home, "p2", "5")
        took = wait_until(lambda: answered_by(server, calls=6) == {"p2"})
        assert took < 10
        # a broken newest version is left out; the index says why
        staging = tmp_path_factory.mktemp("staging")
        train(staging, "p3", "7")
        (staging / "models" / "crop_yield" / "p3" / "model.safetensors").write_bytes(b"\0" * 8)
        os.rename(staging / "models" / "crop_yield" / "p3", home / "models" / "crop_yield" / "p3")
        time.sleep(2)
        assert answered_by(server, calls=6) == {"p2"}
        assert "p3" in index(server)["p3"]["reason"]
        # deleting the served version falls back to the newest that loads
        shutil.rmtree(home / "models" / "crop_yield" / "p3")
        deleted = subprocess.run(
            [sys.executable, "-m", "bentoml", "models", "delete", "crop_yield:p2", "-y"],
            cwd=REPO_ROOT,
            env={**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert deleted.returncode == 0, deleted.stderr
        wait_until(lambda: answered_by(server, calls=6) == {"p1"})


def test_canary_weights_and_the_shadow(store: Path, tmp_path: Path) -> None:
    with serving(
        (store, "crop_yield:v2"),
        tmp_path,
        version_policy="specific:v1,v2",
        version_weights="v2=75,v1=25",
        shadow_version="v1",
        workers="2",
    ) as server:
        seen: Counter[str] = Counter()
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for i in range(2000):
                answer = client.post(
                    "/predict", json={"inputs": [ROW]}, headers={"x-request-id": f"call-{i}"}
                )
                seen[answer.headers["x-model-version"]] += 1
            sticky = {
                client.post("/predict", json={"inputs": [ROW]}, headers={"x-request-id": "same"}).headers[
                    "x-model-version"
                ]
                for _ in range(10)
            }
        assert abs(seen["v1"] / 2000 - 0.25) < 0.03, seen
        assert len(sticky) == 1
        time.sleep(1.5)  # the shadow's tick
        metrics = httpx.get(f"{server.url}/metrics").text
        difference = abs(expected(store, "v1")[0] - expected(store, "v2")[0])
        count, total = shadow_sample(metrics, "apples")
        assert count == seen["v2"] + (10 if sticky == {"v2"} else 0)  # calls the shadow did not answer
        assert total / count == pytest.approx(difference, rel=1e-4)


def shadow_sample(metrics: str, target: str) -> tuple[float, float]:
    values = {}
    for line in metrics.splitlines():
        if line.startswith("crop_yield_shadow_abs_difference_") and f'target="{target}"' in line:
            name = line.split("{")[0].rsplit("_", 1)[1]
            if name in ("count", "sum"):
                values[name] = float(line.rsplit(" ", 1)[1])
    return values["count"], values["sum"]

"""The served-set file of explicit model control in the image (``CROP_YIELD_SERVED_SET_FILE``
is ``/var/lib/crop-yield/served.json``, a folder operators mount): mounted read-only, as a
ConfigMap is, the container serves what it says, follows a kubelet-style update of it, and the
repository API answers 409; mounted writable, the API changes it, every worker follows, the
set outlives a restart, and an edit of the host file is followed while serving. Last, the cpu
overlay with ``components/served-set`` runs under ``podman kube play``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.container.conftest import podman
from tests.container.test_image import BAKED_TAG, run_container
from tests.deploy.test_manifests import SERVED_SET, render_with_component
from tests.helpers import run_training_cli
from tests.integration.conftest import free_port

MOUNT = "/var/lib/crop-yield"
ROW = {"temperature": 73.0, "rainfall": 67.0, "humidity": 43.0}


def repository(url: str, action: str, version: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v2/repository/models/crop_yield/{action}",
        json={"parameters": {"version": version}},
        timeout=30,
    )


def index(url: str) -> dict[str, dict[str, Any]]:
    return {e["version"]: e for e in httpx.post(f"{url}/v2/repository/index", timeout=10).json()}


def answered_by(url: str, calls: int = 8) -> set[str]:
    """The versions that answer ``calls`` calls naming none, each on a fresh connection (the
    kernel hands them to either worker); each answer names its version twice, consistently."""
    versions = set()
    for _ in range(calls):
        answer = httpx.post(f"{url}/predict", json={"inputs": [ROW]}, timeout=30)
        assert answer.status_code == 200, answer.text
        version = answer.headers["x-model-version"]
        assert answer.json()["model"] == f"crop_yield:{version}"
        versions.add(version)
    return versions


def wait_until(condition: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"not within {timeout} s"
        time.sleep(0.2)
    return time.monotonic() - started


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def write_served(folder: Path, document: dict[str, Any]) -> None:
    """Replace ``served.json`` in one step, as an editor or a ConfigMap update does."""
    temporary = folder / ".served.json.edit"
    temporary.write_text(json.dumps(document))
    temporary.chmod(0o644)
    os.replace(temporary, folder / "served.json")


def test_a_read_only_served_set_is_followed_and_the_api_refuses(image: str, tmp_path: Path) -> None:
    folder = tmp_path / "served"
    folder.mkdir()
    baked = BAKED_TAG.partition(":")[2]
    write_served(folder, {"versions": [baked], "default": baked})
    before = (folder / "served.json").read_bytes()
    name = "crop-yield-served-ro"
    url = run_container(image, name, "-v", f"{folder}:{MOUNT}:ro", "-e", "CROP_YIELD_MODEL_CONTROL=explicit")
    try:
        entry = index(url)[baked]
        assert (entry["state"], entry["default"]) == ("READY", True)
        assert answered_by(url, calls=3) == {baked}
        for action in ("load", "default", "unload"):
            refused = repository(url, action, baked)
            assert refused.status_code == 409, refused.text
            assert (
                f"{MOUNT}/served.json is read-only (a mounted ConfigMap?): edit it there instead"
                in refused.json()["error"]
            )
        assert (folder / "served.json").read_bytes() == before
        assert sorted(p.name for p in folder.iterdir()) == ["served.json"]  # not even a lock file
    finally:
        podman("rm", "--force", name, check=False)


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store holding v1 and v2 (other seeds: other weights), readable by uid 10001."""
    tmp_path = tmp_path_factory.mktemp("two-versions")
    store = tmp_path / "store"
    for version, seed in (("v1", "1"), ("v2", "5")):
        trained = run_training_cli(["--quiet", "--version", version, "--seed", seed], store)
        assert trained.returncode == 0, trained.stderr
    subprocess.run(["chmod", "-R", "a+rX", str(tmp_path)], check=True)
    return store


def test_a_writable_served_set_is_changed_by_the_api_outlives_a_restart_and_follows_edits(
    image: str, two_versions: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "served"
    folder.mkdir()
    folder.chmod(0o777)  # the container's uid 10001 writes the file and its lock here
    name = "crop-yield-served-rw"
    url = run_container(
        image,
        name,
        "-v",
        f"{two_versions}:/mnt/store:ro",
        "-v",
        f"{folder}:{MOUNT}",
        "-e",
        "BENTOML_HOME=/mnt/store",
        "-e",
        "CROP_YIELD_MODEL_TAG=crop_yield:v2",
        "-e",
        "CROP_YIELD_MODEL_CONTROL=explicit",
        "-e",
        "CROP_YIELD_VERSION_POLICY=specific:v2",
        "-e",
        "CROP_YIELD_WORKERS=2",
    )
    try:
        assert answered_by(url) == {"v2"}
        assert index(url)["v1"]["state"] == "UNAVAILABLE"

        loaded = repository(url, "load", "v1")
        assert loaded.status_code == 200, loaded.text
        changed = repository(url, "default", "v1")
        assert changed.status_code == 200, changed.text
        assert answered_by(url) == {"v1"}  # every worker, on return
        recorded = json.loads((folder / "served.json").read_text())
        assert (sorted(recorded["versions"]), recorded["default"]) == (["v1", "v2"], "v1")

        podman("restart", "--time", "30", name)
        wait_until(lambda: ready(url), timeout=90)
        assert answered_by(url) == {"v1"}  # the set outlived the restart
        entries = index(url)
        assert {v: (e["state"], e["default"]) for v, e in entries.items()} == {
            "v2": ("READY", False),
            "v1": ("READY", True),
        }

        write_served(folder, {"versions": ["v2"], "default": "v2"})
        took = wait_until(lambda: answered_by(url, calls=6) == {"v2"}, timeout=10)
        print(f"the edit was followed after {took:.1f} s")
        wait_until(lambda: index(url)["v1"]["state"] != "READY", timeout=5)  # drained, unloaded
    except BaseException:
        logs = podman("logs", name, check=False)
        print(logs.stdout[-4000:], logs.stderr[-4000:])
        raise
    finally:
        podman("rm", "--force", name, check=False)


def config_map_folder(folder: Path, document: dict[str, Any], revision: int) -> None:
    """Lay out (or update) ``folder`` as the kubelet does a ConfigMap volume: the key is a
    symlink through ``..data``, and an update swaps ``..data`` to a new timestamped folder."""
    stamped = folder / f"..2026_01_01_00_00_0{revision}.000000001"
    stamped.mkdir(mode=0o755)
    (stamped / "served.json").write_text(json.dumps(document))
    (stamped / "served.json").chmod(0o644)
    previous = (folder / "..data").readlink() if (folder / "..data").is_symlink() else None
    (folder / "..data_tmp").symlink_to(stamped.name)
    os.replace(folder / "..data_tmp", folder / "..data")
    if not (folder / "served.json").is_symlink():
        (folder / "served.json").symlink_to("..data/served.json")
    if previous is not None:
        shutil.rmtree(folder / previous)


def test_a_config_map_update_is_followed_on_a_read_only_mount(
    image: str, two_versions: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "config-map"
    folder.mkdir()
    config_map_folder(folder, {"versions": ["v2"]}, revision=1)
    name = "crop-yield-served-cm"
    url = run_container(
        image,
        name,
        "-v",
        f"{two_versions}:/mnt/store:ro",
        "-v",
        f"{folder}:{MOUNT}:ro",
        "-e",
        "BENTOML_HOME=/mnt/store",
        "-e",
        "CROP_YIELD_MODEL_TAG=crop_yield:v2",
        "-e",
        "CROP_YIELD_MODEL_CONTROL=explicit",
        "-e",
        "CROP_YIELD_WORKERS=2",
    )
    try:
        assert answered_by(url) == {"v2"}
        assert repository(url, "load", "v1").status_code == 409
        config_map_folder(folder, {"versions": ["v2", "v1"], "default": "v1"}, revision=2)
        took = wait_until(lambda: answered_by(url, calls=6) == {"v1"}, timeout=10)
        print(f"the ConfigMap update was followed after {took:.1f} s")
        entries = index(url)
        assert {v: (e["state"], e["default"]) for v, e in entries.items()} == {
            "v2": ("READY", False),
            "v1": ("READY", True),
        }
    except BaseException:
        logs = podman("logs", name, check=False)
        print(logs.stdout[-4000:], logs.stderr[-4000:])
        raise
    finally:
        podman("rm", "--force", name, check=False)


def test_kube_play_runs_the_deployment_with_the_served_set_component(image: str, tmp_path: Path) -> None:
    """The cpu overlay with components/served-set: the pod serves what the ConfigMap names,
    from a read-only mount its uid 10001 can read, and the repository API answers 409."""
    text = render_with_component("cpu", SERVED_SET, tmp_path)
    objects = {d["kind"]: d for d in yaml.safe_load_all(text) if d}
    deployment, config_map = objects["Deployment"], objects["ConfigMap"]
    deployment["spec"]["replicas"] = 1
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    only["image"] = image
    only["imagePullPolicy"] = "Never"
    port = free_port()
    http, grpc = only["ports"]
    http.update(hostPort=port, hostIP="127.0.0.1")
    grpc.update(hostPort=free_port(), hostIP="127.0.0.1")
    manifest = tmp_path / "served-set.yaml"
    manifest.write_text(yaml.safe_dump_all([config_map, deployment]))
    volume = config_map["metadata"]["name"]  # podman keeps a ConfigMap as a named volume
    podman("kube", "down", str(manifest), check=False)
    podman("volume", "rm", "--force", volume, check=False)
    played = podman("kube", "play", str(manifest), check=False, timeout=180)
    assert played.returncode == 0, played.stdout + played.stderr
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: ready(url), timeout=90)
        baked = BAKED_TAG.partition(":")[2]
        entry = index(url)[baked]
        assert (entry["state"], entry["default"]) == ("READY", True)
        assert answered_by(url, calls=3) == {baked}
        refused = repository(url, "load", baked)
        assert refused.status_code == 409, refused.text
        assert "is read-only (a mounted ConfigMap?): edit it there instead" in refused.json()["error"]
    finally:
        podman("kube", "down", str(manifest), check=False)
        podman("volume", "rm", "--force", volume, check=False)

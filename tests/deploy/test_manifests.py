"""Kubernetes manifests and Dockerfile: schema validation plus what validators miss.

kubernetes-validate checks each object against the API schema; these tests check how the
objects fit together (selectors, ports, probe paths, names) and the security settings
the deployment promises.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import REPO_ROOT, SHUTDOWN_AFTER_DEADLINE_S, require_tool

OVERLAYS = ["cpu", "gpu"]
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def render(overlay: str) -> str:
    kubectl = require_tool("kubectl")
    return subprocess.run(
        [kubectl, "kustomize", str(REPO_ROOT / "deploy" / "kubernetes" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, dict[str, dict[str, Any]]]:
    docs = [d for d in yaml.safe_load_all(render(request.param)) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), "one object of each kind expected"
    return request.param, by_kind


def pod_labels(objs: dict[str, dict[str, Any]]) -> dict[str, str]:
    labels: dict[str, str] = objs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    return labels


def container(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (only,) = objs["Deployment"]["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = only
    return result


def env(objs: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(objs).get("env", []) if "value" in e}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_validate_strict(overlay: str, tmp_path: Path) -> None:
    validator = require_tool("kubernetes-validate")
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(render(overlay))
    result = subprocess.run([validator, "--strict", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_selectors_match_the_pod_labels(rendered: tuple[str, dict[str, dict[str, Any]]]) -> None:
    _, objs = rendered
    labels = pod_labels(objs)
    assert selects(objs["Deployment"]["spec"]["selector"]["matchLabels"], labels)
    assert selects(objs["Service"]["spec"]["selector"], labels)
    assert selects(objs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"], labels)
    assert selects(objs["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"], labels)
    spread = objs["Deployment"]["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
    assert selects(spread["labelSelector"]["matchLabels"], labels)
    target = objs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", objs["Deployment"]["metadata"]["name"])


def test_network_policy_admits_labelled_clients_and_the_scraper_only(
    rendered: tuple[str, dict[str, dict[str, Any]]],
) -> None:
    _, objs = rendered
    policy = objs["NetworkPolicy"]["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    sources = [rule["from"] for rule in policy["ingress"]]
    assert sources[0] == [{"podSelector": {"matchLabels": {"crop-yield-client": "true"}}}]
    assert sources[1][0]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    clients, scraper = policy["ingress"]
    assert clients["ports"] == [{"port": 3000, "protocol": "TCP"}, {"port": 8001, "protocol": "TCP"}]
    assert scraper["ports"] == [{"port": 3000, "protocol": "TCP"}]


def test_service_and_probes_target_the_container_port(
    rendered: tuple[str, dict[str, dict[str, Any]]],
) -> None:
    _, objs = rendered
    ports = {p["name"]: p["containerPort"] for p in container(objs)["ports"]}
    assert ports == {"http": 3000, "grpc": 8001}
    env = {e["name"]: e.get("value") for e in container(objs)["env"]}
    assert env["CROP_YIELD_GRPC_PORT"] == str(ports["grpc"])
    http, grpc = objs["Service"]["spec"]["ports"]
    assert (http["name"], http["port"], http["targetPort"]) == ("http", 80, "http")
    assert (grpc["name"], grpc["port"], grpc["targetPort"]) == ("grpc", 8001, "grpc")
    assert grpc["appProtocol"] == "kubernetes.io/h2c"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container(objs)[probe]["httpGet"]["port"] in ports
        assert container(objs)[probe]["timeoutSeconds"] >= 1


def test_probe_paths_exist_in_the_service(rendered: tuple[str, dict[str, dict[str, Any]]]) -> None:
    from service.service import CropYieldService

    routes = set(CropYieldService.openapi_spec.asdict()["paths"])  # includes BentoML's probes
    c = container(rendered[1])
    assert c["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert {"/readyz", "/livez"} <= routes
    annotations = rendered[1]["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in routes
    assert annotations["prometheus.io/port"] == "3000"
    assert annotations["prometheus.io/scrape"] == "true"


def test_names_and_labels_are_valid(rendered: tuple[str, dict[str, dict[str, Any]]]) -> None:
    _, objs = rendered
    for obj in objs.values():
        assert DNS_1123_LABEL.match(obj["metadata"]["name"]), obj["metadata"]["name"]
        assert DNS_1123_LABEL.match(obj["metadata"]["namespace"])
        for value in obj["metadata"].get("labels", {}).values():
            assert LABEL_VALUE.match(value)
            assert len(value) <= 63
    assert DNS_1123_LABEL.match(container(objs)["name"])
    for port in container(objs)["ports"]:
        assert len(port["name"]) <= 15
        assert DNS_1123_LABEL.match(port["name"])


def test_restricted_security_and_writable_paths(rendered: tuple[str, dict[str, dict[str, Any]]]) -> None:
    _, objs = rendered
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert objs["ServiceAccount"]["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == objs["ServiceAccount"]["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(objs)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m["name"] for m in container(objs)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_replicas_resources_and_shutdown_budget(rendered: tuple[str, dict[str, dict[str, Any]]]) -> None:
    _, objs = rendered
    spec = objs["Deployment"]["spec"]
    assert spec["replicas"] >= 2
    assert objs["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2
    resources = container(objs)["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert {"cpu", "memory"} <= set(resources["limits"])
    pre_stop = int(container(objs)["lifecycle"]["preStop"]["exec"]["command"][-1])
    graceful = int(env(objs)["CROP_YIELD_GRACEFUL_SHUTDOWN_TIMEOUT"])
    # SIGTERM comes after preStop; then calls in flight on HTTP and gRPC share one deadline
    assert (
        spec["template"]["spec"]["terminationGracePeriodSeconds"]
        >= pre_stop + graceful + SHUTDOWN_AFTER_DEADLINE_S
    )


def test_image_is_pinned(rendered: tuple[str, dict[str, dict[str, Any]]]) -> None:
    overlay, objs = rendered
    image = container(objs)["image"]
    name, _, tag = image.rpartition(":")
    assert "/" in name
    assert tag
    assert tag != "latest"
    assert tag.endswith("-cuda") == (overlay == "gpu")


def test_gpu_overlay(rendered: tuple[str, dict[str, dict[str, Any]]]) -> None:
    overlay, objs = rendered
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    limits = container(objs)["resources"]["limits"]
    if overlay == "gpu":
        assert limits["nvidia.com/gpu"] == 1
        assert env(objs)["CROP_YIELD_DEVICE"] == "cuda"
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    else:
        assert "nvidia.com/gpu" not in limits
        assert env(objs)["CROP_YIELD_DEVICE"] == "cpu"


def test_hadolint() -> None:
    hadolint = require_tool("hadolint")
    result = subprocess.run(
        [hadolint, str(REPO_ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_promises() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim AS deps" in text
    assert re.search(r"^USER 10001", text, flags=re.MULTILINE)
    assert re.search(r'^HEALTHCHECK .*\n\s+CMD \["python3"', text, flags=re.MULTILINE)
    assert re.search(r"^EXPOSE 3000 8001$", text, flags=re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["python3", "-m", "service"\]$', text, flags=re.MULTILINE)


def test_auth_token_comes_from_an_optional_secret(rendered: tuple[str, dict[str, dict[str, Any]]]) -> None:
    _, objs = rendered
    (token,) = [e for e in container(objs)["env"] if e["name"] == "CROP_YIELD_AUTH_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"] == {"name": "crop-yield-auth", "key": "token", "optional": True}


# -- the served-set component (components/served-set) ------------------------------------

SERVED_SET = REPO_ROOT / "deploy" / "kubernetes" / "components" / "served-set"
SERVED_SET_MOUNT = "/var/lib/crop-yield"
SERVED_SET_ENV = ("CROP_YIELD_MODEL_CONTROL", "CROP_YIELD_SERVED_SET_FILE")


def render_with_component(overlay: str, component: Path, folder: Path) -> str:
    """``overlays/<overlay>`` with ``component`` added, as a user adds it (in ``folder``)."""
    kubectl = require_tool("kubectl")
    (folder / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "crop-yield",
                # kustomize takes only relative directories
                "resources": [
                    os.path.relpath(REPO_ROOT / "deploy" / "kubernetes" / "overlays" / overlay, folder)
                ],
                "components": [os.path.relpath(component, folder)],
            }
        )
    )
    return subprocess.run(
        [kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(folder)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.fixture(scope="module", params=OVERLAYS)
def with_served_set(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str, dict[str, dict[str, Any]]]:
    """(overlay, rendered text, objects by kind) of an overlay with the served-set component."""
    text = render_with_component(request.param, SERVED_SET, tmp_path_factory.mktemp("with-served-set"))
    docs = [d for d in yaml.safe_load_all(text) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), "one object of each kind expected"
    return request.param, text, by_kind


def baked_version() -> str:
    """The version the image trains and serves (the trainer's and the runtime's ARG agree)."""
    versions: set[str] = set(re.findall(r"^ARG MODEL_VERSION=(\S+)$", dockerfile(), flags=re.MULTILINE))
    (version,) = versions
    return version


def test_served_set_component_is_a_component() -> None:
    kustomization = yaml.safe_load((SERVED_SET / "kustomization.yaml").read_text())
    assert (kustomization["apiVersion"], kustomization["kind"]) == (
        "kustomize.config.k8s.io/v1alpha1",
        "Component",
    )


def test_served_set_component_validates_strict(
    with_served_set: tuple[str, str, dict[str, dict[str, Any]]], tmp_path: Path
) -> None:
    validator = require_tool("kubernetes-validate")
    overlay, text, _ = with_served_set
    path = tmp_path / f"{overlay}-served-set.yaml"
    path.write_text(text)
    result = subprocess.run([validator, "--strict", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_served_set_component_mounts_the_config_map_read_only_under_explicit_control(
    with_served_set: tuple[str, str, dict[str, dict[str, Any]]],
) -> None:
    _, _, objs = with_served_set
    config_map = objs["ConfigMap"]
    assert config_map["metadata"]["name"] == "crop-yield-served"
    assert config_map["metadata"]["namespace"] == objs["Deployment"]["metadata"]["namespace"]
    values = env(objs)
    assert values["CROP_YIELD_MODEL_CONTROL"] == "explicit"
    served_file = values["CROP_YIELD_SERVED_SET_FILE"]
    assert re.search(rf"^\s+CROP_YIELD_SERVED_SET_FILE={re.escape(served_file)} ", dockerfile(), re.MULTILINE)

    pod = objs["Deployment"]["spec"]["template"]["spec"]
    (mount,) = [m for m in container(objs)["volumeMounts"] if m["mountPath"] == SERVED_SET_MOUNT]
    assert mount["readOnly"] is True
    assert not {"subPath", "subPathExpr"} & set(mount)  # a subPath mount never sees an edit
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert not volume["configMap"].get("optional", False)
    mode = volume["configMap"].get("defaultMode", 0o644)
    assert mode & 0o004, "readable by others: the service's uid 10001 is not the file's owner"
    # the file the service reads is the ConfigMap's key, in the mounted folder
    assert os.path.dirname(served_file) == SERVED_SET_MOUNT
    key = os.path.basename(served_file)
    assert key in config_map["data"]
    assert {"key": key, "path": key} in volume["configMap"].get("items", [{"key": key, "path": key}])


def test_served_set_component_changes_nothing_else(
    with_served_set: tuple[str, str, dict[str, dict[str, Any]]],
) -> None:
    overlay, _, objs = with_served_set
    plain = {d["kind"]: d for d in yaml.safe_load_all(render(overlay)) if d}
    assert set(objs) == set(plain) | {"ConfigMap"}
    for kind in plain:
        if kind != "Deployment":
            assert objs[kind] == plain[kind], kind
    deployment = json.loads(json.dumps(objs["Deployment"]))
    pod = deployment["spec"]["template"]["spec"]
    (only,) = pod["containers"]
    only["env"] = [e for e in only["env"] if e["name"] not in SERVED_SET_ENV]
    only["volumeMounts"] = [m for m in only["volumeMounts"] if m["mountPath"] != SERVED_SET_MOUNT]
    pod["volumes"] = [v for v in pod["volumes"] if "configMap" not in v]
    assert deployment == plain["Deployment"]


def test_served_set_config_map_names_the_baked_version(
    with_served_set: tuple[str, str, dict[str, dict[str, Any]]],
) -> None:
    from service.inference.served_set import ServedSet

    _, _, objs = with_served_set
    served = ServedSet.parse(objs["ConfigMap"]["data"]["served.json"].encode(), "served.json")
    assert served.versions == (baked_version(),)
    assert served.default == baked_version()
    assert not served.unavailable


def test_dockerfile_points_the_served_set_file_at_the_mount_point() -> None:
    text = dockerfile()
    assert re.search(
        rf"^\s+CROP_YIELD_SERVED_SET_FILE={SERVED_SET_MOUNT}/served\.json \\$", text, flags=re.MULTILINE
    )
    # the mount point is root's and not writable: the file is writable only where a volume is
    assert re.search(rf"install -d -o root -g root -m 0755 {SERVED_SET_MOUNT}$", text, flags=re.MULTILINE)
    assert "VOLUME" not in text.split("\n# ---- runtime")[-1]


def dockerfile() -> str:
    return (REPO_ROOT / "Dockerfile").read_text()

"""The KServe InferenceService manifests: KServe's own CRD schema, plus what a schema misses
(probe paths that exist, ports that agree, the Deployment's security settings).

The schema is the v1beta1 ``openAPIV3Schema`` of KServe's published CRD, kept in
``data/`` (gzipped JSON whose ``source`` field names the file and release it came from).
Kubernetes prunes unknown fields of custom resources silently, so the schema is made
strict here: an object with declared properties accepts no others, unless the CRD marks
it ``x-kubernetes-preserve-unknown-fields``; a misspelt field fails instead of vanishing.
"""

from __future__ import annotations

import copy
import gzip
import json
import subprocess
from functools import cache
from typing import Any

import jsonschema
import pytest
import yaml

from service.v2.operations import OPERATIONS
from tests.deploy.test_manifests import DNS_1123_LABEL
from tests.deploy.test_manifests import render as render_deployment
from tests.helpers import REPO_ROOT, require_tool

KSERVE = REPO_ROOT / "deploy" / "kubernetes" / "kserve"
SCHEMA_FILE = (
    REPO_ROOT / "tests" / "deploy" / "data" / "kserve-v0.20.0-inferenceservice-v1beta1.schema.json.gz"
)
OVERLAYS = ["cpu", "gpu"]


@cache
def crd_validator() -> jsonschema.Draft7Validator:
    data = json.loads(gzip.decompress(SCHEMA_FILE.read_bytes()))
    assert data["source"].startswith("https://github.com/kserve/kserve/blob/v0.20.0/")
    return jsonschema.Draft7Validator(strict(data["openAPIV3Schema"]))


def strict(schema: Any) -> Any:
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    open_ended = "additionalProperties" in out or out.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and not open_ended:
        out["additionalProperties"] = False
    return out


def render(overlay: str) -> dict[str, dict[str, Any]]:
    kubectl = require_tool("kubectl")
    text = subprocess.run(
        [kubectl, "kustomize", str(KSERVE / overlay)], capture_output=True, text=True, check=True
    ).stdout
    return {d["kind"]: d for d in yaml.safe_load_all(text) if d}


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, dict[str, dict[str, Any]]]:
    return request.param, render(request.param)


def predictor(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = objs["InferenceService"]["spec"]["predictor"]
    return result


def container(objs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (only,) = predictor(objs)["containers"]
    result: dict[str, Any] = only
    return result


def env(objs: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(objs)["env"] if "value" in e}


def test_inference_service_matches_kserve_crd_schema(rendered: tuple[str, dict[str, dict[str, Any]]]) -> None:
    _, objs = rendered
    isvc = objs["InferenceService"]
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    crd_validator().validate(isvc)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "predictor", "contaners"), []),  # a misspelt field
        (("spec", "predictor", "minReplicas"), "two"),  # a wrong type
        (("spec", "predictor", "containers", 0, "ports", 0, "containerPort"), "3000"),
    ],
)
def test_the_schema_check_catches_mistakes(path: tuple[str | int, ...], value: Any) -> None:
    isvc = copy.deepcopy(render("cpu")["InferenceService"])
    target: Any = isvc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        crd_validator().validate(isvc)


def test_custom_predictor_speaks_v2(rendered: tuple[str, dict[str, dict[str, Any]]]) -> None:
    _, objs = rendered
    c = container(objs)
    assert c["name"] == "kserve-container"
    assert env(objs)["PROTOCOL"] == "v2"
    http, grpc = c["ports"]
    assert (http["name"], http["containerPort"]) == ("http1", int(env(objs)["CROP_YIELD_PORT"]))
    # gRPC: the port name KServe and Knative read as cleartext HTTP/2
    assert (grpc["name"], grpc["containerPort"]) == ("h2c", int(env(objs)["CROP_YIELD_GRPC_PORT"]))
    assert objs["InferenceService"]["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == (
        "RawDeployment"  # one Service port per container port; Knative would route only one
    )


def test_probes_use_existing_v2_health_routes_on_the_container_port(
    rendered: tuple[str, dict[str, dict[str, Any]]],
) -> None:
    _, objs = rendered
    c = container(objs)
    routes = {op.path for op in OPERATIONS if op.method == "GET"}
    expected = {"startupProbe": "/v2/health/ready", "readinessProbe": "/v2/health/ready"}
    for probe, path in {**expected, "livenessProbe": "/v2/health/live"}.items():
        assert c[probe]["httpGet"]["path"] == path
        assert path in routes
        assert c[probe]["httpGet"]["port"] == c["ports"][0]["containerPort"]
        assert c[probe]["timeoutSeconds"] >= 1


def test_same_security_and_shutdown_as_the_deployment(
    rendered: tuple[str, dict[str, dict[str, Any]]],
) -> None:
    overlay, objs = rendered
    deployment = yaml.safe_load_all(render_deployment(overlay))
    pod = next(d for d in deployment if d and d["kind"] == "Deployment")["spec"]["template"]["spec"]
    (reference,) = pod["containers"]
    p, c = predictor(objs), container(objs)
    assert p["securityContext"] == pod["securityContext"]
    assert c["securityContext"] == reference["securityContext"]
    assert c["lifecycle"] == reference["lifecycle"]
    assert p["automountServiceAccountToken"] is False
    assert p["serviceAccountName"] == objs["ServiceAccount"]["metadata"]["name"]
    assert p["terminationGracePeriodSeconds"] == pod["terminationGracePeriodSeconds"]
    assert c["resources"] == reference["resources"]
    memory_limit = {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}
    for env in (c["env"], reference["env"]):  # the memory budget is drawn from the limit
        assert {e["name"]: e.get("valueFrom") for e in env}["CROP_YIELD_MEMORY_LIMIT_MB"] == memory_limit
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert "emptyDir" in {v["name"]: v for v in p["volumes"]}[mounts["/tmp"]]


def test_gpu_variant(rendered: tuple[str, dict[str, dict[str, Any]]]) -> None:
    overlay, objs = rendered
    c, p = container(objs), predictor(objs)
    devices = [e for e in c["env"] if e["name"] == "CROP_YIELD_DEVICE"]
    assert len(devices) == 1
    if overlay == "gpu":
        assert devices[0]["value"] == "cuda"
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert c["image"].endswith("-cuda")
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in p["tolerations"]
    else:
        assert devices[0]["value"] == "cpu"
        assert "nvidia.com/gpu" not in c["resources"]["limits"]


def test_names(rendered: tuple[str, dict[str, dict[str, Any]]]) -> None:
    _, objs = rendered
    for obj in objs.values():
        assert DNS_1123_LABEL.match(obj["metadata"]["name"])
        assert obj["metadata"]["namespace"] == "crop-yield"

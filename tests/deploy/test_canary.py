"""Canary overlays (issue 27): a new model means a new image, rolled out beside the old one.

- ``deploy/kubernetes/canary``: plain Kubernetes with Gateway API. Two tracks built from the
  base (stable: ``crop-yield``, canary: ``crop-yield-canary``), each a Deployment, Service and
  HPA whose pods carry ``track`` and the model version; the base's ServiceAccount, PDB and
  NetworkPolicy once, over both; one HTTPRoute sharing the Gateway's calls by weight.
- ``deploy/kubernetes/kserve/canary-standard``: KServe Standard (RawDeployment) mode,
  ``spec.canary`` (KServe v0.20).
- ``deploy/kubernetes/kserve/knative`` and ``canary-knative``: KServe Knative mode before and
  during a canary (``spec.predictor.canaryTrafficPercent``; KServe keeps the revision last
  rolled out as the stable).

Custom resources are checked against their CRDs' published schemas made strict as in
test_kserve.py (KServe's, and Gateway API's HTTPRoute kept in ``data/``), built-in kinds with
``kubernetes-validate --strict``; the tests check what schemas miss: selectors against pod
labels, backends against Services and ports, weights, images and versions per track, and the
rules KServe's and Knative's admission webhooks apply that their CRD schemas do not carry.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.test_kserve import KSERVE, strict
from tests.deploy.test_kserve import crd_validator as kserve_validator
from tests.deploy.test_manifests import DNS_1123_LABEL, LABEL_VALUE, baked_version, selects
from tests.deploy.test_manifests import render as render_plain
from tests.helpers import REPO_ROOT, require_tool

KUBERNETES = REPO_ROOT / "deploy" / "kubernetes"
GATEWAY_CANARY = KUBERNETES / "canary"
KSERVE_OVERLAYS = ["canary-standard", "knative", "canary-knative"]
HTTPROUTE_SCHEMA = REPO_ROOT / "tests" / "deploy" / "data" / "gateway-api-v1.6.1-httproute-v1.schema.json.gz"
CUSTOM_KINDS = {"HTTPRoute", "InferenceService", "ServiceMonitor", "PrometheusRule"}

TRACK = "track"
MODEL_VERSION = "crop-yield/model-version"
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
# label keys: an optional DNS-subdomain prefix and a name of at most 63 characters
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

Objects = dict[tuple[str, str], dict[str, Any]]


def kustomize(path: Path) -> list[dict[str, Any]]:
    kubectl = require_tool("kubectl")
    text = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(text) if d]


def keyed(docs: list[dict[str, Any]]) -> Objects:
    objs = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert len(objs) == len(docs), "one object per kind and name expected"
    return objs


def core_objects_validate_strict(docs: list[dict[str, Any]], path: Path) -> None:
    """kubernetes-validate --strict on the built-in kinds; every one must have been checked."""
    validator = require_tool("kubernetes-validate")
    core = [d for d in docs if d["kind"] not in CUSTOM_KINDS]
    assert core
    path.write_text(yaml.safe_dump_all(core))
    result = subprocess.run([validator, "--strict", str(path)], capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Couldn't find schema" not in output, output
    assert output.count(" passed for resource ") == len(core), output


def set_path(obj: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """A copy of ``obj`` with ``value`` at ``path`` (the last key added where it is missing)."""
    out = copy.deepcopy(obj)
    target: Any = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


def valid_label(key: str, value: str) -> bool:
    name = key.rpartition("/")[2]
    return bool(LABEL_KEY.match(key) and len(name) <= 63 and LABEL_VALUE.match(value) and len(value) <= 63)


# -- plain Kubernetes with Gateway API (deploy/kubernetes/canary) ---------------------------


@cache
def httproute_validator() -> jsonschema.Draft7Validator:
    data = json.loads(gzip.decompress(HTTPROUTE_SCHEMA.read_bytes()))
    assert data["source"].startswith(
        "https://github.com/kubernetes-sigs/gateway-api/blob/v1.6.1/config/crd/standard/"
    )
    assert (data["crd"], data["version"]) == ("httproutes.gateway.networking.k8s.io", "v1")
    return jsonschema.Draft7Validator(strict(data["openAPIV3Schema"]))


@pytest.fixture(scope="module")
def gateway_docs() -> list[dict[str, Any]]:
    return kustomize(GATEWAY_CANARY)


@pytest.fixture(scope="module")
def gateway(gateway_docs: list[dict[str, Any]]) -> Objects:
    return keyed(gateway_docs)


def of_kind(objs: Objects, kind: str) -> list[dict[str, Any]]:
    return [o for (k, _), o in objs.items() if k == kind]


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def track_deployment(objs: Objects, track: str) -> dict[str, Any]:
    (only,) = [d for d in of_kind(objs, "Deployment") if pod_labels(d).get(TRACK) == track]
    return only


def image(deployment: dict[str, Any]) -> str:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    result: str = only["image"]
    return result


def route(objs: Objects) -> dict[str, Any]:
    (only,) = of_kind(objs, "HTTPRoute")
    return only


def backends(httproute: dict[str, Any]) -> list[dict[str, Any]]:
    (rule,) = httproute["spec"]["rules"]
    result: list[dict[str, Any]] = rule["backendRefs"]
    return result


def with_weights(httproute: dict[str, Any], stable: Any, canary: Any) -> dict[str, Any]:
    weighted = set_path(httproute, ("spec", "rules", 0, "backendRefs", 0, "weight"), stable)
    return set_path(weighted, ("spec", "rules", 0, "backendRefs", 1, "weight"), canary)


def test_gateway_canary_renders_both_tracks_and_the_shared_objects(gateway: Objects) -> None:
    assert set(gateway) == {
        ("ServiceAccount", "crop-yield"),
        ("PodDisruptionBudget", "crop-yield"),
        ("NetworkPolicy", "crop-yield"),
        ("Deployment", "crop-yield"),
        ("Service", "crop-yield"),
        ("HorizontalPodAutoscaler", "crop-yield"),
        ("Deployment", "crop-yield-canary"),
        ("Service", "crop-yield-canary"),
        ("HorizontalPodAutoscaler", "crop-yield-canary"),
        ("HTTPRoute", "crop-yield"),
    }
    assert {o["metadata"]["namespace"] for o in gateway.values()} == {"crop-yield"}
    # the stable track keeps the base's names: its clients and the Service address do not change
    assert pod_labels(gateway[("Deployment", "crop-yield")])[TRACK] == "stable"
    assert pod_labels(gateway[("Deployment", "crop-yield-canary")])[TRACK] == "canary"


def test_gateway_canary_core_objects_validate_strict(
    gateway_docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    core_objects_validate_strict(gateway_docs, tmp_path / "canary.yaml")


def test_httproute_matches_the_gateway_api_crd_schema(gateway: Objects) -> None:
    httproute = route(gateway)
    assert (httproute["apiVersion"], httproute["kind"]) == ("gateway.networking.k8s.io/v1", "HTTPRoute")
    httproute_validator().validate(httproute)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "rules", 0, "backendRefs", 1, "weight"), "10"),  # a wrong type
        (("spec", "rules", 0, "backendRefs", 1, "weight"), -10),  # below the minimum
        (("spec", "rules", 0, "backendRefs", 1, "wieght"), 10),  # a misspelt field
        (("spec", "rules", 0, "backendRef"), []),  # a misspelt list
        (("spec", "rules", 0, "backendRefs", 0, "port"), "80"),
        (("spec", "parentRefs", 0, "gateway"), "gateway"),  # an unknown field
        (("spec", "hostnames"), "crop-yield.example.com"),  # a string for a list
    ],
)
def test_the_httproute_schema_check_catches_mistakes(
    gateway: Objects, path: tuple[str | int, ...], value: Any
) -> None:
    with pytest.raises(jsonschema.ValidationError):
        httproute_validator().validate(set_path(route(gateway), path, value))


def test_each_service_selects_exactly_one_track(gateway: Objects) -> None:
    deployments = of_kind(gateway, "Deployment")
    for service in of_kind(gateway, "Service"):
        selected = [d for d in deployments if selects(service["spec"]["selector"], pod_labels(d))]
        assert len(selected) == 1, service["metadata"]["name"]
        (deployment,) = selected
        assert service["metadata"]["name"] == deployment["metadata"]["name"]
        assert (
            service["spec"]["selector"][TRACK]
            == service["metadata"]["labels"][TRACK]
            == pod_labels(deployment)[TRACK]
        )
    for deployment in deployments:
        own = [
            d for d in deployments if selects(deployment["spec"]["selector"]["matchLabels"], pod_labels(d))
        ]
        assert own == [deployment], "a Deployment's selector matches its own pods only"
        spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
        assert spread["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_pdb_and_network_policy_select_both_tracks(gateway: Objects) -> None:
    pdb = gateway[("PodDisruptionBudget", "crop-yield")]["spec"]["selector"]["matchLabels"]
    policy = gateway[("NetworkPolicy", "crop-yield")]["spec"]["podSelector"]["matchLabels"]
    for track in ("stable", "canary"):
        labels = pod_labels(track_deployment(gateway, track))
        assert selects(pdb, labels), track
        assert selects(policy, labels), track


def test_no_selector_names_the_model_version(gateway: Objects) -> None:
    """A Deployment's selector cannot change, and the version changes at each promotion."""
    selectors = [gateway[("PodDisruptionBudget", "crop-yield")]["spec"]["selector"]["matchLabels"]]
    selectors.append(gateway[("NetworkPolicy", "crop-yield")]["spec"]["podSelector"]["matchLabels"])
    selectors += [s["spec"]["selector"] for s in of_kind(gateway, "Service")]
    for deployment in of_kind(gateway, "Deployment"):
        selectors.append(deployment["spec"]["selector"]["matchLabels"])
        selectors.append(
            deployment["spec"]["template"]["spec"]["topologySpreadConstraints"][0]["labelSelector"][
                "matchLabels"
            ]
        )
        assert TRACK in deployment["spec"]["selector"]["matchLabels"]
    for selector in selectors:
        assert MODEL_VERSION not in selector


def test_each_hpa_scales_its_own_track(gateway: Objects) -> None:
    for hpa in of_kind(gateway, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment"
        deployment = gateway[("Deployment", target["name"])]
        assert hpa["metadata"]["labels"][TRACK] == pod_labels(deployment)[TRACK]
        assert hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]


def check_route(objs: Objects, httproute: dict[str, Any]) -> dict[str, int]:
    """The route's weight per track, after checking its backends against the Services."""
    refs = backends(httproute)
    weights: dict[str, int] = {}
    for ref in refs:
        assert ref.get("group", "") == ""
        assert ref.get("kind", "Service") == "Service"
        assert "namespace" not in ref, "the Services are in the route's namespace"
        service = objs[("Service", ref["name"])]
        (port,) = [p for p in service["spec"]["ports"] if p["port"] == ref["port"]]
        assert port["name"] == "http"  # the REST routes; gRPC is not on an HTTPRoute
        weights[service["spec"]["selector"][TRACK]] = ref["weight"]
    assert len(refs) == len(weights) == 2
    assert sum(weights.values()) == 100, "weights read as percent"
    return weights


def test_httproute_shares_calls_between_the_track_services(gateway: Objects) -> None:
    httproute = route(gateway)
    assert check_route(gateway, httproute) == {"stable": 90, "canary": 10}
    (parent,) = httproute["spec"]["parentRefs"]
    assert (parent["group"], parent["kind"]) == ("gateway.networking.k8s.io", "Gateway")
    assert DNS_1123_LABEL.match(parent["name"])
    assert DNS_1123_LABEL.match(parent["namespace"])


def test_network_policy_admits_the_gateway_on_the_http_port(gateway: Objects) -> None:
    (parent,) = route(gateway)["spec"]["parentRefs"]
    policy = gateway[("NetworkPolicy", "crop-yield")]["spec"]
    (rule,) = [
        r
        for r in policy["ingress"]
        if r["from"]
        == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": parent["namespace"]}}}]
    ]
    (container,) = track_deployment(gateway, "stable")["spec"]["template"]["spec"]["containers"]
    http = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert rule["ports"] == [{"protocol": "TCP", "port": http}]
    # the base's two rules are kept as they were
    plain = {d["kind"]: d for d in yaml.safe_load_all(render_plain("cpu")) if d}
    assert policy["ingress"][:-1] == plain["NetworkPolicy"]["spec"]["ingress"]


@pytest.mark.parametrize(("stable", "canary"), [(100, 0), (50, 50), (0, 100)])
def test_rollback_and_promotion_weights_still_validate(gateway: Objects, stable: int, canary: int) -> None:
    """Rollback is canary weight 0; the same route at any split passes the same checks."""
    httproute = with_weights(route(gateway), stable, canary)
    httproute_validator().validate(httproute)
    assert check_route(gateway, httproute) == {"stable": stable, "canary": canary}


def test_weights_that_do_not_add_up_to_100_are_caught(gateway: Objects) -> None:
    with pytest.raises(AssertionError, match="weights read as percent"):
        check_route(gateway, with_weights(route(gateway), 90, 20))


def test_the_canary_carries_the_new_image_and_version_the_stable_the_old(gateway: Objects) -> None:
    stable, canary = track_deployment(gateway, "stable"), track_deployment(gateway, "canary")
    plain = {d["kind"]: d for d in yaml.safe_load_all(render_plain("cpu")) if d}
    # the stable track runs the image the cpu overlay deploys, whose version the Dockerfile bakes
    assert image(stable) == image(plain["Deployment"])
    assert pod_labels(stable)[MODEL_VERSION] == baked_version()
    # the canary: another image, tagged <release>-<model version>, and another version
    assert image(canary) != image(stable)
    assert image(canary).rpartition(":")[0] == image(stable).rpartition(":")[0]
    assert image(canary).endswith("-" + pod_labels(canary)[MODEL_VERSION])
    assert pod_labels(canary)[MODEL_VERSION] != pod_labels(stable)[MODEL_VERSION]
    for deployment in (stable, canary):
        assert deployment["metadata"]["labels"][MODEL_VERSION] == pod_labels(deployment)[MODEL_VERSION]


def test_the_tracks_differ_only_in_names_track_version_and_image(gateway: Objects) -> None:
    stable, canary = track_deployment(gateway, "stable"), track_deployment(gateway, "canary")
    version = pod_labels(stable)[MODEL_VERSION]
    as_stable = copy.deepcopy(canary)
    as_stable["metadata"]["name"] = stable["metadata"]["name"]
    for labels in (as_stable["metadata"]["labels"], as_stable["spec"]["template"]["metadata"]["labels"]):
        labels.update({TRACK: "stable", MODEL_VERSION: version})
    as_stable["spec"]["selector"]["matchLabels"][TRACK] = "stable"
    pod = as_stable["spec"]["template"]["spec"]
    pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"][TRACK] = "stable"
    pod["containers"][0]["image"] = image(stable)
    assert as_stable == stable
    # both run as the one ServiceAccount
    assert pod["serviceAccountName"] == gateway[("ServiceAccount", "crop-yield")]["metadata"]["name"]


def test_the_stable_track_is_the_base_deployment_with_track_and_version(gateway: Objects) -> None:
    stable = track_deployment(gateway, "stable")
    plain = {d["kind"]: d for d in yaml.safe_load_all(render_plain("cpu")) if d}
    unlabelled = copy.deepcopy(stable)
    for labels in (unlabelled["metadata"]["labels"], unlabelled["spec"]["template"]["metadata"]["labels"]):
        del labels[TRACK], labels[MODEL_VERSION]
    del unlabelled["spec"]["selector"]["matchLabels"][TRACK]
    del unlabelled["spec"]["template"]["spec"]["topologySpreadConstraints"][0]["labelSelector"][
        "matchLabels"
    ][TRACK]
    assert unlabelled == plain["Deployment"]


def test_gateway_canary_names_and_labels_are_valid(gateway: Objects) -> None:
    for obj in gateway.values():
        assert DNS_1123_LABEL.match(obj["metadata"]["name"])
        for key, value in obj["metadata"].get("labels", {}).items():
            assert valid_label(key, value), (key, value)
    for deployment in of_kind(gateway, "Deployment"):
        for key, value in pod_labels(deployment).items():
            assert valid_label(key, value), (key, value)


def test_the_monitoring_component_scrapes_each_track_once_as_one_job(tmp_path: Path) -> None:
    """With components/monitoring added, both tracks are scraped (job="crop-yield"), each pod once:
    the dashboards' and rules' "by version" series then compare the two tracks."""
    kubectl = require_tool("kubectl")
    component = KUBERNETES / "components" / "monitoring"
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "crop-yield",
                "resources": [os.path.relpath(GATEWAY_CANARY, tmp_path)],
                "components": [os.path.relpath(component, tmp_path)],
            }
        )
    )
    text = subprocess.run(
        [kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    objs = keyed([d for d in yaml.safe_load_all(text) if d])
    monitor = objs[("ServiceMonitor", "crop-yield")]["spec"]
    scraped = [
        s
        for s in of_kind(objs, "Service")
        if selects(monitor["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert {s["metadata"]["name"] for s in scraped} == {"crop-yield", "crop-yield-canary"}
    for service in scraped:
        assert service["metadata"]["labels"][monitor["jobLabel"]] == "crop-yield"
        assert {e["port"] for e in monitor["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}
    for deployment in of_kind(objs, "Deployment"):
        behind = [s for s in scraped if selects(s["spec"]["selector"], pod_labels(deployment))]
        assert len(behind) == 1, deployment["metadata"]["name"]


# -- KServe (deploy/kubernetes/kserve/canary-standard, knative, canary-knative) -------------


@cache
def kserve_rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(kustomize(KSERVE / overlay))


def isvc(overlay: str) -> dict[str, Any]:
    (only,) = [d for d in kserve_rendered(overlay) if d["kind"] == "InferenceService"]
    return copy.deepcopy(only)


def kserve_container(predictor: dict[str, Any]) -> dict[str, Any]:
    (only,) = predictor["containers"]
    assert only["name"] == "kserve-container"
    result: dict[str, Any] = only
    return result


@pytest.mark.parametrize("overlay", KSERVE_OVERLAYS)
def test_kserve_canary_overlays_match_kserve_crd_schema(overlay: str) -> None:
    obj = isvc(overlay)
    assert (obj["apiVersion"], obj["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert obj["metadata"]["namespace"] == "crop-yield"
    kserve_validator().validate(obj)


@pytest.mark.parametrize("overlay", KSERVE_OVERLAYS)
def test_kserve_canary_overlays_core_objects_validate_strict(overlay: str, tmp_path: Path) -> None:
    core_objects_validate_strict(list(kserve_rendered(overlay)), tmp_path / f"{overlay}.yaml")


@pytest.mark.parametrize(
    ("overlay", "path", "value"),
    [
        ("canary-standard", ("spec", "canary", 0, "trafficPercent"), "10"),  # a wrong type
        ("canary-standard", ("spec", "canary", 0, "trafficPercent"), 101),  # above the maximum
        ("canary-standard", ("spec", "canary", 0, "trafficPrecent"), 10),  # a misspelt field
        ("canary-standard", ("spec", "canary", 0, "predictor", "contaners"), []),
        ("canary-standard", ("spec", "canary", 0, "predictor", "containers", 0, "image"), 1),
        ("canary-standard", ("spec", "canary"), {"trafficPercent": 10}),  # an object for the list
        ("canary-knative", ("spec", "predictor", "canaryTrafficPercent"), "10"),
        ("canary-knative", ("spec", "predictor", "canaryTraficPercent"), 10),
    ],
)
def test_the_kserve_schema_check_catches_canary_mistakes(
    overlay: str, path: tuple[str | int, ...], value: Any
) -> None:
    with pytest.raises(jsonschema.ValidationError):
        kserve_validator().validate(set_path(isvc(overlay), path, value))


def test_the_kserve_schema_requires_a_canary_share() -> None:
    obj = isvc("canary-standard")
    del obj["spec"]["canary"][0]["trafficPercent"]
    with pytest.raises(jsonschema.ValidationError, match="trafficPercent"):
        kserve_validator().validate(obj)


# What KServe v0.20.0's validating webhook refuses of spec.canary beyond the CRD schema
# (pkg/apis/serving/v1beta1/inference_service_validation.go, validateCanarySpecs, run after
# its defaulter turned the legacy mode names into the current ones).
STORAGE_RULE = "canary requires a stable predictor with a model (a storage URI, or spec.predictor.model)"


def kserve_v020_canary_refusals(obj: dict[str, Any]) -> list[str]:
    spec = obj["spec"]
    canaries = spec.get("canary", [])
    if not canaries:
        return []
    refusals = []
    mode = obj["metadata"].get("annotations", {}).get(DEPLOYMENT_MODE, "")
    if {"RawDeployment": "Standard", "Serverless": "Knative"}.get(mode, mode) != "Standard":
        refusals.append("canary is only supported in Standard deployment mode")
    stable = spec["predictor"]
    # a custom predictor's storage URI is the STORAGE_URI variable of its kserve-container
    storage_uri = any(
        e["name"] == "STORAGE_URI"
        for c in stable.get("containers", [])
        if c["name"] == "kserve-container"
        for e in c.get("env", [])
    )
    if not storage_uri and "model" not in stable:
        refusals.append(STORAGE_RULE)
    names: set[str] = set()
    for canary in canaries:
        predictor = canary["predictor"]
        name = predictor.get("name", "")
        if not name:
            refusals.append("canary predictor.name is required")
        if name in names:
            refusals.append(f"canary predictor.name {name!r} is duplicated")
        names.add(name)
        if name == stable.get("name", ""):
            refusals.append(f"canary predictor.name {name!r} conflicts with the stable predictor's")
        if not 0 <= canary["trafficPercent"] <= 100:
            refusals.append(f"canary {name!r} trafficPercent out of range")
        for field in ("workerSpec", "maxReplicas", "scaleTarget", "scaleMetric", "autoScaling"):
            if predictor.get(field):
                refusals.append(f"canary {name!r} must not set {field} (canary uses fixed replicas)")
        if predictor.get("minReplicas", 0) > stable.get("minReplicas", 1):
            refusals.append(f"canary {name!r} minReplicas exceeds the stable predictor's")
    if sum(c["trafficPercent"] for c in canaries) > 100:
        refusals.append("sum of canary trafficPercent values must be <= 100")
    return refusals


def test_standard_canary_is_the_stable_container_with_the_new_image() -> None:
    """KServe merges the canary entry over the stable predictor, and a list it names replaces
    the stable's: the canary's container is the stable's whole, but for the image."""
    obj = isvc("canary-standard")
    (canary,) = obj["spec"]["canary"]
    stable_container = kserve_container(obj["spec"]["predictor"])
    canary_container = kserve_container(canary["predictor"])
    assert {**canary_container, "image": stable_container["image"]} == stable_container
    assert canary_container["image"] != stable_container["image"]
    assert canary["trafficPercent"] == 10
    assert set(canary["predictor"]) == {"name", "labels", "containers"}


def test_standard_canary_carries_the_new_image_and_version_the_stable_the_old() -> None:
    obj, plain = isvc("canary-standard"), isvc("cpu")
    stable = obj["spec"]["predictor"]
    (canary,) = obj["spec"]["canary"]
    # the stable predictor is kserve/cpu's, as it runs today, with its version labelled
    assert {k: v for k, v in stable.items() if k != "labels"} == plain["spec"]["predictor"]
    assert stable["labels"] == {MODEL_VERSION: baked_version()}
    stable_image, canary_image = (
        kserve_container(stable)["image"],
        kserve_container(canary["predictor"])["image"],
    )
    assert canary_image.rpartition(":")[0] == stable_image.rpartition(":")[0]
    assert canary_image.endswith("-" + canary["predictor"]["labels"][MODEL_VERSION])
    assert canary["predictor"]["labels"][MODEL_VERSION] != baked_version()
    assert {k: v for k, v in obj.items() if k != "spec"} == {k: v for k, v in plain.items() if k != "spec"}


def test_standard_canary_names_make_valid_kserve_objects() -> None:
    obj = isvc("canary-standard")
    (canary,) = obj["spec"]["canary"]
    # KServe names the canary's Deployment and Service <isvc>-<name>-predictor: a Service
    # name is a DNS-1035 label
    service = f"{obj['metadata']['name']}-{canary['predictor']['name']}-predictor"
    assert DNS_1035_LABEL.match(service)
    assert len(service) <= 63
    for labels in (obj["spec"]["predictor"]["labels"], canary["predictor"]["labels"]):
        for key, value in labels.items():
            assert valid_label(key, value), (key, value)


def test_standard_canary_meets_kserve_v020_admission_rules_but_the_storage_uri() -> None:
    refusals = kserve_v020_canary_refusals(isvc("canary-standard"))
    assert [r for r in refusals if r != STORAGE_RULE] == []


@pytest.mark.xfail(
    strict=True,
    reason="KServe v0.20.0 admits spec.canary only beside a stable predictor with a storage URI or "
    "spec.predictor.model; this image bakes its model store in and names neither (docs/canary.md)",
)
def test_standard_canary_passes_kserve_v020_admission() -> None:
    assert kserve_v020_canary_refusals(isvc("canary-standard")) == []


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ((("spec", "canary", 0, "predictor", "maxReplicas"), 4), "must not set maxReplicas"),
        ((("spec", "canary", 0, "predictor", "minReplicas"), 3), "minReplicas exceeds"),
        ((("spec", "predictor", "name"), "canary"), "conflicts with the stable"),
        ((("metadata", "annotations", DEPLOYMENT_MODE), "Knative"), "only supported in Standard"),
    ],
)
def test_the_kserve_admission_mirror_catches_mistakes(
    change: tuple[tuple[str | int, ...], Any], refusal: str
) -> None:
    path, value = change
    refusals = kserve_v020_canary_refusals(set_path(isvc("canary-standard"), path, value))
    assert any(refusal in r for r in refusals), refusals


def test_kserve_rollback_to_a_zero_share_still_validates() -> None:
    standard = set_path(isvc("canary-standard"), ("spec", "canary", 0, "trafficPercent"), 0)
    kserve_validator().validate(standard)
    assert [r for r in kserve_v020_canary_refusals(standard) if r != STORAGE_RULE] == []
    knative = set_path(isvc("canary-knative"), ("spec", "predictor", "canaryTrafficPercent"), 0)
    kserve_validator().validate(knative)
    assert knative_refusals(knative["spec"]["predictor"]) == []


# What Knative Serving (knative-v1.23.0, pkg/apis/serving/fieldmask.go) admits in a revision's
# pod spec with its default feature flags: the rest needs a flag in config-features.
KNATIVE_CONTAINER_FIELDS = {
    "name", "args", "command", "env", "workingDir", "envFrom", "image", "imagePullPolicy", "livenessProbe",
    "ports", "readinessProbe", "resources", "securityContext", "startupProbe", "terminationMessagePath",
    "terminationMessagePolicy", "volumeMounts",
}  # fmt: skip
KNATIVE_CONTAINER_SECURITY_FIELDS = {
    "capabilities", "readOnlyRootFilesystem", "runAsUser", "runAsGroup", "runAsNonRoot",
    "allowPrivilegeEscalation", "seccompProfile",
}  # fmt: skip
KNATIVE_POD_FIELDS_REFUSED = {
    # never admitted
    "restartPolicy", "terminationGracePeriodSeconds", "activeDeadlineSeconds", "nodeName", "hostname",
    "subdomain", "priority", "readinessGates",
    # behind flags that are off by default
    "affinity", "topologySpreadConstraints", "hostAliases", "nodeSelector", "runtimeClassName",
    "tolerations", "securityContext", "shareProcessNamespace", "priorityClassName", "schedulerName",
    "initContainers", "dnsPolicy", "dnsConfig", "hostIPC", "hostPID", "hostNetwork",
}  # fmt: skip


def knative_refusals(predictor: dict[str, Any]) -> list[str]:
    refusals = [f"pod: {field}" for field in sorted(KNATIVE_POD_FIELDS_REFUSED & set(predictor))]
    if predictor.get("automountServiceAccountToken", False) is not False:
        refusals.append("pod: automountServiceAccountToken other than false")
    container = kserve_container(predictor)
    refusals += [f"container: {field}" for field in sorted(set(container) - KNATIVE_CONTAINER_FIELDS)]
    security = container.get("securityContext", {})
    refusals += [
        f"container securityContext: {f}" for f in sorted(set(security) - KNATIVE_CONTAINER_SECURITY_FIELDS)
    ]
    if set(security.get("capabilities", {})) - {"drop"}:
        refusals.append("container securityContext: capabilities.add")
    if len(container.get("ports", [])) > 1:
        refusals.append("more than one container port")
    for variable in container.get("env", []):
        if {"fieldRef", "resourceFieldRef"} & set(variable.get("valueFrom", {})):
            refusals.append(f"env {variable['name']}: fieldRef/resourceFieldRef")
    for volume in predictor.get("volumes", []):
        if not {"emptyDir", "configMap", "secret", "projected"} & set(volume):
            refusals.append(f"volume {volume['name']}")
    return refusals


@pytest.mark.parametrize("overlay", ["knative", "canary-knative"])
def test_knative_overlays_are_admitted_by_knative_default_features(overlay: str) -> None:
    obj = isvc(overlay)
    assert obj["metadata"]["annotations"][DEPLOYMENT_MODE] == "Knative"
    assert "serving.kserve.io/autoscalerClass" not in obj["metadata"]["annotations"]
    predictor = obj["spec"]["predictor"]
    assert knative_refusals(predictor) == []
    # the base would not be: the mirror sees what the knative overlay takes out
    assert len(knative_refusals(isvc("cpu")["spec"]["predictor"])) >= 5
    container = kserve_container(predictor)
    (port,) = container["ports"]
    assert (port["name"], port["containerPort"]) == ("http1", 3000)  # REST; Knative routes one port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == port["containerPort"]


@pytest.mark.parametrize("overlay", ["knative", "canary-knative"])
def test_knative_overlays_keep_the_security_settings_on_the_container(overlay: str) -> None:
    predictor = isvc(overlay)["spec"]["predictor"]
    pod = isvc("cpu")["spec"]["predictor"]["securityContext"]
    security = kserve_container(predictor)["securityContext"]
    assert security == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": pod["runAsUser"],
        "runAsGroup": pod["runAsGroup"],
        "seccompProfile": pod["seccompProfile"],
    }
    assert predictor["automountServiceAccountToken"] is False
    mounts = {m["mountPath"]: m["name"] for m in kserve_container(predictor)["volumeMounts"]}
    assert "emptyDir" in {v["name"]: v for v in predictor["volumes"]}[mounts["/tmp"]]


def test_knative_canary_changes_only_the_image_version_and_share() -> None:
    """Applied over ``knative``, ``canary-knative`` makes one revision that differs in the image
    (and its version label); KServe keeps the previous revision, the old image, as the stable."""
    before, canary = isvc("knative"), isvc("canary-knative")
    # before the canary: the image kserve/cpu deploys and the version it bakes
    assert (
        kserve_container(before["spec"]["predictor"])["image"]
        == kserve_container(isvc("cpu")["spec"]["predictor"])["image"]
    )
    assert before["spec"]["predictor"]["labels"] == {MODEL_VERSION: baked_version()}
    predictor = canary["spec"]["predictor"]
    assert predictor.pop("canaryTrafficPercent") == 10
    new_image = kserve_container(predictor)["image"]
    old_image = kserve_container(before["spec"]["predictor"])["image"]
    assert new_image != old_image
    assert new_image.rpartition(":")[0] == old_image.rpartition(":")[0]
    version = predictor["labels"][MODEL_VERSION]
    assert version != baked_version()
    assert new_image.endswith("-" + version)
    kserve_container(predictor)["image"] = old_image
    predictor["labels"][MODEL_VERSION] = baked_version()
    assert canary == before


def test_knative_mode_is_kserve_base_otherwise() -> None:
    """What the knative overlay changes, and nothing more."""
    knative, plain = isvc("knative"), isvc("cpu")
    annotations = {
        k: v for k, v in plain["metadata"]["annotations"].items() if not k.startswith("serving.kserve.io/")
    }
    assert knative["metadata"]["annotations"] == {**annotations, DEPLOYMENT_MODE: "Knative"}
    predictor, reference = knative["spec"]["predictor"], plain["spec"]["predictor"]
    assert {k: v for k, v in predictor.items() if k not in {"labels", "containers"}} == {
        k: v
        for k, v in reference.items()
        if k not in {"securityContext", "terminationGracePeriodSeconds", "containers"}
    }
    container, original = kserve_container(predictor), kserve_container(reference)
    assert container["env"] == [e for e in original["env"] if e["name"] != "CROP_YIELD_MEMORY_LIMIT_MB"]
    assert container["ports"] == original["ports"][:1]
    assert {k: v for k, v in container.items() if k not in {"env", "ports", "securityContext"}} == {
        k: v for k, v in original.items() if k not in {"env", "ports", "securityContext", "lifecycle"}
    }


# -- the runbook --------------------------------------------------------------------------

RUNBOOK = REPO_ROOT / "docs" / "canary.md"
WATCHED_PANELS = [
    "Traffic share by version (prediction answers, HTTP and gRPC)",
    "Canary vs stable: error ratio by version over 10 minutes, with the alert threshold",
    "Canary vs stable: p99 by version over 10 minutes, with the alert threshold",
    "Error ratio by version (prediction routes, non-2xx)",
    "Latency p99 by version (prediction routes)",
    "Rows predicted per second by version",
    "Model version per pod (default and served)",
]


def test_the_runbook_names_the_overlays_and_existing_dashboard_panels() -> None:
    text = RUNBOOK.read_text()
    for overlay in ("deploy/kubernetes/canary", *(f"deploy/kubernetes/kserve/{o}" for o in KSERVE_OVERLAYS)):
        assert overlay in text, overlay
        assert (REPO_ROOT / overlay / "kustomization.yaml").exists()
    dashboard = json.loads((REPO_ROOT / "deploy" / "monitoring" / "grafana-dashboard.json").read_text())
    titles = {p["title"] for p in dashboard["panels"]}
    for panel in WATCHED_PANELS:
        assert panel in titles, panel
        assert f"“{panel}”" in text, panel

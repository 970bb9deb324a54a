"""Monitoring files without a cluster: the Prometheus rules (``promtool check`` and ``promtool
test``), their runbook entries, the PrometheusRule and ServiceMonitor of the kustomize
component (prometheus-operator's CRD schemas, kept in ``data/``, made strict as in
``test_kserve``), and the Grafana dashboard's structure (its PromQL runs against a real
Prometheus in ``tests/integration/test_prometheus.py``)."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from functools import cache
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.test_kserve import strict
from tests.helpers import REPO_ROOT, require_tool

MONITORING = REPO_ROOT / "deploy" / "monitoring"
COMPONENT = REPO_ROOT / "deploy" / "kubernetes" / "components" / "monitoring"
DATA = REPO_ROOT / "tests" / "deploy" / "data"
RULES = yaml.safe_load((MONITORING / "rules.yml").read_text())
ALERTS = [r for g in RULES["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "rules", str(MONITORING / "rules.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rules = sum(len(group["rules"]) for group in RULES["groups"])
    assert f"SUCCESS: {rules} rules found" in result.stdout  # promtool read every rule


def test_promtool_unit_tests_cover_every_alert() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "test", "rules", "rules.test.yml"],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tests = yaml.safe_load((MONITORING / "rules.test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    fired = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert fired == quiet == {a["alert"] for a in ALERTS}  # each fires, and stays quiet in a near miss


def test_the_canary_alert_finds_the_stable_version_in_model_info() -> None:
    """CropYieldCanaryWorse names no version: the stable one is the default of most replicas
    (``crop_yield_model_info{default="true"} == 1``), joined on ``job``, and both sides need
    traffic (its unit tests: worse fires; similar, too little traffic, no canary do not)."""
    (alert,) = [a for a in ALERTS if a["alert"] == "CropYieldCanaryWorse"]
    recorded = {r["record"]: r["expr"] for g in RULES["groups"] for r in g["rules"] if "record" in r}
    stable = recorded["crop_yield:stable_version:replicas"]
    assert "topk by (job, namespace) (1," in stable  # one stable version per deployment
    replicas = recorded["crop_yield:default_version:replicas"]
    assert 'crop_yield_model_info{job="crop-yield", default="true"} == 1' in replicas
    expr = alert["expr"]
    assert not re.search(r"version!?=", expr)  # no version written in
    assert expr.count("on (job, namespace) group_left (stable_version)") == 2
    assert expr.count("crop_yield:requests:increase10m_by_version >= 100") == 2  # canary and stable
    for name in (
        "crop_yield:stable_version:replicas",
        "crop_yield:request_errors:ratio10m_by_version",
        "crop_yield:request_duration_seconds:p99_10m_by_version",
    ):
        assert name in expr, name
        assert name in recorded, name
    for name in recorded:
        if name.endswith("10m_by_version") or name.endswith("_version:replicas"):
            # the versions of one deployment meet (job, and namespace where there is one)
            assert "by (job, namespace" in recorded[name], name
    assert alert["for"] == "10m"
    tests = yaml.safe_load((MONITORING / "rules.test.yml").read_text())["tests"]
    quiet = [
        test["name"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case["alertname"] == "CropYieldCanaryWorse" and not case.get("exp_alerts")
    ]
    for near_miss in (
        "slightly worse",
        "under 100 ms",
        "on 50 answers",
        "stable answers too few",
        "no canary",
    ):
        assert any(near_miss in name for name in quiet), near_miss


@pytest.mark.parametrize("alert", ALERTS, ids=[a["alert"] for a in ALERTS])
def test_every_alert_has_a_summary_and_a_runbook_entry(alert: dict[str, Any]) -> None:
    assert alert["annotations"]["summary"]
    assert alert["labels"]["severity"] in ("warning", "critical")
    page, _, anchor = alert["annotations"]["runbook_url"].partition("#")
    assert page == "docs/runbook.md"
    headings = re.findall(r"^#+ (.+)$", (REPO_ROOT / page).read_text(), flags=re.MULTILINE)
    assert anchor in {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}, anchor


def test_prometheus_rule_holds_exactly_the_rules_file() -> None:
    committed = (COMPONENT / "prometheusrule.yaml").read_text()
    generated = subprocess.run(
        [sys.executable, str(MONITORING / "prometheusrule.py")], capture_output=True, text=True, check=True
    ).stdout
    assert committed == generated, "run `make prometheus-rule`"
    assert yaml.safe_load(committed)["spec"]["groups"] == RULES["groups"]


@cache
def validator(kind: str) -> jsonschema.Draft7Validator:
    data = json.loads(
        gzip.decompress((DATA / f"prometheus-operator-v0.93.0-{kind.lower()}-v1.schema.json.gz").read_bytes())
    )
    assert "prometheus-operator/blob/v0.93.0/" in data["source"]
    return jsonschema.Draft7Validator(strict(data["openAPIV3Schema"]))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The cpu overlay with the monitoring component added, as a user would add it."""
    kubectl = require_tool("kubectl")
    overlay = tmp_path_factory.mktemp("with-monitoring")
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "crop-yield",
                # kustomize takes only relative directories
                "resources": [
                    os.path.relpath(REPO_ROOT / "deploy" / "kubernetes" / "overlays" / "cpu", overlay)
                ],
                "components": [os.path.relpath(COMPONENT, overlay)],
            }
        )
    )
    text = subprocess.run(
        [kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(overlay)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {d["kind"]: d for d in yaml.safe_load_all(text) if d}


@pytest.mark.parametrize("kind", ["ServiceMonitor", "PrometheusRule"])
def test_component_objects_match_prometheus_operator_crds(
    rendered: dict[str, dict[str, Any]], kind: str
) -> None:
    obj = rendered[kind]
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    assert obj["metadata"]["namespace"] == "crop-yield"
    validator(kind).validate(obj)


def test_the_schema_check_catches_a_misspelt_field(rendered: dict[str, dict[str, Any]]) -> None:
    monitor = json.loads(json.dumps(rendered["ServiceMonitor"]))
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError):
        validator("ServiceMonitor").validate(monitor)


def test_service_monitor_selects_the_service_and_its_port(rendered: dict[str, dict[str, Any]]) -> None:
    monitor, service = rendered["ServiceMonitor"]["spec"], rendered["Service"]
    labels = service["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in monitor["selector"]["matchLabels"].items())
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # job label = the Service's app.kubernetes.io/name, which the rules select on
    assert labels[monitor["jobLabel"]] == "crop-yield"
    assert all('job="crop-yield"' in r["expr"] for g in RULES["groups"] for r in g["rules"] if "record" in r)


def test_grafana_dashboard_structure() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert dashboard["templating"]["list"][0]["type"] == "datasource"
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in (
        "request rate",
        "error ratio",
        "latency",
        "rows predicted",
        "batch size",
        "outside the training range",
        "grpc calls per second",
        "grpc error ratio",
        "grpc modelinfer latency",
        "rows predicted per second by version",
        "p99 by version",
        "error ratio by version",
        # the versions side by side (a canary against the stable version)
        "request rate by version",
        "traffic share by version",
        "mean prediction by version",
        "prediction quantiles by version: apples",
        "prediction quantiles by version: oranges",
        "rows outside the training range by version",
        "canary vs stable: error ratio",
        "canary vs stable: p99",
        # is the model still right: drift against the training reference, and ground truth
        "drift: psi per feature by version",
        "drift: psi per predicted target by version",
        "drift: live and training share per bin",
        "ground truth: live rmse by version",
        "ground truth: interval coverage by version",
    ):
        assert topic in titles, topic
    assert "model version per pod (default and served)" in titles
    (info,) = [p for p in panels if p["title"].lower().startswith("model version per pod")]
    assert info["targets"][0]["expr"].endswith("== 1"), "versions no longer served stay at 0"
    assert sum(p["title"].startswith("Distribution: prediction") for p in panels) == 2
    # each version has buckets of its own: a distribution shows one version, never their sum
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["version"]["multi"] is False
    assert variables["version"]["includeAll"] is False
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            assert 'job="crop-yield"' in target["expr"], panel["title"]
            if panel["type"] == "heatmap":
                assert 'version="$version"' in target["expr"], panel["title"]
            elif re.search(r"crop_yield_(input|prediction)_\w+_bucket", target["expr"]):
                # quantiles from each version's own buckets, never from buckets summed over versions
                assert "sum by (version, le)" in target["expr"], panel["title"]
    by_title = {p["title"]: p for p in panels}
    for title, panel in by_title.items():
        if "by version" in title.lower():
            for target in panel["targets"]:
                assert "{{version}}" in target["legendFormat"], title


def test_grafana_canary_panels_draw_the_alerts_thresholds() -> None:
    """The two "Canary vs stable" panels plot the series CropYieldCanaryWorse compares and,
    as a line, its threshold from the stable version: the same expressions as the alert's."""
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    (alert,) = [a for a in ALERTS if a["alert"] == "CropYieldCanaryWorse"]
    expr = " ".join(alert["expr"].split())
    panels = [p for p in dashboard["panels"] if p["title"].startswith("Canary vs stable")]
    assert len(panels) == 2
    for panel in panels:
        compared, threshold = (t["expr"].replace('{job="crop-yield"}', "") for t in panel["targets"])
        assert compared in expr, panel["title"]
        line, stable = threshold.split(" and on (job, namespace, version) ")
        assert stable == "crop_yield:stable_version:replicas"
        assert line.strip("()") in expr, panel["title"]

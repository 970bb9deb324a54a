"""A real Prometheus (Debian's ``prometheus``, on loopback) scraping a served process with the
rules of ``deploy/monitoring/rules.yml``: the service's and BentoML's metrics arrive, every
recording rule produces values, the out-of-training-range alert fires (and the gRPC error
alert does not, on client errors), and every PromQL expression of the Grafana dashboard is
accepted (the core panels return data).

The process serves two versions, as a canary would: the trained one, the default (the
stable version), and ``canary`` beside it, which canary weights give 30% of the calls. The
versions' panels show both, and CropYieldCanaryWorse's expression meets the canary with the
stable version (and, the canary being no worse, stays quiet).

The rules are loaded as written, except that alerts wait ``for`` 0 s instead of minutes
(``promtool test rules`` covers the waiting, in ``tests/deploy/test_monitoring_files.py``).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import yaml

from devtools.grpc_requests import infer_request
from service.grpc import inference_pb2_grpc as rpc
from tests.helpers import REPO_ROOT, require_tool, run_training_cli
from tests.integration.conftest import Server, free_port, launch, serving

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MONITORING = REPO_ROOT / "deploy" / "monitoring"
IN_RANGE = {"temperature": 80.0, "rainfall": 90.0, "humidity": 50.0}
HUMID = {"temperature": 80.0, "rainfall": 90.0, "humidity": 95.0}  # trained on 36..71 %
GRPC_ROWS = np.array([list(IN_RANGE.values()), list(HUMID.values())], dtype=np.float32)
NEGATIVE_RAIN = np.array([[80.0, -1.0, 50.0]], dtype=np.float32)  # INVALID_ARGUMENT
CANARY = "canary"
FEEDBACK = {"inputs": [IN_RANGE, HUMID], "actuals": [{"apples": 70.0, "oranges": 85.0}] * 2}


def quick_alerts(rules: dict[str, Any]) -> dict[str, Any]:
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = "0s"
    return rules


@pytest.fixture(scope="module")
def grpc_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def stable(trained_home: tuple[Path, str]) -> str:
    """The trained version: the default, so the stable one."""
    return trained_home[1].split(":", 1)[1]


@pytest.fixture(scope="module")
def scraped(
    trained_home: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory, grpc_port: int, stable: str
) -> Iterator[Server]:
    """The trained store with a canary version trained beside it (another seed), both
    served, the trained one the default and the canary answering 30% of the calls."""
    store = tmp_path_factory.mktemp("canary-store")
    shutil.copytree(trained_home[0] / "models", store / "models", symlinks=True)
    trained = run_training_cli(["--quiet", "--version", CANARY, "--seed", "5"], store)
    assert trained.returncode == 0, trained.stderr
    with serving(
        (store, trained_home[1]),
        tmp_path_factory.mktemp("scraped"),
        grpc_port=str(grpc_port),
        version_policy=f"specific:{stable},{CANARY}",
        default_version=stable,
        version_weights=f"{stable}=70,{CANARY}=30",
    ) as served:
        yield served


@pytest.fixture(scope="module")
def prometheus(scraped: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = require_tool("prometheus")
    workdir = tmp_path_factory.mktemp("prometheus")
    rules = quick_alerts(yaml.safe_load((MONITORING / "rules.yml").read_text()))
    (workdir / "rules.yml").write_text(yaml.safe_dump(rules))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(workdir / "rules.yml")],
        "scrape_configs": [
            {"job_name": "crop-yield", "static_configs": [{"targets": [scraped.url.removeprefix("http://")]}]}
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    command = [
        binary,
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    process = launch(command, {}, workdir / "prometheus.log", cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: httpx.get(f"{url}/-/ready", timeout=1).status_code == 200, 30, workdir / "prometheus.log"
        )
        yield url
    finally:
        process.terminate()
        process.wait(30)


def wait_for(condition: Callable[[], bool], timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"not within {timeout} s" + (f":\n{log.read_text()[-3000:]}" if log else ""))


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.fixture(scope="module")
def traffic(scraped: Server, prometheus: str, grpc_port: int) -> None:
    """Eight seconds of predictions over HTTP and gRPC, most of the rows with humidity above
    the training range, and as many gRPC calls refused INVALID_ARGUMENT as answered."""
    deadline = time.monotonic() + 8
    with (
        httpx.Client(base_url=scraped.url) as client,
        grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel,
    ):
        infer = rpc.GRPCInferenceServiceStub(channel).ModelInfer
        while time.monotonic() < deadline:
            assert client.post("/predict", json={"inputs": [IN_RANGE, HUMID]}).status_code == 200
            assert client.post("/predict_columns", json={k: [v] for k, v in HUMID.items()}).status_code == 200
            assert client.post("/feedback", json=FEEDBACK).status_code == 200  # ground truth
            assert len(infer(infer_request(GRPC_ROWS), timeout=10).outputs) == 2
            with pytest.raises(grpc.RpcError) as refused:
                infer(infer_request(NEGATIVE_RAIN), timeout=10)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            time.sleep(0.02)
    wait_for(lambda: bool(query(prometheus, "crop_yield:rows_outside_training_range:share5m")), 30)


@pytest.mark.usefixtures("traffic")
@pytest.mark.parametrize(
    "metric",
    [
        'up{job="crop-yield"} == 1',
        "bentoml_service_request_total",
        "bentoml_service_request_duration_seconds_bucket",
        "crop_yield_rows_predicted_total",
        "crop_yield_rows_per_model_call_count",
        "crop_yield_model_info",
        "crop_yield_rows_outside_training_range_total",
        "crop_yield_input_humidity_bucket",
        "crop_yield_prediction_apples_bucket",
        'crop_yield_rows_predicted_total{endpoint="grpc_infer"}',
        'crop_yield_grpc_requests_total{method="ModelInfer", code="OK"}',
        'crop_yield_grpc_requests_total{method="ModelInfer", code="INVALID_ARGUMENT"}',
        'crop_yield_grpc_request_duration_seconds_bucket{method="ModelInfer"}',
        # by the model version that answered
        'crop_yield_model_info{default="true"} == 1',
        f'crop_yield_model_info{{default="false", version="{CANARY}"}} == 1',
        'crop_yield_rows_predicted_total{endpoint="predict", version!=""}',
        'crop_yield_rows_predicted_total{endpoint="grpc_infer", version!=""}',
        'bentoml_service_request_total{endpoint="/predict", version!=""}',
        'crop_yield_grpc_request_duration_seconds_bucket{method="ModelInfer", version!=""}',
        'crop_yield_input_humidity_bucket{version!=""}',
        'crop_yield_rows_outside_training_range_total{version!=""}',
        # ground truth (the default version's), and every version's training RMSE
        'crop_yield_feedback_rows_total{target="apples", version!=""} > 0',
        'crop_yield_feedback_inside_interval_total{level="0.95"}',
        f'crop_yield_model_training_rmse{{target="oranges", version="{CANARY}"}} > 0',
        # drift: the rows per reference bin, and the reference shares
        'crop_yield_input_bin_rows_total{feature="humidity", version!=""} > 0',
        'crop_yield_output_bin_rows_total{target="apples", version!=""} > 0',
        'crop_yield_input_reference_ratio{feature="humidity", version!=""}',
        'crop_yield_output_reference_ratio{target="oranges", version!=""}',
    ],
)
def test_metrics_arrive(prometheus: str, metric: str) -> None:
    assert query(prometheus, metric), metric


@pytest.mark.usefixtures("traffic")
def test_recording_rules_produce_values(prometheus: str, stable: str) -> None:
    rules = yaml.safe_load((MONITORING / "rules.yml").read_text())
    recorded = [r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r]
    # No request failed, so the 5xx ratio has no numerator series: accepted, but empty. Nor
    # has the gRPC server-error ratio: INVALID_ARGUMENT is the client's mistake.
    quiet = {"crop_yield:request_errors:ratio5m", "crop_yield:grpc_server_errors:ratio5m"}
    for name in recorded:
        wait_for(lambda name=name: bool(query(prometheus, name)) or name in quiet, 20)  # type: ignore[misc]
    (share,) = [s for s in query(prometheus, "crop_yield:rows_outside_training_range:share5m")]
    assert share["metric"]["feature"] == "humidity"
    assert 0.5 < float(share["value"][1]) < 0.8  # 3 of 5 rows per round trip
    # every RPC's OK series exists from the start (at 0); these two were called
    grpc_calls = {
        (s["metric"]["method"], s["metric"]["code"]): float(s["value"][1])
        for s in query(prometheus, "crop_yield:grpc_requests:rate5m")
    }
    assert grpc_calls[("ModelInfer", "OK")] > 0
    assert grpc_calls[("ModelInfer", "INVALID_ARGUMENT")] > 0
    (p99,) = query(prometheus, 'crop_yield:grpc_request_duration_seconds:p99_5m{method="ModelInfer"}')
    assert float(p99["value"][1]) > 0
    # two versions answered: rows by route and version, and no failed answer
    rows = query(prometheus, "crop_yield:rows_predicted:rate5m")
    assert {s["metric"]["endpoint"] for s in rows} >= {"predict", "predict_columns", "grpc_infer"}
    assert {s["metric"]["version"] for s in rows} == {stable, CANARY}
    for name in (
        "crop_yield:request_errors:ratio5m_by_version",
        "crop_yield:request_errors:ratio10m_by_version",
    ):
        errors = query(prometheus, name)
        assert {s["metric"]["version"] for s in errors} == {stable, CANARY}, name
        assert all(float(s["value"][1]) == 0 for s in errors), name
    # most rows have humidity above anything in training (the reference's upper tail: share 0)
    psi = {
        s["metric"]["version"]: float(s["value"][1])
        for s in query(prometheus, 'crop_yield:input_psi:1h{feature="humidity"}')
    }
    assert set(psi) == {stable, CANARY}
    assert min(psi.values()) > 0.25, psi
    (recorded,) = query(prometheus, "crop_yield:stable_version:replicas")
    assert recorded["metric"] == {
        "__name__": "crop_yield:stable_version:replicas",
        "job": "crop-yield",
        "version": stable,
    }
    assert float(recorded["value"][1]) == 1  # one replica


def canary_worse_expr() -> str:
    rules = yaml.safe_load((MONITORING / "rules.yml").read_text())
    (alert,) = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "CropYieldCanaryWorse"]
    return str(alert["expr"])


@pytest.mark.usefixtures("traffic")
def test_the_canary_meets_the_stable_version(prometheus: str, stable: str) -> None:
    """CropYieldCanaryWorse's expression on the real series: with its two comparisons turned
    round (the canary within the stable version's thresholds), it finds the canary, against
    the stable version, in both; as written (worse), nothing, and the alert stays quiet.
    Eight seconds of traffic may give the canary fewer answers than the minimum of 100 in
    10 minutes: it is lowered to 1 here (``promtool test rules`` covers the minimum)."""
    expr = canary_worse_expr()
    assert expr.count("> on (job, namespace) group_left (stable_version)") == 2
    assert expr.count("increase10m_by_version >= 100") == 2
    within = expr.replace(
        "> on (job, namespace) group_left (stable_version)",
        "<= on (job, namespace) group_left (stable_version)",
    ).replace("increase10m_by_version >= 100", "increase10m_by_version >= 1")
    wait_for(lambda: len(query(prometheus, within)) == 2, 30)
    found = {
        (s["metric"]["version"], s["metric"]["stable_version"], s["metric"]["signal"])
        for s in query(prometheus, within)
    }
    assert found == {(CANARY, stable, "error ratio"), (CANARY, stable, "p99 latency")}
    assert (
        query(prometheus, expr.replace("increase10m_by_version >= 100", "increase10m_by_version >= 1")) == []
    )
    alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    assert "CropYieldCanaryWorse" not in {a["labels"]["alertname"] for a in alerts}


@pytest.mark.usefixtures("traffic")
def test_the_out_of_training_range_alert_fires(prometheus: str) -> None:
    def firing() -> list[dict[str, Any]]:
        alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "CropYieldInputsOutsideTrainingRange"]

    wait_for(lambda: any(a["state"] == "firing" for a in firing()), 20)
    (alert,) = firing()
    assert alert["labels"]["feature"] == "humidity"
    assert "humidity outside the model's training range" in alert["annotations"]["summary"]
    names = {
        a["labels"]["alertname"] for a in httpx.get(f"{prometheus}/api/v1/alerts").json()["data"]["alerts"]
    }
    assert "CropYieldDown" not in names
    # half of the gRPC calls were refused INVALID_ARGUMENT: not a server error
    assert "CropYieldGrpcHighErrorRatio" not in names


def dashboard_expressions() -> list[tuple[str, str]]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


CORE_PANELS = {
    "Request rate by route",
    "Latency percentiles",
    "Rows predicted per second by route",
    "Batch size (rows per model call)",
    "Rows outside the training range, by feature",
    "Model version per pod (default and served)",
    "gRPC calls per second by method and code",
    "gRPC ModelInfer latency percentiles",
    "Rows predicted per second by version",
    "Latency p99 by version (prediction routes)",
    "Error ratio by version (prediction routes, non-2xx)",
    "Request rate by version (prediction routes)",
    "Traffic share by version (prediction answers, HTTP and gRPC)",
    "Canary vs stable: error ratio by version over 10 minutes, with the alert threshold",
    "Canary vs stable: p99 by version over 10 minutes, with the alert threshold",
    "Mean prediction by version (t/ha)",
    "Rows outside the training range by version and feature",
    "Prediction quantiles by version: apples (t/ha)",
    "Prediction quantiles by version: oranges (t/ha)",
}
# panels that put the versions side by side: both answer (the threshold lines: the stable only)
BY_VERSION = {title for title in CORE_PANELS if "by version" in title}


@pytest.mark.usefixtures("traffic")
@pytest.mark.parametrize(
    ("title", "expr"), dashboard_expressions(), ids=[t for t, _ in dashboard_expressions()]
)
def test_dashboard_queries(prometheus: str, title: str, expr: str) -> None:
    (default,) = query(prometheus, 'crop_yield_model_info{job="crop-yield", default="true"} == 1')
    # Grafana's variables: the rate window, and the version the distributions show
    expr = expr.replace("$__rate_interval", "1m").replace("$version", default["metric"]["version"])
    result = query(prometheus, expr)
    if title in CORE_PANELS or title.startswith("Distribution"):
        assert result, f"panel {title!r} has no data"
    if title in BY_VERSION and "stable_version:replicas" not in expr:
        versions = {s["metric"].get("version") for s in result}
        assert versions >= {default["metric"]["version"], CANARY}, (title, expr, versions)


def test_prometheus_saw_no_rule_errors(prometheus: str) -> None:
    groups = httpx.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
    rules = yaml.safe_load((MONITORING / "rules.yml").read_text())
    assert {g["name"] for g in groups} == {g["name"] for g in rules["groups"]}
    for group in groups:
        for rule in group["rules"]:
            assert rule["health"] != "err", rule

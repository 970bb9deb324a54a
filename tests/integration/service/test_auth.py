"""Optional bearer-token authentication: off by default; when on, predictions, metadata and
the V2 model routes need the token while probes (V2 health included) and metrics stay open."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate

from tests.integration.conftest import Server, start_service, stop_service

pytestmark = pytest.mark.integration

TOKEN = "s3cret-token-for-tests"
BODY = {"inputs": [{"temperature": 75, "rainfall": 63, "humidity": 44}]}
COLUMNS = {"temperature": [75], "rainfall": [63], "humidity": [44]}
V2_BODY = {
    "inputs": [
        {"name": name, "shape": [1], "datatype": "FP32", "data": values} for name, values in COLUMNS.items()
    ]
}
V2_MODEL = "/v2/models/crop_yield"


@pytest.fixture(scope="module")
def secured(trained_home: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home, _ = trained_home
    process, url = start_service(home, tmp_path_factory.mktemp("auth") / "log", auth_token=TOKEN)
    yield url
    stop_service(process)


def test_off_by_default(server: Server) -> None:
    assert httpx.post(f"{server.url}/predict", json=BODY).status_code == 200
    assert httpx.post(f"{server.url}{V2_MODEL}/infer", json=V2_BODY).status_code == 200
    assert httpx.get(f"{server.url}/metadata").status_code == 200
    assert "securitySchemes" not in httpx.get(f"{server.url}/docs.json").json()["components"]


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer", "Bearer wrong", f"Bearer {TOKEN}x", f"bearer{TOKEN}", TOKEN]
)
def test_protected_endpoints_refuse_without_the_token(secured: str, authorization: str | None) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    for method, path, body in [
        ("POST", "/predict", BODY),
        ("POST", "/predict_columns", COLUMNS),
        ("GET", "/metadata", None),
    ]:
        response = httpx.request(method, f"{secured}{path}", json=body, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["detail"][0]["loc"] == ["header", "authorization"]
    for method, path, body in [
        ("POST", f"{V2_MODEL}/infer", V2_BODY),
        ("GET", V2_MODEL, None),
        ("GET", f"{V2_MODEL}/versions/anything/infer", None),
    ]:
        response = httpx.request(method, f"{secured}{path}", json=body, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert set(response.json()) == {"error"}, "V2 routes answer the protocol's error body"
        assert "Authorization: Bearer" in response.json()["error"]


def test_the_token_opens_them(secured: str) -> None:
    headers = {"authorization": f"Bearer {TOKEN}"}
    assert httpx.post(f"{secured}/predict", json=BODY, headers=headers).status_code == 200
    assert httpx.post(f"{secured}/predict_columns", json=COLUMNS, headers=headers).status_code == 200
    assert httpx.get(f"{secured}/metadata", headers=headers).status_code == 200
    assert httpx.post(f"{secured}{V2_MODEL}/infer", json=V2_BODY, headers=headers).status_code == 200


def test_probes_metrics_and_docs_stay_open(secured: str) -> None:
    for path in (
        "/readyz",
        "/livez",
        "/healthz",
        "/metrics",
        "/docs.json",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        f"{V2_MODEL}/ready",  # the protocol's probes, as over gRPC (test_grpc.py)
    ):
        assert httpx.get(f"{secured}{path}").status_code == 200, path
    spec = httpx.get(f"{secured}/docs.json").json()
    validate(spec)
    assert "requires `Authorization: Bearer <token>`" in spec["info"]["description"]
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}
    assert "401" in spec["paths"]["/predict"]["post"]["responses"]
    assert "401" in spec["paths"]["/v2/models/{model_name}/infer"]["post"]["responses"]
    assert "401" not in spec["paths"]["/v2/health/ready"]["get"]["responses"]
    assert "401" not in spec["paths"]["/v2/models/{model_name}/ready"]["get"]["responses"]

"""The Open Inference Protocol (V2) against a served process: the exact JSON of every route,
tritonclient (JSON and binary tensors), the bad-input matrix, and V2 rows sharing the
batcher with /predict."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from contract import __version__
from tests.integration.conftest import Server
from tests.integration.service.test_api import _metric, as_inputs, random_rows, stored_weights
from tests.v2_cases import BAD_BODIES, FEATURES, ONE_ROW, binary_request, json_request

pytestmark = pytest.mark.integration

JSON = {"content-type": "application/json"}


def model(server: Server) -> tuple[str, str]:
    name, version = server.tag.split(":")
    return name, version


def expected(server: Server, rows: np.ndarray) -> np.ndarray:
    weight, bias = stored_weights(server)
    return np.asarray(rows, dtype=np.float64) @ weight.T + bias


# -- the exact JSON of each route --------------------------------------------------------


def test_server_routes(server: Server) -> None:
    assert httpx.get(f"{server.url}/v2").json() == {
        "name": "crop-yield-service",
        "version": __version__,
        "extensions": ["binary_tensor_data", "model_configuration", "statistics"],
    }
    assert httpx.get(f"{server.url}/v2/health/live").json() == {"live": True}
    ready = httpx.get(f"{server.url}/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


@pytest.mark.parametrize("versioned", [False, True])
def test_model_metadata_and_ready(server: Server, versioned: bool) -> None:
    name, version = model(server)
    base = f"{server.url}/v2/models/{name}" + (f"/versions/{version}" if versioned else "")
    tensors = [{"name": n, "datatype": "FP32", "shape": [-1]} for n in FEATURES]
    assert httpx.get(base).json() == {
        "name": name,
        "versions": [version],
        "platform": "pytorch",
        "inputs": tensors,
        "outputs": [
            *(
                {"name": n, "datatype": "FP32", "shape": [-1]}
                for n in (
                    "apples",
                    "oranges",
                    "apples_lower",
                    "apples_upper",
                    "oranges_lower",
                    "oranges_upper",
                )
            ),
            {"name": "extrapolated", "datatype": "BOOL", "shape": [-1]},
        ],
    }
    assert httpx.get(f"{base}/ready").json() == {"name": name, "ready": True}


@pytest.mark.parametrize("versioned", [False, True])
def test_infer_json(server: Server, versioned: bool) -> None:
    name, version = model(server)
    path = f"/v2/models/{name}" + (f"/versions/{version}" if versioned else "") + "/infer"
    rows = random_rows(20, seed=3)
    response = httpx.post(f"{server.url}{path}", json=json_request(rows, id="req-7", parameters={"x": 1}))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert {k: body[k] for k in ("model_name", "model_version", "id")} == {
        "model_name": name,
        "model_version": version,
        "id": "req-7",
    }
    assert [(o["name"], o["datatype"], o["shape"]) for o in body["outputs"]] == [
        ("apples", "FP32", [20]),
        ("oranges", "FP32", [20]),
    ]
    got = np.column_stack([o["data"] for o in body["outputs"]])
    np.testing.assert_allclose(got, expected(server, rows), atol=1e-3, rtol=0)


def test_one_n_by_3_tensor_as_kserve_clients_send(server: Server) -> None:
    rows = random_rows(5, seed=4)
    one_tensor = {"inputs": [{"name": "input-0", "shape": [5, 3], "datatype": "FP32", "data": rows.tolist()}]}
    response = httpx.post(f"{server.url}/v2/models/{model(server)[0]}/infer", json=one_tensor)
    assert response.status_code == 200, response.text
    per_feature = httpx.post(f"{server.url}/v2/models/{model(server)[0]}/infer", json=json_request(rows))
    assert response.json()["outputs"] == per_feature.json()["outputs"]


def test_unknown_model_or_version_is_404(server: Server) -> None:
    name, _ = model(server)
    for method, path in [
        ("GET", "/v2/models/pears"),
        ("GET", "/v2/models/pears/ready"),
        ("POST", "/v2/models/pears/infer"),
        ("GET", f"/v2/models/{name}/versions/v0"),
        ("GET", f"/v2/models/{name}/versions/v0/ready"),
        ("POST", f"/v2/models/{name}/versions/v0/infer"),
    ]:
        response = httpx.request(method, f"{server.url}{path}", content=ONE_ROW, headers=JSON)
        assert response.status_code == 404, path
        message = response.json()["error"]
        assert "'pears'" in message or "'v0'" in message, message
        assert f"'{name}'" in message, message


def test_binary_request_and_response(server: Server) -> None:
    rows = random_rows(1_000, seed=5)
    body, header_length = binary_request(rows, parameters={"binary_data_output": True})
    response = httpx.post(
        f"{server.url}/v2/models/crop_yield/infer",
        content=body,
        headers={
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(header_length),
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:length])
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert sizes == [4_000, 4_000]
    assert len(response.content) == length + sum(sizes)
    got = np.frombuffer(response.content[length:], "<f4").reshape(2, -1).T
    np.testing.assert_allclose(got, expected(server, rows.astype(np.float32)), atol=1e-3, rtol=0)


def test_100000_rows_bulk_both_ways_and_counted(server: Server) -> None:
    rows = random_rows(100_000, seed=9)
    before = httpx.get(f"{server.url}/metrics").text
    response = httpx.post(f"{server.url}/v2/models/crop_yield/infer", json=json_request(rows), timeout=60)
    assert response.status_code == 200, response.text[:300]
    got = np.column_stack([o["data"] for o in response.json()["outputs"]])
    np.testing.assert_allclose(got, expected(server, rows), atol=1e-3, rtol=0)
    body, header_length = binary_request(rows)
    response = httpx.post(
        f"{server.url}/v2/models/crop_yield/infer",
        content=body,
        headers={"inference-header-content-length": str(header_length)},  # no Content-Type at all
        timeout=60,
    )
    assert response.status_code == 200, response.text[:300]
    label = f'crop_yield_rows_predicted_total{{endpoint="v2_infer",version="{server.tag.split(":")[1]}"}} '
    after = httpx.get(f"{server.url}/metrics").text
    assert _metric(after, label) - _metric(before, label) == 200_000, [
        line for line in after.splitlines() if "rows_predicted" in line
    ]


def test_too_many_rows(server: Server) -> None:
    # over the bulk limit (1,000,000 by default) but well under the body-size limit
    body, header_length = binary_request(np.full((1_000_001, 3), 50.0))
    response = httpx.post(
        f"{server.url}/v2/models/crop_yield/infer",
        content=body,
        headers={"inference-header-content-length": str(header_length)},
        timeout=60,
    )
    assert response.status_code == 400
    assert "1000001 rows; at most 1000000" in response.json()["error"]


# -- tritonclient ----------------------------------------------------------------------


ROWS_TWO = np.array([[73.0, 67.0, 43.0], [91.0, 88.0, 64.0]], np.float32)


@pytest.fixture(scope="module")
def client(server: Server) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(server.url.removeprefix("http://"))


def triton_inputs(rows: np.ndarray, binary: bool = True) -> list[triton.InferInput]:
    inputs = []
    for j, name in enumerate(FEATURES):
        tensor = triton.InferInput(name, [len(rows)], "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(rows[:, j], dtype=np.float32), binary_data=binary)
        inputs.append(tensor)
    return inputs


def test_tritonclient_health_and_metadata(client: triton.InferenceServerClient, server: Server) -> None:
    name, version = model(server)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready(name)
    assert client.is_model_ready(name, version)
    assert not client.is_model_ready("pears")
    assert client.get_server_metadata()["extensions"] == [
        "binary_tensor_data",
        "model_configuration",
        "statistics",
    ]
    metadata = client.get_model_metadata(name, version)
    assert [t["name"] for t in metadata["inputs"]] == list(FEATURES)
    with pytest.raises(InferenceServerException, match="not served here"):
        client.get_model_metadata("pears")


def test_tritonclient_reads_the_statistics(client: triton.InferenceServerClient, server: Server) -> None:
    """Triton's statistics extension: three calls (one refused) move the version's counts."""
    name, version = model(server)

    def stats() -> dict:  # type: ignore[type-arg]
        (entry,) = client.get_inference_statistics(name, version)["model_stats"]
        return entry  # type: ignore[no-any-return]

    before = stats()
    for _ in range(2):
        client.infer(name, triton_inputs(ROWS_TWO))
    with pytest.raises(InferenceServerException):
        client.infer(name, triton_inputs(ROWS_TWO * -1))  # below the bounds: refused
    after = stats()
    assert (after["name"], after["version"]) == (name, version)
    delta = {
        stage: after["inference_stats"][stage]["count"] - before["inference_stats"][stage]["count"]
        for stage in ("success", "fail", "compute_input", "compute_infer", "compute_output", "queue")
    }
    assert delta == {
        "success": 2,
        "fail": 1,
        "compute_input": 2,
        "compute_infer": 2,
        "compute_output": 2,
        "queue": 2,
    }
    assert after["inference_stats"]["compute_infer"]["ns"] > before["inference_stats"]["compute_infer"]["ns"]
    assert after["inference_count"] - before["inference_count"] == 4  # rows
    assert after["execution_count"] > before["execution_count"]
    assert after["last_inference"] >= before["last_inference"]
    assert [e["version"] for e in client.get_inference_statistics()["model_stats"]] == [version]


def test_tritonclient_reads_the_model_configuration(
    client: triton.InferenceServerClient, server: Server
) -> None:
    """Triton's model-configuration extension, as perf_analyzer reads it before any load."""
    name, version = model(server)
    config = client.get_model_config(name)
    assert client.get_model_config(name, version) == config
    assert config["max_batch_size"] == 0  # the rows are the tensors' own first dimension
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [
        (feature, "TYPE_FP32", [-1]) for feature in FEATURES
    ]
    assert [o["name"] for o in config["output"]][:2] == ["apples", "oranges"]
    assert config["parameters"]["model_tag"]["string_value"] == f"{name}:{version}"
    assert config["parameters"]["batching"]["string_value"].startswith("adaptive")
    with pytest.raises(InferenceServerException, match="not served here"):
        client.get_model_config("pears")


def test_tritonclient_default_request_is_binary_both_ways(
    client: triton.InferenceServerClient, server: Server
) -> None:
    rows = random_rows(64, seed=11).astype(np.float32)
    result = client.infer("crop_yield", triton_inputs(rows), request_id="abc-1")
    response = result.get_response()
    assert response["id"] == "abc-1"
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])
    got = np.column_stack([result.as_numpy("apples"), result.as_numpy("oranges")])
    np.testing.assert_allclose(got, expected(server, rows), atol=1e-3, rtol=0)


def test_tritonclient_json_inputs_and_one_json_output(
    client: triton.InferenceServerClient, server: Server
) -> None:
    rows = random_rows(8, seed=12).astype(np.float32)
    name, version = model(server)
    result = client.infer(
        name,
        triton_inputs(rows, binary=False),
        model_version=version,
        outputs=[triton.InferRequestedOutput("oranges", binary_data=False)],
    )
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["oranges"]
    assert response["model_version"] == version
    np.testing.assert_allclose(result.as_numpy("oranges"), expected(server, rows)[:, 1], atol=1e-3, rtol=0)
    assert result.as_numpy("apples") is None


def test_tritonclient_sees_errors(client: triton.InferenceServerClient) -> None:
    rows = np.array([[73.0, -5.0, 43.0]], dtype=np.float32)
    with pytest.raises(InferenceServerException, match="'rainfall': element 0 is -5 mm, below the minimum"):
        client.infer("crop_yield", triton_inputs(rows))


# -- the bad-input matrix --------------------------------------------------------------

HTTP_CASES: list[tuple[str, bytes, dict[str, str], int, list[str]]] = [
    ("text/plain", ONE_ROW, {"content-type": "text/plain"}, 415, ["application/json", "text/plain"]),
    ("form encoded", ONE_ROW, {"content-type": "application/x-www-form-urlencoded"}, 415, ["octet-stream"]),
    ("multipart", ONE_ROW, {"content-type": "multipart/form-data; boundary=x"}, 415, ["multipart/form-data"]),
    (
        "oversized body",
        b"{" + b" " * 41_943_041 + b"}",
        JSON,
        413,
        ["request too large", "CROP_YIELD_MAX_BODY_BYTES"],
    ),
]


@pytest.mark.parametrize(
    ("case", "body", "header_length", "fragments"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES]
)
def test_bad_bodies(
    server: Server, case: str, body: bytes, header_length: str | None, fragments: list[str]
) -> None:
    headers = dict(JSON)
    if header_length is not None:
        headers = {
            "content-type": "application/octet-stream",
            "inference-header-content-length": header_length,
        }
    response = httpx.post(f"{server.url}/v2/models/crop_yield/infer", content=body, headers=headers)
    assert response.status_code == 400, (case, response.text)
    error = response.json()
    assert set(error) == {"error"}
    for fragment in fragments:
        assert fragment in error["error"], (case, error)


@pytest.mark.parametrize(
    ("case", "body", "headers", "status", "fragments"), HTTP_CASES, ids=[c[0] for c in HTTP_CASES]
)
def test_bad_requests(
    server: Server, case: str, body: bytes, headers: dict[str, str], status: int, fragments: list[str]
) -> None:
    response = httpx.post(
        f"{server.url}/v2/models/crop_yield/infer", content=body, headers=headers, timeout=60
    )
    assert response.status_code == status, (case, response.text[:300])
    error = response.json()
    assert set(error) == {"error"}
    for fragment in fragments:
        assert fragment in error["error"], (case, error)


def test_still_ready_after_the_matrix(server: Server) -> None:
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    assert (
        httpx.post(f"{server.url}/v2/models/crop_yield/infer", content=ONE_ROW, headers=JSON).status_code
        == 200
    )
    assert "Traceback" not in server.log.read_text()


# -- V2 and /predict share the batcher -------------------------------------------------


def test_concurrent_v2_and_predict_callers_each_get_their_own_rows(server: Server) -> None:
    payloads = [random_rows(1 + i % 4, seed=2000 + i) for i in range(200)]

    async def call(client: httpx.AsyncClient, i: int, rows: np.ndarray) -> np.ndarray:
        if i % 2:
            response = await client.post("/predict", json={"inputs": as_inputs(rows)})
            assert response.status_code == 200, response.text
            return np.array([[p["apples"], p["oranges"]] for p in response.json()["predictions"]])
        response = await client.post("/v2/models/crop_yield/infer", json=json_request(rows, id=str(i)))
        assert response.status_code == 200, response.text
        assert response.json()["id"] == str(i)
        return np.column_stack([o["data"] for o in response.json()["outputs"]])

    async def call_all() -> list[np.ndarray]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as client:
            return await asyncio.gather(*(call(client, i, rows) for i, rows in enumerate(payloads)))

    calls = "crop_yield_rows_per_model_call_count "
    before = _metric(httpx.get(f"{server.url}/metrics").text, calls)
    results = asyncio.run(call_all())
    for rows, got in zip(payloads, results, strict=True):
        np.testing.assert_allclose(got, expected(server, rows), atol=1e-3, rtol=0)
    assert _metric(httpx.get(f"{server.url}/metrics").text, calls) - before < len(payloads)


def test_openapi_documents_the_v2_routes_for_the_served_model(server: Server) -> None:
    name, version = model(server)
    spec = httpx.get(f"{server.url}/docs.json").json()
    infer = spec["paths"]["/v2/models/{model_name}/versions/{version}/infer"]["post"]
    parameters = {p["name"]: p["schema"] for p in infer["parameters"] if p["in"] == "path"}
    assert parameters["model_name"]["enum"] == [name]
    assert parameters["version"]["enum"] == [version]
    body = infer["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/InferenceRequest"}
    assert "InferenceRequest" in spec["components"]["schemas"]
    error = infer["responses"]["400"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/V2Error"}
    for path in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{model_name}/ready"):
        assert "get" in spec["paths"][path], path

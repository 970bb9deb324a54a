"""The bad-input matrix: every malformed request gets the right 4xx naming what is wrong,
promptly, without growing the worker, and the service stays ready."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import psutil
import pytest

from tests.integration.conftest import Server

pytestmark = pytest.mark.integration

ROW = b'{"temperature":73,"rainfall":67,"humidity":43}'
JSON = {"content-type": "application/json"}


def rows(n: int) -> bytes:
    return b'{"inputs":[' + b",".join([ROW] * n) + b"]}"


def column_body(temperature: bytes, rainfall: bytes = b"[67]", humidity: bytes = b"[43]") -> bytes:
    return b'{"temperature":' + temperature + b',"rainfall":' + rainfall + b',"humidity":' + humidity + b"}"


def chunked(body: bytes, size: int = 1 << 20) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


FIFTY_MB = b'{"inputs":[' + b",".join([ROW] * 1_100_000) + b"]}"  # ~51 MB of valid-looking JSON

# (case, path, body, headers, expected status, fragments the answer must contain)
CASES: list[tuple[str, str, bytes, dict[str, str], int, list[str]]] = [
    ("malformed JSON", "/predict", b'{"inputs": [', JSON, 400, ["json_invalid"]),
    ("not JSON", "/predict", b"temperature=73", JSON, 400, ["json_invalid"]),
    ("empty body", "/predict", b"", JSON, 400, ["inputs", "missing"]),
    ("array at the root", "/predict", b"[]", JSON, 400, ["model_type"]),
    ("string at the root", "/predict", b'"inputs"', JSON, 400, ["model_type"]),
    ("invalid UTF-8", "/predict", b'{"inputs": "\xff\xfe"}', JSON, 400, ["json_invalid"]),
    ("text/plain", "/predict", rows(1), {"content-type": "text/plain"}, 415, ["content-type"]),
    (
        "multipart",
        "/predict",
        rows(1),
        {"content-type": "multipart/form-data; boundary=x"},
        415,
        ["content-type"],
    ),
    (
        "form encoded",
        "/predict",
        rows(1),
        {"content-type": "application/x-www-form-urlencoded"},
        415,
        ["content-type"],
    ),
    (
        "NaN token",
        "/predict",
        b'{"inputs":[{"temperature":NaN,"rainfall":1,"humidity":1}]}',
        JSON,
        400,
        ["temperature", "finite"],
    ),
    (
        "Infinity token",
        "/predict",
        b'{"inputs":[{"temperature":1,"rainfall":Infinity,"humidity":1}]}',
        JSON,
        400,
        ["rainfall"],
    ),
    (
        "-Infinity token",
        "/predict",
        b'{"inputs":[{"temperature":-Infinity,"rainfall":1,"humidity":1}]}',
        JSON,
        400,
        ["temperature"],
    ),
    (
        "string for a number",
        "/predict",
        b'{"inputs":[{"temperature":"73","rainfall":1,"humidity":1}]}',
        JSON,
        400,
        ["temperature"],
    ),
    (
        "null for a number",
        "/predict",
        b'{"inputs":[{"temperature":null,"rainfall":1,"humidity":1}]}',
        JSON,
        400,
        ["temperature"],
    ),
    (
        "boolean for a number",
        "/predict",
        b'{"inputs":[{"temperature":true,"rainfall":1,"humidity":1}]}',
        JSON,
        400,
        ["temperature"],
    ),
    (
        "object for a number",
        "/predict",
        b'{"inputs":[{"temperature":{"v":1},"rainfall":1,"humidity":1}]}',
        JSON,
        400,
        ["temperature"],
    ),
    ("row as a list", "/predict", b'{"inputs":[[73,67,43]]}', JSON, 400, ["inputs", "0"]),
    (
        "temperature out of range",
        "/predict",
        b'{"inputs":[{"temperature":1000,"rainfall":1,"humidity":1}]}',
        JSON,
        400,
        ["temperature", "140"],
    ),
    (
        "negative humidity",
        "/predict",
        b'{"inputs":[' + ROW + b',{"temperature":70,"rainfall":1,"humidity":-1}]}',
        JSON,
        400,
        ["inputs", "1", "humidity"],
    ),
    (
        "rainfall above maximum",
        "/predict",
        b'{"inputs":[{"temperature":70,"rainfall":1e5,"humidity":1}]}',
        JSON,
        400,
        ["rainfall"],
    ),
    (
        "missing field",
        "/predict",
        b'{"inputs":[{"temperature":70,"rainfall":1}]}',
        JSON,
        400,
        ["humidity", "missing"],
    ),
    (
        "extra row field",
        "/predict",
        b'{"inputs":[{"temperature":70,"rainfall":1,"humidity":1,"wind":2}]}',
        JSON,
        400,
        ["wind"],
    ),
    ("extra top-level field", "/predict", b'{"inputs":[' + ROW + b'],"debug":true}', JSON, 400, ["debug"]),
    ("empty inputs", "/predict", b'{"inputs":[]}', JSON, 400, ["inputs", "at least 1"]),
    ("null inputs", "/predict", b'{"inputs":null}', JSON, 400, ["inputs"]),
    ("inputs as an object", "/predict", b'{"inputs":' + ROW + b"}", JSON, 400, ["inputs", "list_type"]),
    ("too many rows", "/predict", rows(10_001), JSON, 400, ["inputs", "at most 10000"]),
    ("50 MB body", "/predict", FIFTY_MB, JSON, 413, ["body", "CROP_YIELD_MAX_BODY_BYTES"]),
    (
        "deeply nested JSON",
        "/predict",
        b'{"inputs":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        JSON,
        400,
        ["recursion limit"],
    ),
    (
        "huge number literal",
        "/predict",
        b'{"inputs":[{"temperature":1' + b"0" * 5000 + b',"rainfall":1,"humidity":1}]}',
        JSON,
        400,
        ["json_invalid"],
    ),
    (
        "overflowing float literal",
        "/predict",
        b'{"inputs":[{"temperature":1e400,"rainfall":1,"humidity":1}]}',
        JSON,
        400,
        ["temperature"],
    ),
    ("unequal column lengths", "/predict_columns", column_body(b"[73,74]"), JSON, 400, ["differ in length"]),
    ("NaN in a column", "/predict_columns", column_body(b"[73]", b"[NaN]"), JSON, 400, ["rainfall", "row 0"]),
    (
        "column value out of range",
        "/predict_columns",
        column_body(b"[73,74]", b"[1,2]", b"[40,400]"),
        JSON,
        400,
        ["humidity", "row 1"],
    ),
    ("string in a column", "/predict_columns", column_body(b'["73"]'), JSON, 400, ["temperature"]),
    ("empty columns", "/predict_columns", column_body(b"[]", b"[]", b"[]"), JSON, 400, ["temperature"]),
    (
        "missing column",
        "/predict_columns",
        b'{"temperature":[1],"rainfall":[1]}',
        JSON,
        400,
        ["humidity", "missing"],
    ),
    (
        "extra column",
        "/predict_columns",
        b'{"temperature":[1],"rainfall":[1],"humidity":[1],"wind":[1]}',
        JSON,
        400,
        ["wind"],
    ),
    (
        "too many column rows",
        "/predict_columns",
        column_body(*(b"[" + b",".join([b"1"] * 1_000_001) + b"]" for _ in range(3))),
        JSON,
        400,
        ["at most 1000000"],
    ),
    (
        "text/plain columns",
        "/predict_columns",
        column_body(b"[73]"),
        {"content-type": "text/plain"},
        415,
        ["content-type"],
    ),
]


def worker_rss(server: Server) -> int:
    parent = psutil.Process(server.process.pid)
    return max(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])


@pytest.mark.parametrize(
    ("case", "path", "body", "headers", "status", "fragments"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_input(
    server: Server,
    case: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    fragments: list[str],
) -> None:
    # The timeout is a hang detector, not a performance target.
    response = httpx.post(f"{server.url}{path}", content=body, headers=headers, timeout=30)
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    text = response.text
    assert len(text) < 100_000  # errors are summarized, not echoed per element
    for fragment in fragments:
        assert fragment in text, text[:500]
    assert httpx.get(f"{server.url}/readyz").status_code == 200


def test_chunked_oversized_body_is_cut_off(server: Server) -> None:
    response = httpx.post(f"{server.url}/predict", content=chunked(FIFTY_MB), headers=JSON, timeout=30)
    assert response.status_code == 413
    assert "CROP_YIELD_MAX_BODY_BYTES" in response.text


def test_chunked_small_body_is_served(server: Server) -> None:
    response = httpx.post(f"{server.url}/predict", content=chunked(rows(3), 10), headers=JSON)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 3


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/predict"), ("POST", "/metadata"), ("PUT", "/predict")]
)
def test_wrong_method(server: Server, method: str, path: str) -> None:
    assert httpx.request(method, f"{server.url}{path}").status_code == 405


def test_the_whole_matrix_without_memory_blow_up(server: Server) -> None:
    before = worker_rss(server)
    for _, path, body, headers, status, _ in CASES:
        assert (
            httpx.post(f"{server.url}{path}", content=body, headers=headers, timeout=30).status_code == status
        )
    growth_mb = (worker_rss(server) - before) / 2**20
    print(f"{len(CASES)} bad requests: worker RSS growth {growth_mb:.0f} MB")
    assert growth_mb < 200
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    # Rejections are logged as one line each; a traceback would mean a server-side error.
    log = server.log.read_text()
    assert "rejected, 1 validation error(s)" in log
    assert "Traceback" not in log

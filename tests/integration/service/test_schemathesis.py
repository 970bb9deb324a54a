"""Property-based fuzzing of every operation in the served OpenAPI document (/docs.json).

Each generated request, valid (positive) or not (negative), must get no 5xx and a response
that matches what the document declares (status, content type, body schema); invalid
data must be refused. Driven through hypothesis directly: schemathesis' own pytest plugin
does not load under pytest 9.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from tests.integration.conftest import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# 300 + 300 per POST operation in CI; SCHEMATHESIS_EXAMPLES=3000 for a longer run.
PER_MODE = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "300"))
EXAMPLES = {GenerationMode.POSITIVE: PER_MODE, GenerationMode.NEGATIVE: PER_MODE}
CASES: dict[str, int] = {}


@pytest.fixture(scope="module")
def api_schema(server: Server) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{server.url}/docs.json")


V2_MODEL = "/v2/models/{model_name}"
V2_VERSION = f"{V2_MODEL}/versions/{{version}}"
POST = [
    "POST /predict",
    "POST /predict_columns",
    "POST /feedback",
    f"POST {V2_MODEL}/infer",
    f"POST {V2_VERSION}/infer",
]
GET = ["GET /metadata", "GET /readyz", "GET /livez", "GET /healthz", "GET /metrics"]
V2_GET = [
    "GET /v2",
    "GET /v2/health/live",
    "GET /v2/health/ready",
    f"GET {V2_MODEL}",
    f"GET {V2_VERSION}",
    f"GET {V2_MODEL}/ready",
    f"GET {V2_VERSION}/ready",
]
# Operations without parameters or body have nothing to make invalid: positive only. The
# V2 GET routes' only parameters are the served model's name and version: a few cases each.
RUNS = [(label, mode) for label in POST for mode in EXAMPLES] + [
    (label, GenerationMode.POSITIVE) for label in GET + V2_GET
]
SMALL = {label: 20 for label in V2_GET}


@pytest.mark.parametrize(("label", "mode"), RUNS, ids=[f"{label}-{mode.value}" for label, mode in RUNS])
def test_operation(
    api_schema: schemathesis.BaseSchema, server: Server, label: str, mode: GenerationMode
) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, f"{label} missing from /docs.json"
    excluded = []
    if operation.path in ("/predict_columns", "/feedback") or operation.path.endswith("/infer"):
        # JSON Schema cannot say "the three columns (tensors) are equally long", "one
        # tensor per feature" or "one actual per input row", so some schema-valid bodies
        # are rightly refused with 400.
        excluded.append(positive_data_acceptance)

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=SMALL.get(label, EXAMPLES[mode]),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case: schemathesis.Case) -> None:
        CASES[label] = CASES.get(label, 0) + 1
        case.call_and_validate(base_url=server.url, excluded_checks=excluded)

    run()


def test_at_least_1000_cases_ran() -> None:
    print("schemathesis cases per operation:", CASES)
    if set(CASES) != set(POST + GET + V2_GET):
        pytest.skip("only some operations were selected in this run")
    assert sum(CASES.values()) >= 1000

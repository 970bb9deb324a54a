"""Load test for the crop-yield service.

    locust -f loadtest/locustfile.py --headless --host http://localhost:3000 \
        -u 50 -r 10 -t 2m --html reports/loadtest/report.html --csv reports/loadtest/stats

(`make loadtest` runs exactly this.) Users mix single-row /predict calls, small batches, V2 infer calls and
occasional bulk /predict_columns calls with random but realistic inputs, and check every
response body. At the end the run fails (exit code 1) when the failure ratio or the p95 /
p99 response times exceed the thresholds below (command-line options or LOCUST_* variables).
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from locust import FastHttpUser, between, events, task
from locust.env import Environment

# Ranges seen in the training data, widened a little: realistic, not only the 15 rows.
RANGES = {"temperature": (55.0, 110.0), "rainfall": (20.0, 160.0), "humidity": (20.0, 90.0)}


@events.init_command_line_parser.add_listener
def _thresholds(parser: Any) -> None:
    parser.add_argument(
        "--max-fail-ratio",
        type=float,
        default=0.0,
        env_var="LOCUST_MAX_FAIL_RATIO",
        help="fail the run above this share of failed requests",
    )
    parser.add_argument(
        "--max-p95-ms",
        type=float,
        default=500.0,
        env_var="LOCUST_MAX_P95_MS",
        help="fail the run when the aggregated p95 response time exceeds this",
    )
    parser.add_argument(
        "--max-p99-ms",
        type=float,
        default=1000.0,
        env_var="LOCUST_MAX_P99_MS",
        help="fail the run when the aggregated p99 response time exceeds this",
    )


@events.quitting.add_listener
def _check_thresholds(environment: Environment, **_: Any) -> None:
    total = environment.stats.total
    options = environment.parsed_options
    problems = []
    if total.num_requests == 0:
        problems.append("no requests were made")
    elif total.fail_ratio > options.max_fail_ratio:
        problems.append(f"failure ratio {total.fail_ratio:.4f} > {options.max_fail_ratio}")
    p95, p99 = total.get_response_time_percentile(0.95), total.get_response_time_percentile(0.99)
    if p95 > options.max_p95_ms:
        problems.append(f"p95 {p95:.0f} ms > {options.max_p95_ms:.0f} ms")
    if p99 > options.max_p99_ms:
        problems.append(f"p99 {p99:.0f} ms > {options.max_p99_ms:.0f} ms")
    summary = (
        f"{total.num_requests} requests, {total.total_rps:.1f} req/s, {total.num_failures} failures, "
        f"p50 {total.get_response_time_percentile(0.5):.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms"
    )
    if problems:
        print(f"THRESHOLDS MISSED: {'; '.join(problems)} ({summary})")
        environment.process_exit_code = 1
    else:
        print(f"thresholds met ({summary})")


def random_row() -> dict[str, float]:
    return {name: round(random.uniform(low, high), 1) for name, (low, high) in RANGES.items()}


class PredictionClient(FastHttpUser):
    """Another service calling the API: mostly single rows, some batches, rare bulk calls."""

    wait_time = between(0.05, 0.5)

    def on_start(self) -> None:
        token = os.environ.get("LOADTEST_TOKEN")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        with self.client.get(
            "/metadata", headers=self.headers, name="/metadata", catch_response=True
        ) as response:
            self.model = response.json()["model"] if response.status_code == 200 else None
            if self.model is None:
                response.failure(f"/metadata answered {response.status_code}")

    def _check_rows(
        self, response: Any, body: dict[str, Any], predictions: list[dict[str, Any]], expected: int
    ) -> None:
        if body.get("model") != self.model:
            response.failure(f"model {body.get('model')!r}, expected {self.model!r}")
        elif len(predictions) != expected:
            response.failure(f"{len(predictions)} predictions for {expected} rows")
        elif not all(math.isfinite(p["apples"]) and math.isfinite(p["oranges"]) for p in predictions):
            response.failure("non-finite prediction")
        else:
            response.success()

    @contextmanager
    def _post(self, path: str, payload: dict[str, Any], name: str) -> Iterator[tuple[Any, Any]]:
        """POST with the checks every call shares; yields (response, JSON body or None on error)."""
        with self.client.post(
            path, json=payload, headers=self.headers, name=name, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}: {response.text[:200]}")
                yield response, None
            else:
                yield response, response.json()

    def _predict(self, n: int, name: str) -> None:
        payload = {"inputs": [random_row() for _ in range(n)]}
        with self._post("/predict", payload, name) as (response, body):
            if body is not None:
                self._check_rows(response, body, body.get("predictions", []), n)

    @task(10)
    def single_row(self) -> None:
        self._predict(1, "/predict [1 row]")

    @task(4)
    def small_batch(self) -> None:
        self._predict(random.randint(2, 50), "/predict [2-50 rows]")

    @task(1)
    def bulk(self) -> None:
        n = random.randint(1_000, 20_000)
        rows = [random_row() for _ in range(n)]
        payload = {name: [r[name] for r in rows] for name in RANGES}
        with self._post("/predict_columns", payload, "/predict_columns [1k-20k rows]") as (response, body):
            if body is None:
                return
            if len(body["apples"]) != len(body["oranges"]):
                response.failure("apples and oranges differ in length")
                return
            predictions = [
                {"apples": a, "oranges": o} for a, o in zip(body["apples"], body["oranges"], strict=False)
            ]
            self._check_rows(response, body, predictions, n)

    @task(3)
    def v2_infer(self) -> None:
        """A V2 client (tritonclient, a KServe graph): JSON tensors, 1 to 20 rows."""
        n = random.randint(1, 20)
        rows = [random_row() for _ in range(n)]
        payload = {
            "inputs": [
                {"name": name, "shape": [n], "datatype": "FP32", "data": [r[name] for r in rows]}
                for name in RANGES
            ]
        }
        path = "/v2/models/crop_yield/infer"
        with self._post(path, payload, f"{path} [1-20 rows]") as (response, body):
            if body is None:
                return
            outputs = {o["name"]: o["data"] for o in body.get("outputs", [])}
            tagged = {"model": f"{body.get('model_name')}:{body.get('model_version')}"}
            predictions = [
                {"apples": a, "oranges": o}
                for a, o in zip(outputs.get("apples", []), outputs.get("oranges", []), strict=False)
            ]
            self._check_rows(response, tagged, predictions, n)

"""The locust load test, as CI runs it: a short smoke against a real served process."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT
from tests.integration.conftest import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]
LOCUST = [sys.executable, "-m", "locust", "-f", str(REPO_ROOT / "loadtest" / "locustfile.py"), "--headless"]


def run_locust(
    server: Server, out: Path, users: int, seconds: int, *extra: str
) -> subprocess.CompletedProcess[str]:
    out.mkdir(parents=True, exist_ok=True)
    command = [
        *LOCUST,
        "--host",
        server.url,
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{seconds}s",
        "--html",
        str(out / "report.html"),
        "--csv",
        str(out / "stats"),
        "--only-summary",
        *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)


def test_smoke_20_users_20_seconds_without_failures(server: Server, tmp_path: Path) -> None:
    result = run_locust(server, tmp_path, users=20, seconds=20)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "thresholds met" in output
    with (tmp_path / "stats_stats.csv").open() as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    aggregated = rows["Aggregated"]
    assert int(aggregated["Request Count"]) > 100
    assert int(aggregated["Failure Count"]) == 0
    for name in (
        "/predict [1 row]",
        "/predict [2-50 rows]",
        "/predict_columns [1k-20k rows]",
        "/v2/models/crop_yield/infer [1-20 rows]",
    ):
        assert int(rows[name]["Request Count"]) > 0, name
    assert (tmp_path / "report.html").stat().st_size > 10_000


def test_missed_threshold_fails_the_run(server: Server, tmp_path: Path) -> None:
    result = run_locust(server, tmp_path, 2, 3, "--max-p99-ms", "0.001")
    assert result.returncode == 1
    assert "THRESHOLDS MISSED: p99" in result.stdout + result.stderr

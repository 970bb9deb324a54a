"""Triton's statistics without a server (service.observability.statistics): a call's times
in Triton's stages, model calls and rows, refusals before a version under the default, and
the report read back from Prometheus as the routes read it."""

from __future__ import annotations

import time

import pytest

from service.observability.statistics import CALL, Statistics, read


def test_a_call_s_times_land_in_triton_s_stages() -> None:
    """(Other tests of this process count calls without a version too, under the default:
    the report is read as a difference.)"""
    stats = Statistics()
    stats.flush()
    (before,) = read("crop_yield", ["stats-v1"], default="stats-v1")
    call = stats.begin()
    assert CALL.get() is call
    call.started = time.perf_counter() - 0.010
    call.model_start, call.model_end = call.started + 0.002, call.started + 0.006
    call.infer_s = 0.003
    call.version = "stats-v1"
    stats.executed("stats-v1", 5)
    stats.end(call, ok=True)
    refused = stats.begin()  # refused before any version was chosen (a bad body)
    stats.end(refused, ok=False)
    stats.flush()

    (report,) = read("crop_yield", ["stats-v1"], default="stats-v1")
    assert (report["name"], report["version"]) == ("crop_yield", "stats-v1")
    assert report["inference_count"] - before["inference_count"] == 5
    assert report["execution_count"] - before["execution_count"] == 1
    assert abs(report["last_inference"] - time.time() * 1000) < 5_000
    stages = {
        stage: {key: value - before["inference_stats"][stage][key] for key, value in counted.items()}
        for stage, counted in report["inference_stats"].items()
    }
    assert stages["success"]["count"] == 1
    assert stages["success"]["ns"] >= 10_000_000
    assert stages["fail"]["count"] == 1  # the refusal, under the default version
    assert stages["compute_input"] == {"count": 1, "ns": pytest.approx(2_000_000, rel=1e-3)}
    assert stages["queue"] == {"count": 1, "ns": pytest.approx(1_000_000, rel=1e-3)}
    assert stages["compute_infer"] == {"count": 1, "ns": pytest.approx(3_000_000, rel=1e-3)}
    assert stages["compute_output"]["ns"] >= 4_000_000
    assert stages["cache_hit"] == {"count": 0, "ns": 0}


def test_a_version_without_calls_reads_zero() -> None:
    (report,) = read("crop_yield", ["stats-never"], default="stats-never-default")
    assert report["inference_count"] == 0
    assert report["inference_stats"]["success"] == {"count": 0, "ns": 0}

"""Changing the served set while serving (``DataPlane.change``), canary weights
(``service.inference.routing``), the served-set file (``service.inference.served_set``) and
the shadow comparison (``service.inference.shadow``), in-process."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from service.http.errors import refusal_response
from service.inference import served_set
from service.inference.dataplane import DataPlane
from service.inference.errors import (
    ModelLoadError,
    NoIntervalsError,
    OverloadedError,
    VersionLoadError,
    VersionNotServedError,
)
from service.inference.model import LinearModel
from service.inference.routing import Split, parse_weights
from service.inference.served_set import ServedSet
from service.inference.shadow import Shadow
from service.inference.versions import PolicyError
from service.observability import context
from service.settings import Settings
from tests.unit.service.test_versions import linear

ROWS = np.array([[10.0, 20.0, 30.0]], dtype=np.float32)


@pytest.fixture
def models(valid_metadata: dict[str, Any], tmp_path: Path) -> dict[str, LinearModel]:
    """Version v<k> predicts k × (temperature, rainfall)."""
    return {f"v{k}": linear(f"crop_yield:v{k}", float(k), valid_metadata, tmp_path) for k in (1, 2, 3)}


def loader(models: dict[str, LinearModel], broken: str | None = None) -> Any:
    async def load(version: str) -> LinearModel:
        if version == broken:
            raise ModelLoadError(f"crop_yield:{version} has no weights")
        return models[version]

    return load


def test_a_change_loads_swaps_and_drains(models: dict[str, LinearModel]) -> None:
    async def scenario() -> None:
        plane = DataPlane(Settings(monitoring=False, max_latency_ms=50))
        plane.load(models["v1"])
        plane.start()
        try:
            dropped = await plane.change(["v2", "v1"], "v1", loader(models), drain_s=1)
            assert (dropped, plane.versions, plane.model_version) == ([], ["v1", "v2"], "v1")
            assert (await plane.predict(ROWS, "predict", version="v2")).outputs.tolist() == [[20.0, 40.0]]
            # a call to v1 in flight (waiting in v1's batcher) while v1 stops being served
            in_flight = asyncio.ensure_future(plane.predict(ROWS, "predict"))
            await asyncio.sleep(0)
            dropped = await plane.change(["v2"], "v2", loader(models), drain_s=1)
            assert (dropped, plane.versions) == (["v1"], ["v2"])
            assert plane.draining == {"v1"}
            finished = await in_flight
            assert (finished.version, finished.outputs.tolist()) == ("v1", [[10.0, 20.0]])
            assert (await plane.predict(ROWS, "predict")).version == "v2"
            with pytest.raises(VersionNotServedError, match="served: 'v2'"):
                await plane.predict(ROWS, "predict", version="v1")
            await asyncio.sleep(0.1)
            assert plane.draining == set()
        finally:
            plane.stop()

    asyncio.run(scenario())


def test_a_failed_load_leaves_the_set_as_it_was(models: dict[str, LinearModel]) -> None:
    async def scenario() -> None:
        plane = DataPlane(Settings(monitoring=False))
        plane.load(models["v1"])
        plane.start()
        try:
            with pytest.raises(VersionLoadError, match="'v3' was not loaded: crop_yield:v3 has no weights"):
                await plane.change(["v3", "v2", "v1"], "v3", loader(models, broken="v3"), drain_s=1)
            assert (plane.versions, plane.model_version) == (["v1"], "v1")
            assert (await plane.predict(ROWS, "predict")).version == "v1"
        finally:
            plane.stop()

    asyncio.run(scenario())


def test_canary_weights_split_by_the_routing_key(models: dict[str, LinearModel]) -> None:
    async def scenario() -> Counter[str]:
        plane = DataPlane(Settings(monitoring=False, batching=False, version_weights="v1=80,v2=20"))
        plane.load(models["v1"], models["v2"])
        plane.start()
        seen: Counter[str] = Counter()
        try:
            for i in range(2000):
                context.ROUTING_KEY.set(f"request-{i}")
                seen[(await plane.predict(ROWS, "predict")).version] += 1
            context.ROUTING_KEY.set("same-key")
            sticky = {(await plane.predict(ROWS, "predict")).version for _ in range(20)}
            assert len(sticky) == 1
            assert (await plane.predict(ROWS, "predict", version="v2")).version == "v2"  # named: no split
        finally:
            plane.stop()
        return seen

    seen = asyncio.run(scenario())
    assert abs(seen["v2"] / 2000 - 0.2) < 0.03, seen


def test_weights_parse_and_leave_out_versions_not_served() -> None:
    assert parse_weights("v1=90, V2=10") == {"v1": 90.0, "v2": 10.0}
    split = Split({"v1": 90, "v2": 10, "gone": 50}, ["v1", "v2"])
    assert split.shares() == pytest.approx({"v1": 0.9, "v2": 0.1}, abs=1e-6)
    assert not Split({"gone": 1}, ["v1"])
    for text, fragment in (
        ("v1", "not VERSION=WEIGHT"),
        ("v1=x", "not a number"),
        ("v1=-1", "0 or more"),
        ("v1=1,v1=2", "twice"),
        ("v1=0", "no version a weight"),
    ):
        with pytest.raises(PolicyError, match=fragment):
            parse_weights(text)


def test_the_served_set_file_round_trips_and_says_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "served.json"
    assert served_set.read(path) is None
    wanted = ServedSet(("v2", "v1"), "v1", {"v3": "broken"})
    with served_set.locked(path):
        digest = served_set.write(path, wanted)
    assert served_set.read(path) == (wanted, digest)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == ["served.json"]
    assert ServedSet.parse(b'{"versions": ["v1"]}', "f").default == "v1"  # a ConfigMap may omit it
    for content, fragment in (
        (b"{", "not JSON"),
        (b"[]", "must hold an object"),
        (b'{"versions": []}', "non-empty list"),
        (b'{"versions": ["v1"], "default": "v2"}', "not among versions"),
        (b'{"versions": ["v1", "v1"]}', "twice"),
        (b'{"versions": ["No Good"]}', "not a model version"),
    ):
        with pytest.raises(PolicyError, match=fragment):
            ServedSet.parse(content, "f")


def test_acknowledgements_count_running_workers_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    served_set.acknowledge("abc")
    (tmp_path / f"{served_set.ACK_PREFIX}999999999").write_text("old")  # no such process
    assert served_set.acknowledgements() == {os.getpid(): "abc"}


def test_the_shadow_compares_off_the_hot_path(models: dict[str, LinearModel]) -> None:
    shadow = Shadow("v2")
    shadow.offer(ROWS, ROWS[:, :2], "v1")
    assert shadow.compare({}) is None  # not served yet: nothing was collected
    served = {"v1": _Served(models["v1"]), "v2": _Served(models["v2"])}
    shadow.compare(served)  # now it is
    answers = models["v1"].predict(np.repeat(ROWS, 3, axis=0))
    shadow.offer(np.repeat(ROWS, 3, axis=0), answers, "v1")
    shadow.offer(ROWS, models["v2"].predict(ROWS), "v2")  # answered by the shadow itself: skipped
    difference = shadow.compare(served)
    assert difference is not None
    assert difference.tolist() == [[10.0, 20.0]] * 3


class _Served:
    def __init__(self, model: LinearModel) -> None:
        self.model = model


def test_a_model_load_error_names_the_version(models: dict[str, LinearModel]) -> None:
    error = VersionLoadError("v9", "no such file")
    assert (str(error), error.version) == ("version 'v9' was not loaded: no such file", "v9")
    assert torch.equal(models["v1"].bias, torch.zeros(2))


def test_a_refusal_names_the_version_it_happened_to(valid_metadata: dict[str, Any], tmp_path: Path) -> None:
    # an entry of schema 1, before interval statistics
    old_style = {**{k: v for k, v in valid_metadata.items() if k != "intervals"}, "schema_version": 1}
    model = linear("crop_yield:old", 1.0, old_style, tmp_path)

    async def refused() -> NoIntervalsError:
        plane = DataPlane(Settings(monitoring=False))
        plane.load(model)
        plane.start()
        try:
            with pytest.raises(NoIntervalsError) as caught:
                await plane.predict(ROWS, "predict", interval=0.9)
            return caught.value
        finally:
            plane.stop()

    error = asyncio.run(refused())
    assert error.version == "old"
    response = refusal_response("/predict", error)
    assert (response.status_code, response.headers["x-model-version"]) == (400, "old")
    assert "x-model-version" not in refusal_response("/predict", OverloadedError("busy")).headers

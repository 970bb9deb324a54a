"""The version policy and the default version (service.inference.versions), and a data plane
serving several versions (service.inference.dataplane), in-process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from service.inference.dataplane import DataPlane
from service.inference.errors import VersionNotServedError
from service.inference.model import LinearModel
from service.inference.store import policy_of
from service.inference.versions import Entry, PolicyError, VersionPolicy, default_of
from service.settings import Settings

STORE = [
    Entry("old", "2026-01-01T00:00:00"),
    Entry("mid", "2026-02-01T00:00:00"),
    Entry("new", "2026-03-01T00:00:00"),
]


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("latest", VersionPolicy("latest")),
        ("latest:3", VersionPolicy("latest", count=3)),
        (" LATEST : 2 ", VersionPolicy("latest", count=2)),
        ("all", VersionPolicy("all")),
        ("specific:v1, V2", VersionPolicy("specific", versions=("v1", "v2"))),
    ],
)
def test_policies_parse(text: str, policy: VersionPolicy) -> None:
    assert VersionPolicy.parse(text) == policy
    assert VersionPolicy.parse(str(policy)) == policy


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("latest:0", "at least 1"),
        ("latest:two", "whole number"),
        ("all:3", "not a version policy"),
        ("newest", "not a version policy"),
        ("specific:", "names no version"),
        ("specific:v1,v1", "twice"),
        ("specific:no good", "not a model version"),
    ],
)
def test_bad_policies_say_why(text: str, fragment: str) -> None:
    with pytest.raises(PolicyError, match=fragment):
        VersionPolicy.parse(text)


def test_selection_newest_first_by_creation_time() -> None:
    assert VersionPolicy("latest").select(STORE) == ["new"]
    assert VersionPolicy("latest", count=2).select(STORE) == ["new", "mid"]
    assert VersionPolicy("latest", count=9).select(STORE) == ["new", "mid", "old"]
    assert VersionPolicy("all").select(STORE) == ["new", "mid", "old"]
    assert VersionPolicy("specific", versions=("old", "new")).select(STORE) == ["new", "old"]
    with pytest.raises(PolicyError, match="gone not in the model store"):
        VersionPolicy("specific", versions=("gone",)).select(STORE)
    with pytest.raises(PolicyError, match="holds no version"):
        VersionPolicy("all").select([])


def test_the_default_is_the_newest_served_unless_pinned() -> None:
    assert default_of(["new", "mid"], None) == "new"
    assert default_of(["new", "mid"], "mid") == "mid"
    with pytest.raises(PolicyError, match="CROP_YIELD_DEFAULT_VERSION='old' is not served"):
        default_of(["new", "mid"], "old")


def test_without_a_policy_a_pinned_tag_serves_its_version_alone() -> None:
    assert policy_of(Settings(model_tag="crop_yield:latest")) == VersionPolicy("latest")
    assert policy_of(Settings(model_tag="crop_yield")) == VersionPolicy("latest")
    assert policy_of(Settings(model_tag="crop_yield:V7")) == VersionPolicy("specific", versions=("v7",))
    assert policy_of(Settings(model_tag="crop_yield:v7", version_policy="all")) == VersionPolicy("all")


def linear(tag: str, scale: float, valid_metadata: dict[str, Any], where: Path) -> LinearModel:
    from safetensors.torch import save_file

    entry = where / tag.replace(":", "-")
    entry.mkdir()
    weight = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]) * scale
    save_file({"weight": weight, "bias": torch.zeros(2)}, str(entry / "model.safetensors"))
    return LinearModel.load(entry, tag, valid_metadata, "2026-01-01T00:00:00", torch.device("cpu"))


def test_a_plane_serves_each_version_its_own_numbers(valid_metadata: dict[str, Any], tmp_path: Path) -> None:
    async def scenario() -> None:
        plane = DataPlane(Settings(monitoring=False))
        plane.load(
            linear("crop_yield:two", 2.0, valid_metadata, tmp_path),
            linear("crop_yield:one", 1.0, valid_metadata, tmp_path),
        )
        plane.start()
        rows = np.array([[10.0, 20.0, 30.0]], dtype=np.float32)
        try:
            assert plane.versions == ["two", "one"]
            assert plane.model_version == "two"
            unnamed, one = (
                await plane.predict(rows, "predict"),
                await plane.predict(rows, "predict", version="one"),
            )
            assert (unnamed.tag, unnamed.outputs.tolist()) == ("crop_yield:two", [[20.0, 40.0]])
            assert (one.tag, one.version, one.outputs.tolist()) == ("crop_yield:one", "one", [[10.0, 20.0]])
            with pytest.raises(
                VersionNotServedError,
                match="'three' of model 'crop_yield' is not served here; served: 'two', 'one'",
            ):
                await plane.predict(rows, "predict", version="three")
        finally:
            plane.stop()

    asyncio.run(scenario())

"""Shared fixtures.

BentoML reads ``BENTOML_HOME`` once, the first time its store is used, so it is pointed
at a temporary folder here, before any test module imports bentoml. Tests that need a
store of their own run the CLI in a subprocess with a fresh ``BENTOML_HOME``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="crop-yield-bentoml-"))
os.environ["BENTOML_HOME"] = str(_SESSION_HOME)
os.environ["BENTOML_DO_NOT_TRACK"] = "true"


TIER_MARKERS = {
    "unit": ("unit",),
    "integration": ("integration",),
    "deploy": ("deploy",),
    "container": ("container", "slow"),
}
"""Markers each test gets from its directory: ``pytest -m unit`` runs milliseconds-fast tests,
``-m "not container"`` everything but the image builds."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        tier = Path(str(item.fspath)).relative_to(here).parts[0]
        for marker in TIER_MARKERS.get(tier, ()):
            item.add_marker(marker)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture
def session_home() -> Path:
    """The BentoML home of this test process, shared by the in-process tests."""
    return _SESSION_HOME


@pytest.fixture
def fresh_home(tmp_path: Path) -> Path:
    """An empty BentoML home for one subprocess run."""
    home = tmp_path / "bentoml"
    home.mkdir()
    return home

"""Fixtures shared by the service's unit tests."""

from __future__ import annotations

from typing import Any

import pytest

from training.pipeline import TrainOptions, train


@pytest.fixture(scope="session")
def valid_metadata() -> dict[str, Any]:
    """What a training run stores (a dry run: nothing saved)."""
    return train(TrainOptions(save=False)).metadata.to_store()

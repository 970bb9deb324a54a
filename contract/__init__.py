"""The model-store contract shared by ``training`` (writer) and ``service`` (reader).

Neither package imports the other; both import this small module. It names the
model, the weights file inside a store entry, the feature and target columns with
their units and physical bounds, and the version of the metadata layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__version__ = "0.1.0"
"""Version of the project (service and training); pyproject.toml reads it from here."""

MODEL_NAME = "crop_yield"
"""Default BentoML model-store name; entries are tagged ``crop_yield:<version>``."""

WEIGHTS_FILE = "model.safetensors"
"""File inside a store entry holding the Linear's state dict: ``weight`` (targets×features), ``bias``."""


def store_home() -> Path:
    """The model store's home: ``$BENTOML_HOME``, else ``~/bentoml`` (BentoML's default).

    Entries live in ``<home>/models/<name>/<version>/``.
    """
    return Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml").expanduser()


SAVE_LOCK_FILE = ".crop-yield-save.lock"
"""Lock file in ``<home>/models/``: training holds it exclusively while it saves an entry, the
service shared while it lists the store, so a listing never sees an entry half-written."""


METADATA_SCHEMA_VERSION = 4
"""Bumped whenever the metadata layout written by ``training`` changes (2: ``intervals``;
3: ``lineage``; 4: ``reference``, the training distribution drift is measured against)."""


@dataclass(frozen=True)
class Column:
    """One named quantity of the model: an input feature or a predicted target."""

    name: str
    unit: str
    description: str
    minimum: float | None = None
    """Physical lower bound (inclusive), or None when unbounded."""
    maximum: float | None = None
    """Physical upper bound (inclusive), or None when unbounded."""


# Units follow the origin tutorial (seed 004): average temperature in °F, rainfall in mm,
# relative humidity in %, yields in tonnes per hectare.
FEATURES: tuple[Column, ...] = (
    Column("temperature", "°F", "Average temperature of the region", -60.0, 140.0),
    Column("rainfall", "mm", "Rainfall in the region", 0.0, 10_000.0),
    Column("humidity", "%", "Average relative humidity of the region", 0.0, 100.0),
)
TARGETS: tuple[Column, ...] = (
    Column("apples", "t/ha", "Predicted apple yield in tonnes per hectare"),
    Column("oranges", "t/ha", "Predicted orange yield in tonnes per hectare"),
)

FEATURE_NAMES: tuple[str, ...] = tuple(c.name for c in FEATURES)
TARGET_NAMES: tuple[str, ...] = tuple(c.name for c in TARGETS)


def weight_shapes() -> dict[str, tuple[int, ...]]:
    """The tensors ``WEIGHTS_FILE`` holds, by name, with their shapes."""
    return {"weight": (len(TARGETS), len(FEATURES)), "bias": (len(TARGETS),)}


class WeightsFileError(ValueError):
    """A store entry's ``WEIGHTS_FILE`` is missing, unreadable, truncated or of another shape."""


def check_weights_file(entry: Path, tag: str) -> None:
    """Read the header of ``entry``'s weights file (no torch; safetensors checks the file
    covers every tensor it lists) and the tensors' names and shapes; ``WeightsFileError``."""
    from safetensors import SafetensorError, safe_open

    path = entry / WEIGHTS_FILE
    if not path.is_file():
        raise WeightsFileError(f"model {tag} has no {WEIGHTS_FILE} (not a crop-yield model entry?)")
    try:
        with safe_open(str(path), framework="np") as weights:
            got = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise WeightsFileError(f"model {tag}: {WEIGHTS_FILE} cannot be read: {exc}") from None
    if got != weight_shapes():
        raise WeightsFileError(f"model {tag}: {WEIGHTS_FILE} holds {got}, expected {weight_shapes()}")

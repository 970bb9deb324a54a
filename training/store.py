"""Writing a fitted model to the BentoML model store (the writer's half of ``contract``).

The entry is built in BentoML's temporary folder and copied into the store only when
the ``bentoml.models.create`` block ends without an exception, so a failure at any
step below (including the read-back check) leaves no entry and ``latest`` unchanged.
Saves to one store are serialized by a lock file, so two runs asking for the same
explicit version cannot both pass the "does it exist" check.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from contract import SAVE_LOCK_FILE, WEIGHTS_FILE, store_home


class StoreError(RuntimeError):
    """The model could not be saved; the store is unchanged."""


class InvalidTagError(ValueError):
    """The model name or version is not a valid BentoML tag."""


def parse_tag(name: str, version: str | None) -> Any:
    """The ``bentoml.Tag`` for name[:version], or :class:`InvalidTagError` saying why not."""
    import bentoml

    try:
        return bentoml.Tag(name, version)
    except ValueError as exc:
        shown = name if version is None else f"{name}:{version}"
        raise InvalidTagError(f"invalid model tag {shown!r}: {exc}") from None


def check_new_tag(name: str, version: str | None) -> None:
    """Refuse before any fitting: a malformed tag, or an explicit version that exists."""
    import bentoml
    from bentoml.exceptions import NotFound

    tag = parse_tag(name, version)
    if version is not None:
        try:
            bentoml.models.get(tag)
        except NotFound:
            return
        raise StoreError(f"model {tag} already exists; tags are never overwritten")


@contextmanager
def _store_lock() -> Iterator[None]:
    models = store_home() / "models"
    models.mkdir(parents=True, exist_ok=True)
    with (models / SAVE_LOCK_FILE).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def save_model(
    model: nn.Linear,
    name: str,
    version: str | None,
    labels: dict[str, str],
    metadata: dict[str, Any],
    probe: torch.Tensor,
) -> str:
    """Save ``model``'s state dict as safetensors under a new tag and return the tag.

    ``probe`` is a batch of raw inputs: the saved weights are read back and must give
    the same predictions on it, or nothing is saved.
    """
    import bentoml  # heavy import, needed only once a fit has passed its checks
    from bentoml.exceptions import BentoMLException

    try:
        tag = parse_tag(name, version)
    except InvalidTagError as exc:
        raise StoreError(str(exc)) from None
    try:
        with _store_lock(), bentoml.models.create(tag, labels=labels, metadata=metadata) as ref:
            check_new_tag(name, version)
            path = Path(ref.path) / WEIGHTS_FILE
            state = {
                k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()
            }
            save_file(state, str(path))
            _check_round_trip(path, model, probe)
    except (BentoMLException, OSError, ValueError) as exc:
        raise StoreError(f"could not save model {tag}: {exc}") from exc
    return str(ref.tag)


def latest_tag(name: str) -> str | None:
    """The tag ``name:latest`` resolves to, or None when the store has no such model."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        return str(bentoml.models.get(parse_tag(name, "latest")).tag)
    except NotFound:
        return None


def _check_round_trip(path: Path, model: nn.Linear, probe: torch.Tensor) -> None:
    loaded = load_file(str(path))
    with torch.no_grad():
        expected = model(probe.to(model.weight.dtype)).to(torch.float32)
    got = probe.to(torch.float32) @ loaded["weight"].T + loaded["bias"]
    if not torch.allclose(got, expected, rtol=1e-5, atol=1e-4):
        raise ValueError(f"{WEIGHTS_FILE} read back gives different predictions")

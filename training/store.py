"""Writing a fitted model to the BentoML model store (the writer's half of ``contract``).

The entry is built in BentoML's temporary folder and moved into the store only when
the ``bentoml.models.create`` block ends without an exception, so a failure at any
step below (including the read-back check) leaves no entry and ``latest`` unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from contract import WEIGHTS_FILE


class StoreError(RuntimeError):
    """The model could not be saved; the store is unchanged."""


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
    from bentoml.exceptions import BentoMLException, NotFound

    try:
        tag = bentoml.Tag(name, version)
    except ValueError as exc:
        raise StoreError(f"invalid model tag {name}:{version}: {exc}") from None
    if version is not None:
        try:
            bentoml.models.get(tag)
        except NotFound:
            pass
        else:
            raise StoreError(f"model {tag} already exists; tags are never overwritten")
    try:
        with bentoml.models.create(tag, labels=labels, metadata=metadata) as ref:
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
        return str(bentoml.models.get(f"{name}:latest").tag)
    except NotFound:
        return None


def _check_round_trip(path: Path, model: nn.Linear, probe: torch.Tensor) -> None:
    loaded = load_file(str(path))
    with torch.no_grad():
        expected = model(probe.to(model.weight.dtype)).to(torch.float32)
    got = probe.to(torch.float32) @ loaded["weight"].T + loaded["bias"]
    if not torch.allclose(got, expected, rtol=1e-5, atol=1e-4):
        raise ValueError(f"{WEIGHTS_FILE} read back gives different predictions")

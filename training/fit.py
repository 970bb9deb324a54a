"""The fitting core: minibatch SGD of a ``torch.nn.Linear`` over a ``DataLoader``.

It works for any number of feature and target columns. By default the optimisation is
preconditioned: inputs are whitened (centred, decorrelated, unit variance) and targets
standardized, so the least-squares problem SGD sees is perfectly conditioned whatever the
columns' scales and correlations (nearly collinear inputs would otherwise need millions
of steps). The transform is folded back into the Linear, so the returned module takes raw
inputs and returns raw outputs.

The rate is halved whenever the distance to the optimum stops shrinking (SGD noise), and
the fit stops on the full-data gradient: its Newton decrement ``g^T H^-1 g / 2`` is, for a
squared-error loss, exactly how far the loss is above its minimum. So the stopping rule
measures the distance to the optimum instead of guessing it from a noisy plateau.

With ``standardize=False``, ``adapt_lr=False`` and ``early_stop=False`` it is plain SGD,
which is how the tests replay the seed tutorials step for step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler, TensorDataset
from tqdm import tqdm

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class FitDivergedError(RuntimeError):
    """SGD blew up: the loss became non-finite or grew far beyond where it started."""


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 2000
    """Upper bound on passes over the data; the stopping rule usually ends sooner."""
    batch_size: int | None = None
    """Rows per SGD step; None means full batch."""
    lr: float = 0.1
    standardize: bool = True
    """Whiten inputs and standardize targets for the optimisation (see the module docstring)."""
    seed: int = 0
    adapt_lr: bool = True
    """Halve the learning rate when the distance to the optimum stops shrinking: minibatch
    SGD otherwise hovers at a noise floor proportional to the rate."""
    patience: int = 3
    """Epochs without the distance shrinking by a tenth before the rate is halved."""
    early_stop: bool = True
    """Stop once the loss is within ``gap_tol`` of its minimum (by the full-data gradient),
    or when the rate has been halved ``max_halvings`` times without getting there."""
    gap_tol: float = 1e-6
    """Relative distance of the loss from its minimum at which the fit stops."""
    max_halvings: int = 12
    divergence_factor: float = 1e3
    """A full-data loss this many times the initial one counts as divergence."""
    loss_fn: LossFn = field(default=F.mse_loss)
    progress: bool = False


@dataclass
class FitResult:
    model: nn.Linear
    """Fitted on raw scale: ``model(x_raw) ≈ y_raw``."""
    losses: list[float]
    """Full-data loss after each epoch, in the scale that was optimised."""
    epochs_run: int
    converged: bool
    """True when the stopping rule found the loss within ``gap_tol`` of its minimum."""
    excess: float = math.nan
    """Last full-data estimate of (loss - minimum) / minimum (NaN when not measured)."""


@dataclass(frozen=True)
class Preconditioner:
    """``z = (x - x_mean) @ whiten`` for inputs and ``(y - y_mean) / y_scale`` for targets,
    in float64; the identity when disabled."""

    x_mean: torch.Tensor
    whiten: torch.Tensor
    """features × features; columns of near-zero variance directions are zero."""
    y_mean: torch.Tensor
    y_scale: torch.Tensor

    RCOND = 1e-10
    """Directions of the inputs' correlation matrix with eigenvalues below this share of
    the largest carry no information (constant or duplicated columns) and are dropped."""

    @classmethod
    def fit(cls, features: torch.Tensor, targets: torch.Tensor, enabled: bool) -> Preconditioner:
        x, y = features.double(), targets.double()
        d, t = x.shape[1], y.shape[1]
        if not enabled:
            zeros, ones = torch.zeros, torch.ones
            return cls(
                zeros(d, dtype=x.dtype),
                torch.eye(d, dtype=x.dtype),
                zeros(t, dtype=y.dtype),
                ones(t, dtype=y.dtype),
            )
        x_mean = x.mean(dim=0)
        x_std = _nonzero(x.std(dim=0, unbiased=False))
        standardized = (x - x_mean) / x_std
        eigenvalues, vectors = torch.linalg.eigh(standardized.T @ standardized / x.shape[0])
        keep = eigenvalues > cls.RCOND * eigenvalues.max().clamp_min(1e-300)
        inverse_root = torch.where(keep, eigenvalues.clamp_min(1e-300).rsqrt(), torch.zeros_like(eigenvalues))
        whiten = (vectors * inverse_root) @ vectors.T / x_std[:, None]
        return cls(x_mean, whiten, y.mean(dim=0), _nonzero(y.std(dim=0, unbiased=False)))

    def inputs(self, features: torch.Tensor) -> torch.Tensor:
        return (features.double() - self.x_mean) @ self.whiten

    def targets(self, targets: torch.Tensor) -> torch.Tensor:
        return (targets.double() - self.y_mean) / self.y_scale

    def fold(self, model: nn.Linear) -> nn.Linear:
        """The raw-scale Linear equal to ``model`` applied after this transform."""
        weight = model.weight.double() @ self.whiten.T
        bias = model.bias.double() - weight @ self.x_mean
        raw = nn.Linear(model.in_features, model.out_features, dtype=model.weight.dtype)
        with torch.no_grad():
            raw.weight.copy_(weight * self.y_scale[:, None])
            raw.bias.copy_(bias * self.y_scale + self.y_mean)
        raw.requires_grad_(False)
        return raw


def _nonzero(scale: torch.Tensor) -> torch.Tensor:
    """A constant column keeps unit scale instead of dividing by zero."""
    return torch.where(scale > 0, scale, torch.ones_like(scale))


class Decrement:
    """Full-data MSE and its Newton decrement, in float64: for least squares the decrement
    ``g^T H^-1 g / 2`` equals the loss minus its minimum, whatever the conditioning."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.design = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
        self.y = y
        self.gram_pinv = torch.linalg.pinv(self.design.T @ self.design, hermitian=True)
        self.floor = 1e-9 * float(y.var(dim=0, unbiased=False).mean()) or 1e-30

    def __call__(self, model: nn.Linear) -> tuple[float, float]:
        """(loss above its minimum, the same relative to that minimum, floored like the gate)."""
        with torch.no_grad():
            params = torch.cat([model.weight.double(), model.bias.double()[:, None]], dim=1)
            residual = self.design @ params.T - self.y
            gradient = self.design.T @ residual  # up to the factor 2/(n·targets), cancelled below
            excess = float((gradient * (self.gram_pinv @ gradient)).sum()) / residual.numel()
            loss = float(residual.square().mean())
        return excess, excess / max(loss - excess, self.floor)


def fit_linear(
    features: torch.Tensor,
    targets: torch.Tensor,
    config: FitConfig,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> FitResult:
    """Fit ``nn.Linear(features.shape[1], targets.shape[1])`` by minibatch SGD.

    ``init`` optionally gives the starting (weight, bias) in the optimised scale; by
    default the Linear keeps torch's seeded initialisation.
    Raises :class:`FitDivergedError` when the loss blows up.
    """
    torch.manual_seed(config.seed)
    dtype = features.dtype
    precondition = Preconditioner.fit(features, targets, config.standardize)
    if config.standardize:
        x64, y64 = precondition.inputs(features), precondition.targets(targets)
        x, y = x64.to(dtype), y64.to(dtype)
    else:  # plain SGD on the given tensors, bit for bit (the seed replays)
        x, y = features, targets
        x64, y64 = features.double(), targets.double()
    measure = Decrement(x64, y64) if config.adapt_lr or config.early_stop else None

    model = nn.Linear(x.shape[1], y.shape[1], dtype=dtype)
    if init is not None:
        with torch.no_grad():
            model.weight.copy_(init[0].reshape(model.weight.shape))
            model.bias.copy_(init[1].reshape(model.bias.shape))

    loader = _loader(x, y, config.batch_size or x.shape[0], config.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    halvings = 0

    def full_loss() -> float:
        with torch.no_grad():
            return float(config.loss_fn(model(x), y))

    start = full_loss()
    best, stale = math.inf, 0
    losses: list[float] = []
    converged, excess = False, math.nan
    epochs = tqdm(range(config.epochs), desc="fit", unit="epoch", disable=not config.progress, leave=False)
    for epoch in epochs:
        for xb, yb in loader:
            optimizer.zero_grad()
            config.loss_fn(model(xb), yb).backward()  # type: ignore[no-untyped-call]
            optimizer.step()
        loss = full_loss()
        losses.append(loss)
        if not math.isfinite(loss) or loss > config.divergence_factor * max(start, 1e-30):
            raise FitDivergedError(
                f"the loss diverged at epoch {epoch + 1} ({start:.4g} -> {loss:.4g}); "
                "lower the learning rate (--lr) or leave out --no-standardize"
            )
        if measure is None:
            continue
        distance, excess = measure(model)
        epochs.set_postfix(
            loss=f"{loss:.6g}", gap=f"{excess:.2g}", lr=f"{optimizer.param_groups[0]['lr']:.3g}"
        )
        if config.early_stop and excess <= config.gap_tol:
            converged = True
            break
        if distance < 0.9 * best:
            best, stale = distance, 0
            continue
        stale += 1
        if config.adapt_lr and stale >= config.patience:
            stale, best = 0, distance
            halvings += 1
            for group in optimizer.param_groups:
                group["lr"] *= 0.5
            if config.early_stop and halvings >= config.max_halvings:
                break  # the rate is too small to get closer: float32 resolution or noise
    epochs.close()
    if losses and losses[-1] > start:
        raise FitDivergedError(
            f"the loss grew from {start:.4g} to {losses[-1]:.4g} over {len(losses)} epochs; "
            "lower the learning rate (--lr) or leave out --no-standardize"
        )
    return FitResult(precondition.fold(model), losses, len(losses), converged, excess)


class ShuffledBatches(Sampler[torch.Tensor]):
    """Each pass: a fresh random permutation, cut into index tensors of ``batch_size``.

    Used as the DataLoader's sampler with ``batch_size=None``, so TensorDataset gathers a
    whole batch with one tensor index: the same shuffled minibatches as
    ``DataLoader(ds, batch_size, shuffle=True)`` without one Python call per row and a
    collate per batch (about 30x faster per epoch on a million rows).
    """

    def __init__(self, rows: int, batch_size: int, generator: torch.Generator) -> None:
        self.rows, self.batch_size, self.generator = rows, batch_size, generator

    def __len__(self) -> int:
        return math.ceil(self.rows / self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        order = torch.randperm(self.rows, generator=self.generator)
        return iter(torch.split(order, self.batch_size))


def _loader(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int
) -> DataLoader[tuple[torch.Tensor, ...]]:
    sampler = ShuffledBatches(x.shape[0], batch_size, torch.Generator().manual_seed(seed))
    return DataLoader(TensorDataset(x, y), sampler=sampler, batch_size=None)

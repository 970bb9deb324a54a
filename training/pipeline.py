"""The training run: data → fit → reference check → metrics → (plots) → model store.

Each step that can refuse raises a typed error before the store is touched; the CLI
turns those into messages and exit codes.
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contract import (
    FEATURE_NAMES,
    FEATURES,
    METADATA_SCHEMA_VERSION,
    MODEL_NAME,
    TARGET_NAMES,
    TARGETS,
    WEIGHTS_FILE,
)
from contract.metadata import (
    DataSummary,
    FeatureSummary,
    FitSummary,
    Hyperparameters,
    IntervalBasis,
    ModelMetadata,
    TargetMetrics,
    TargetSummary,
)
from training import data as data_mod
from training.evaluation import (
    interval_statistics,
    least_squares,
    mse,
    optimality_gap,
    per_target_metrics,
    split_holdout,
)
from training.fit import FitConfig, FitResult, fit_linear

MIN_ROWS_FOR_HOLDOUT = 50
MAX_AUTO_BATCH = 4096


class QualityGateError(RuntimeError):
    """The fit is further from the least-squares optimum than allowed."""


@dataclass(frozen=True)
class TrainOptions:
    data: Path | None = None
    """CSV to train on; None means the built-in seed-004 dataset."""
    epochs: int = FitConfig.epochs
    batch_size: int | None = None
    """None: full batch up to 4096 training rows, 4096-row minibatches above."""
    lr: float = FitConfig.lr
    seed: int = 0
    standardize: bool = True
    max_gap: float = 1e-4
    holdout_fraction: float = 0.2
    model_name: str = MODEL_NAME
    version: str | None = None
    plots: Path | None = None
    save: bool = True
    progress: bool = False


@dataclass
class TrainOutcome:
    tag: str | None
    """The new store tag, or None when saving was not asked for."""
    fit: FitResult
    metadata: ModelMetadata
    plot_files: list[Path]


def auto_batch_size(rows: int) -> int:
    """Full batch for small data (no SGD noise at all); minibatches keep large data fast,
    and the rate halving takes their noise out."""
    return max(1, min(MAX_AUTO_BATCH, rows))


def gate_hints(options: TrainOptions, result: FitResult, rows: int) -> str:
    """What would help a fit that missed the gate, from the options the user changed."""
    defaults = TrainOptions()
    hints = []
    if not options.standardize:
        hints.append("leave out --no-standardize (raw columns make the problem ill-conditioned for SGD)")
    if options.batch_size is not None and options.batch_size < min(rows, MAX_AUTO_BATCH):
        hints.append(
            f"a larger --batch-size, or none (the default is full batch up to {MAX_AUTO_BATCH} rows): "
            f"batches of {options.batch_size} leave SGD noise"
        )
    if options.lr != defaults.lr:
        hints.append(f"the default --lr {defaults.lr:g}")
    if not result.converged and result.epochs_run >= options.epochs:
        hints.append(f"more --epochs (all {options.epochs} ran)")
    if options.max_gap < 1e-6:
        hints.append("a --max-gap of at least 1e-6 (float32 weights cannot get much closer)")
    if not hints:
        return "the default options should reach the optimum on any data: please report this data set"
    return "try " + "; ".join(hints)


def train(options: TrainOptions) -> TrainOutcome:
    feature_names, target_names = FEATURE_NAMES, TARGET_NAMES
    if options.data is None:
        dataset = data_mod.load_builtin(feature_names, target_names)
    else:
        dataset = data_mod.load_csv(options.data, feature_names, target_names)

    train_idx, holdout_idx = split_holdout(
        dataset.rows, options.holdout_fraction, MIN_ROWS_FOR_HOLDOUT, options.seed
    )
    x_train, y_train = dataset.features[train_idx], dataset.targets[train_idx]
    batch_size = options.batch_size or auto_batch_size(len(train_idx))
    config = FitConfig(
        epochs=options.epochs,
        batch_size=batch_size,
        lr=options.lr,
        standardize=options.standardize,
        seed=options.seed,
        gap_tol=min(FitConfig.gap_tol, options.max_gap / 10),
        progress=options.progress,
    )
    started = time.perf_counter()
    result = fit_linear(
        torch.as_tensor(x_train, dtype=torch.float32),
        torch.as_tensor(y_train, dtype=torch.float32),
        config,
    )
    fit_seconds = time.perf_counter() - started

    reference = least_squares(x_train, y_train)
    optimal_mse = mse(reference.predict(x_train), y_train)
    train_pred = _predict(result, x_train)
    fit_mse = mse(train_pred, y_train)
    gap = optimality_gap(fit_mse, optimal_mse, y_train)
    if not gap <= options.max_gap:
        raise QualityGateError(
            f"the fit's MSE {fit_mse:.6g} is {gap:.3g} above the least-squares optimum "
            f"{optimal_mse:.6g} (relative), more than --max-gap {options.max_gap:g}; "
            f"{gate_hints(options, result, len(train_idx))}. Nothing was saved."
        )

    metrics: dict[str, Any] = {"train": per_target_metrics(train_pred, y_train, target_names)}
    if holdout_idx is not None:
        x_hold, y_hold = dataset.features[holdout_idx], dataset.targets[holdout_idx]
        metrics["holdout"] = per_target_metrics(_predict(result, x_hold), y_hold, target_names)

    plot_files: list[Path] = []
    if options.plots is not None:
        from training.plots import write_plots

        plot_files = write_plots(
            options.plots, result.losses, train_pred, y_train, target_names, [c.unit for c in TARGETS]
        )

    metadata = ModelMetadata(
        schema_version=METADATA_SCHEMA_VERSION,
        weights_file=WEIGHTS_FILE,
        features=[
            FeatureSummary(
                name=c.name,
                unit=c.unit,
                description=c.description,
                train_min=float(dataset.features[:, j].min()),
                train_max=float(dataset.features[:, j].max()),
            )
            for j, c in enumerate(FEATURES)
        ],
        targets=[TargetSummary(name=c.name, unit=c.unit, description=c.description) for c in TARGETS],
        metrics={
            split: {name: TargetMetrics(**values) for name, values in per_target.items()}
            for split, per_target in metrics.items()
        },
        fit=FitSummary(
            mse=fit_mse,
            optimal_mse=optimal_mse,
            optimality_gap=gap,
            epochs_run=result.epochs_run,
            converged=result.converged,
            final_loss=result.losses[-1],
            seconds=fit_seconds,
        ),
        data=DataSummary(
            source=dataset.source,
            sha256=dataset.sha256,
            rows=dataset.rows,
            train_rows=len(train_idx),
            holdout_rows=0 if holdout_idx is None else len(holdout_idx),
        ),
        hyperparameters=Hyperparameters(
            **{k: v for k, v in asdict(options).items() if k in _HYPERPARAMETERS}, batch_size=batch_size
        ),
        seed=options.seed,
        versions=_versions(),
        intervals=_interval_basis(x_train, y_train, train_pred),
    )

    tag = None
    if options.save:
        from training.store import save_model

        tag = save_model(
            result.model,
            options.model_name,
            options.version,
            labels={"task": "crop-yield-regression", "framework": "pytorch", "format": "safetensors"},
            metadata=metadata.to_store(),
            probe=torch.as_tensor(dataset.features[:64], dtype=torch.float32),
        )
    return TrainOutcome(tag, result, metadata, plot_files)


_HYPERPARAMETERS = ("epochs", "lr", "standardize", "max_gap", "holdout_fraction")


def _predict(result: FitResult, features: np.ndarray) -> np.ndarray:
    """Predictions of the fitted weights computed in float64.

    float32 arithmetic would add rounding noise of about 1e-6 relative to the MSE, the
    same order as the gaps being judged (it even made gaps come out negative).
    """
    weight = result.model.weight.detach().double().numpy()
    bias = result.model.bias.detach().double().numpy()
    out: np.ndarray = features @ weight.T + bias
    return out


def _interval_basis(features: np.ndarray, targets: np.ndarray, predictions: np.ndarray) -> IntervalBasis:
    stats = interval_statistics(features, targets, predictions)
    return IntervalBasis(
        rows=stats.rows,
        dof=stats.dof,
        residual_variance=dict(zip(TARGET_NAMES, map(float, stats.residual_variance), strict=True)),
        xtx_inverse=stats.xtx_inverse.tolist(),
    )


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("torch", "bentoml", "safetensors", "numpy"):
        try:
            versions[package] = pkg_metadata.version(package)
        except pkg_metadata.PackageNotFoundError:  # pragma: no cover - all are dependencies
            versions[package] = "unknown"
    versions["platform"] = sys.platform
    return versions

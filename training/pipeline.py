"""The training run: data → fit → reference check → metrics → (comparison with a champion)
→ (plots) → model store.

Each step that can refuse raises a typed error before the store is touched; the CLI
turns those into messages and exit codes.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
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
    __version__,
)
from contract.metadata import (
    Comparison,
    DataSummary,
    FeatureSummary,
    FitSummary,
    Hyperparameters,
    IntervalBasis,
    Lineage,
    ModelMetadata,
    Reference,
    TargetMetrics,
    TargetSummary,
)
from training import compare as compare_mod
from training import data as data_mod
from training.champion import Champion, resolve
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
    compare_with: str | None = None
    """A model-store tag or a service URL to compare the new fit with (the champion)."""
    max_regression: float = 0.05
    force: bool = False
    """Save even when the new fit is worse than the champion (recorded in the lineage)."""
    token: str | None = field(default=None, repr=False)
    """Bearer token for a champion service."""


@dataclass
class TrainOutcome:
    tag: str | None
    """The new store tag, or None when saving was not asked for."""
    fit: FitResult
    metadata: ModelMetadata
    plot_files: list[Path]
    comparison: Comparison | None = None


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
    """Fit, judge and save; ``ChampionError`` / ``ChallengerWorseError`` with ``compare_with``."""
    feature_names, target_names = FEATURE_NAMES, TARGET_NAMES
    champion = None
    if options.compare_with is not None:  # before the fit: a wrong tag or URL fails at once
        champion = resolve(options.compare_with, options.token)
    if options.data is None:
        dataset = data_mod.load_builtin(feature_names, target_names)
    else:
        dataset = data_mod.load_csv(options.data, feature_names, target_names)

    plan, train_idx, holdout_idx = _plan(options, champion, dataset)
    x_train, y_train = dataset.features[train_idx], dataset.targets[train_idx]
    batch_size = options.batch_size or auto_batch_size(len(train_idx))
    started = time.perf_counter()
    result = _fit(options, x_train, y_train, options.progress)
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
    basis = _interval_basis(x_train, y_train, train_pred)

    comparison = None
    if champion is not None and plan is not None:
        comparison = _judge(options, champion, plan, dataset, result, basis, holdout_idx, metrics)

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
        intervals=basis,
        lineage=Lineage(
            data="builtin" if options.data is None else str(options.data),
            sha256=dataset.sha256,
            fit_rows=len(train_idx),
            holdout_rows=0 if holdout_idx is None else len(holdout_idx),
            folds=None if plan is None else plan.folds,
            compared_with=None if champion is None else champion.tag,
            comparison=comparison,
            forced=comparison is not None and comparison.worse and options.force,
            project_version=__version__,
        ),
        reference=Reference.of(x_train, train_pred),  # drift baseline: the rows the model was fitted on
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
    return TrainOutcome(tag, result, metadata, plot_files, comparison)


_HYPERPARAMETERS = ("epochs", "lr", "standardize", "max_gap", "holdout_fraction")


def _plan(
    options: TrainOptions, champion: Champion | None, dataset: data_mod.Dataset
) -> tuple[compare_mod.EvaluationPlan | None, np.ndarray, np.ndarray | None]:
    """How the fit is evaluated (None: no comparison) and its (train, holdout) row indices.

    Against a champion trained on this same data file, both are scored like for like: on
    every row when it was fitted on every row (in-sample, the saved model fitted on every
    row too), or on the rows it held out when this run's split holds out the same rows.
    Otherwise the challenger is evaluated out-of-sample (``compare.evaluation_plan``).
    """
    split = split_holdout(dataset.rows, options.holdout_fraction, MIN_ROWS_FOR_HOLDOUT, options.seed)
    if champion is None:
        return None, *split
    seen = champion.trained_on if champion.data_sha256 == dataset.sha256 else None
    if seen is not None and seen.rows == dataset.rows:
        if seen.fit_rows == dataset.rows:
            return compare_mod.IN_SAMPLE_SAME_DATA, np.arange(dataset.rows), None
        same_split = (seen.seed, seen.holdout_fraction) == (options.seed, options.holdout_fraction)
        if same_split and split[1] is not None and len(split[0]) == seen.fit_rows:
            return compare_mod.HOLDOUT_SAME_DATA, *split
    plan = compare_mod.evaluation_plan(dataset.rows, options.holdout_fraction)
    _check_folds(dataset, plan)
    if plan.folds is not None:  # cross-validated, then fitted on every row
        return plan, np.arange(dataset.rows), None
    return plan, *split


def _judge(
    options: TrainOptions,
    champion: Champion,
    plan: compare_mod.EvaluationPlan,
    dataset: data_mod.Dataset,
    result: FitResult,
    basis: IntervalBasis,
    holdout_idx: np.ndarray | None,
    metrics: dict[str, Any],
) -> Comparison:
    """The new fit against the champion on the rows ``plan`` says (adding the out-of-fold
    metrics to ``metrics``); ``ChallengerWorseError`` unless it holds up or ``options.force``."""
    if plan.folds is not None:
        x_eval, y_eval = dataset.features, dataset.targets
        folds = compare_mod.kfold_indices(dataset.rows, plan.folds, options.seed)
        challenger = compare_mod.out_of_fold(x_eval, y_eval, folds, lambda x, y: _fold_fit(options, x, y))
        metrics["cross_validation"] = per_target_metrics(challenger.values, y_eval, TARGET_NAMES)
    else:
        if plan.evaluation == "in_sample_same_data":  # the saved model, fitted on every row
            x_eval, y_eval = dataset.features, dataset.targets
        else:
            assert holdout_idx is not None  # the plan holds out only when split_holdout does
            x_eval, y_eval = dataset.features[holdout_idx], dataset.targets[holdout_idx]
        challenger = compare_mod.with_bounds(  # the saved model's own intervals
            _predict(result, x_eval),
            x_eval,
            np.asarray(basis.xtx_inverse),
            np.array([basis.residual_variance[t] for t in TARGET_NAMES]),
            basis.dof,
        )
    comparison = compare_mod.compare(
        challenger,
        champion.predict(x_eval),
        y_eval,
        TARGET_NAMES,
        plan=plan,
        champion_source=champion.source,
        max_regression=options.max_regression,
        same_data=champion.data_sha256 == dataset.sha256,
    )
    if comparison.worse and not options.force:
        raise compare_mod.ChallengerWorseError(
            comparison,
            champion.tag,
            plan.folds,
            f"{compare_mod.verdict(comparison, champion.tag)}. Nothing was saved; --force saves it anyway.",
        )
    return comparison


def _fit(options: TrainOptions, x: np.ndarray, y: np.ndarray, progress: bool) -> FitResult:
    config = FitConfig(
        epochs=options.epochs,
        batch_size=options.batch_size or auto_batch_size(len(x)),
        lr=options.lr,
        standardize=options.standardize,
        seed=options.seed,
        gap_tol=min(FitConfig.gap_tol, options.max_gap / 10),
        progress=progress,
    )
    return fit_linear(
        torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32), config
    )


def _fold_fit(options: TrainOptions, x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A cross-validation fit: the same options as the saved fit, on the other folds' rows."""
    result = _fit(options, x, y, progress=False)
    return lambda rows: _predict(result, rows)


def _check_folds(dataset: data_mod.Dataset, plan: compare_mod.EvaluationPlan) -> None:
    """Each cross-validation fit needs the rows of a fit with one residual degree of freedom."""
    if plan.folds is None:
        return
    smallest = dataset.rows - -(-dataset.rows // plan.folds)
    needed = data_mod.min_rows(dataset.features.shape[1])
    if smallest < needed:
        raise data_mod.DataError(
            f"{dataset.source}: {dataset.rows} rows are too few to compare models by cross-validation "
            f"(each fit needs {needed}); --compare-with needs at least {needed + 1} rows"
        )


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

"""``python -m training``: fit the crop-yield model and save it to the BentoML model store.

The new tag is the only thing written to stdout (``TAG=$(python -m training)``); the
report, progress bar and errors go to stderr.

Exit codes: 0 saved (or fitted, with --dry-run); 2 bad arguments or bad data, or a
--compare-with model that cannot be compared (unknown tag, other columns, a service that
does not answer or answers errors); 3 the fit diverged or missed the quality gate; 4 the
model store refused the save; 5 the new fit is worse than the --compare-with model by more
than --max-regression (with --dry-run too: it would be refused), so nothing was saved.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from contract import MODEL_NAME
from training.data import DataError
from training.fit import FitDivergedError
from training.pipeline import MAX_AUTO_BATCH, QualityGateError, TrainOptions, TrainOutcome, train

EXIT_BAD_INPUT = 2
EXIT_FIT_FAILED = 3
EXIT_STORE_FAILED = 4
EXIT_WORSE = 5
TOKEN_ENV = "CROP_YIELD_AUTH_TOKEN"
"""The service's own setting: a script that serves and trains can use one variable."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 0.5:
        raise argparse.ArgumentTypeError(f"must be between 0 and 0.5, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainOptions()
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description=(
            "Fit the crop-yield model (nn.Linear: temperature, rainfall, humidity -> apples, "
            "oranges) by minibatch SGD, check it against the least-squares optimum and save "
            "it to the BentoML model store ($BENTOML_HOME). Prints the new tag on stdout."
        ),
        epilog=(
            "How the defaults are chosen: the inputs are whitened and the targets standardized for "
            "the optimisation (so column scales and correlations do not matter), batches are the "
            f"whole training set up to {MAX_AUTO_BATCH} rows and {MAX_AUTO_BATCH}-row minibatches "
            "above, the rate is halved whenever SGD noise stops the fit getting closer, and the fit "
            "stops when the full-data gradient shows the loss within 1e-6 (relative) of its "
            "least-squares minimum (or at --epochs). "
            "--compare-with judges the new fit (the challenger) against an existing model (the "
            "champion), both scored alike on the same rows: a model scored on rows it was trained "
            "on looks better than on rows it was not (the default fit of the built-in 15 rows: "
            "+79% and +98% MSE leave-one-out), so mixing the two would decide by the evaluation, "
            "not by the models. Which rows "
            "depends on the champion's data. Other data than this (its recorded SHA-256 differs: "
            "the normal case, new harvest data): rows the new fit did not train on; with 200 rows "
            "or more, the --holdout-fraction split (40 rows or more, and the saved model is the one "
            "judged); with fewer, a holdout is too small to tell a 5% MSE difference, so every row "
            "is predicted by k-fold cross-validation (5 folds, each by a fit on the other four, with "
            "the same options; leave-one-out below 20 rows, where the folds' random assignment alone "
            "moved the built-in data's figures by up to 25%) and the saved model is then fitted on "
            "every row. The same data file (same SHA-256) as a champion fitted on every row: the "
            "saved model is fitted on every row too and both are scored in-sample on all of them, "
            "like for like (scoring only the new fit out-of-sample would refuse a retrain that is "
            "exactly as good). The same data as a champion that held rows out, with the same --seed "
            "and --holdout-fraction (so the same rows held out): both are scored on those rows, "
            "out-of-sample, like for like; with another split the report says the champion's "
            "figures may be partly in-sample. The figures: MSE, MAE, bias (mean of prediction - "
            "actual) and the share of rows inside their 90% and 95% prediction intervals, per "
            "target. The new fit is worse when its MSE on any target exceeds the champion's by more "
            "than --max-regression (relative; per target, so a gain on one crop cannot hide a loss "
            "on the other). "
            "exit codes: 0 saved; 2 bad arguments or data, or a --compare-with model that cannot "
            "be compared; 3 fit diverged or missed --max-gap; 4 the model store refused the save; "
            "5 worse than the --compare-with model (with --dry-run: would be refused). Nothing is "
            "written to the store unless the exit code is 0."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="PATH",
        help="CSV with a header naming temperature, rainfall, humidity, apples, oranges "
        "(any order, extra columns ignored); default: the built-in 15-row dataset of seed 004",
    )
    parser.add_argument(
        "--epochs", type=_positive_int, default=defaults.epochs, help="maximum passes over the data"
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help=f"rows per SGD step; default: all training rows, at most {MAX_AUTO_BATCH}",
    )
    parser.add_argument("--lr", type=_positive_float, default=defaults.lr, help="initial SGD learning rate")
    parser.add_argument(
        "--seed",
        type=_non_negative_int,
        default=defaults.seed,
        help="seed for initialisation, shuffling and the split",
    )
    parser.add_argument(
        "--no-standardize",
        dest="standardize",
        action="store_false",
        help="optimise on raw values (needs a much smaller --lr, as in seed 004)",
    )
    parser.add_argument(
        "--max-gap",
        type=_non_negative_float,
        default=defaults.max_gap,
        help="refuse to save when (fit MSE - least-squares MSE) / least-squares MSE exceeds this",
    )
    parser.add_argument(
        "--holdout-fraction",
        type=_fraction,
        default=defaults.holdout_fraction,
        help="share of rows held out for metrics when the data has at least 50 rows",
    )
    parser.add_argument("--model-name", default=MODEL_NAME, help="model-store name")
    parser.add_argument(
        "--version", default=None, help="explicit version for the tag (default: generated); never overwrites"
    )
    parser.add_argument(
        "--plots", type=Path, default=None, metavar="DIR", help="write loss and predicted-vs-actual PNGs here"
    )
    parser.add_argument("--dry-run", action="store_true", help="fit and report but save nothing")
    parser.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing when the store already has a model of --model-name (prints its latest tag)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no report")
    parser.add_argument(
        "--compare-with",
        default=None,
        metavar="TAG_OR_URL",
        help="a model-store tag (crop_yield:v3, crop_yield:latest) or a running service "
        "(http://host:port: its default version, through GET /metadata and POST /predict): "
        "compare the new fit with it and save only when it is not worse",
    )
    parser.add_argument(
        "--max-regression",
        type=_non_negative_float,
        default=defaults.max_regression,
        metavar="FRACTION",
        help="with --compare-with: refuse when the new fit's MSE on a target is more than this "
        "share above the compared model's",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="with --compare-with: save even when the new fit is worse (recorded in its lineage)",
    )
    parser.add_argument(
        "--token",
        default=argparse.SUPPRESS,  # no "(default: None)": the default is the variable
        help=f"bearer token of the --compare-with service; default: ${TOKEN_ENV} (better: other "
        "users can read a command line in ps, not the environment)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.force and args.compare_with is None:
        parser.error("--force needs --compare-with (it overrides the comparison's refusal)")
    options = TrainOptions(
        data=args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        standardize=args.standardize,
        max_gap=args.max_gap,
        holdout_fraction=args.holdout_fraction,
        model_name=args.model_name,
        version=args.version,
        plots=args.plots,
        save=not args.dry_run,
        progress=not args.quiet and sys.stderr.isatty(),
        compare_with=args.compare_with,
        max_regression=args.max_regression,
        force=args.force,
        token=getattr(args, "token", None) or os.environ.get(TOKEN_ENV) or None,
    )
    # Imported after argument parsing so --help stays instant.
    from training.champion import ChampionError
    from training.compare import ChallengerWorseError, report
    from training.store import InvalidTagError, StoreError, check_new_tag, latest_tag

    try:  # refuse a bad or taken tag before spending time on the fit
        check_new_tag(args.model_name, args.version)
    except InvalidTagError as exc:
        return _fail(str(exc), EXIT_BAD_INPUT)
    except StoreError as exc:
        if not args.if_missing:
            return _fail(f"model store: {exc}", EXIT_STORE_FAILED)
    if args.if_missing and (existing := latest_tag(args.model_name)) is not None:
        print(f"model store already has {existing}; not training (--if-missing)", file=sys.stderr)
        print(existing)
        return 0
    try:
        outcome = train(options)
    except DataError as exc:
        return _fail(f"bad training data: {exc}", EXIT_BAD_INPUT)
    except ChampionError as exc:
        return _fail(f"--compare-with: {exc}", EXIT_BAD_INPUT)
    except ChallengerWorseError as exc:
        if not args.quiet:
            print("\n".join(report(exc.comparison, exc.champion, exc.folds)), file=sys.stderr)
        return _fail(f"refused: {exc}", EXIT_WORSE)
    except (FitDivergedError, QualityGateError) as exc:
        return _fail(f"fit rejected: {exc}", EXIT_FIT_FAILED)
    except StoreError as exc:
        return _fail(f"model store: {exc}", EXIT_STORE_FAILED)
    if not args.quiet:
        _report(outcome)
    if outcome.tag is not None:
        print(outcome.tag)
    return 0


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _report(outcome: TrainOutcome) -> None:
    from training.compare import report, verdict

    meta = outcome.metadata
    fit, data = meta.fit, meta.data
    lines = [
        f"data: {data.source} ({data.rows} rows, {data.holdout_rows} held out)",
        f"fit: {fit.epochs_run} epochs ({'converged' if fit.converged else 'epoch limit'}) "
        f"in {fit.seconds:.2f} s",
        f"MSE {fit.mse:.6g} vs least-squares {fit.optimal_mse:.6g}: optimality gap {fit.optimality_gap:.3g}",
    ]
    width = max(map(len, meta.metrics))
    for split, per_target in meta.metrics.items():
        for name, m in per_target.items():
            r2 = f"{m.r2:.5f}" if m.r2 is not None else "n/a (constant target)"
            lines.append(f"{split:>{width}} {name:<8} MSE {m.mse:9.4f}  RMSE {m.rmse:8.4f}  R² {r2}")
    lines += [f"plot: {p}" for p in outcome.plot_files]
    lineage = meta.lineage
    if outcome.comparison is not None and lineage is not None and lineage.compared_with is not None:
        lines += report(outcome.comparison, lineage.compared_with, lineage.folds)
        lines.append(verdict(outcome.comparison, lineage.compared_with))
        if lineage.forced:
            lines.append("--force: saving it anyway (recorded in its lineage)")
    if outcome.tag is not None:
        lines.append(f"saved: {outcome.tag}")
    else:
        lines.append("dry run: nothing saved")
    print("\n".join(lines), file=sys.stderr)

"""``python -m training.drift DATA.csv [--against TAG] [--json]``: how far a CSV's rows have
drifted from the data a stored model was trained on (the offline twin of the service's
live check; both bin with ``contract.drift``).

Each feature, and each target as the model's *predictions* on the rows, is binned into the
reference bins the model's metadata records (schema_version 4) and compared by PSI. The
table goes to stdout; exit 0 whatever the drift (it is a report, not a gate), 2 when the
model or the file cannot be used.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from contract import (
    FEATURE_NAMES,
    MODEL_NAME,
    TARGET_NAMES,
    WEIGHTS_FILE,
    WeightsFileError,
    check_weights_file,
    drift,
    store_home,
)
from contract.metadata import ColumnReference, MetadataError, Reference, read_metadata
from training.data import DataError, load_features

EXIT_BAD_INPUT = 2
DEFAULT_TAG = f"{MODEL_NAME}:latest"
VERDICT_TEXT = {"none": "no drift", "moderate": "moderate (warn)", "significant": "significant (page)"}


class DriftInputError(ValueError):
    """The model or the data cannot be used; the message names which and why."""


@dataclass(frozen=True)
class ColumnDrift:
    name: str
    kind: str
    """'feature', or 'prediction' for a target (the model's predictions are what is binned)."""
    rows: int
    psi: float
    verdict: str
    mean: float
    reference_mean: float
    shares: list[float]
    reference_shares: list[float]


def load_model(reference: str) -> tuple[str, np.ndarray, np.ndarray, Reference]:
    """(tag, weight, bias, reference bins) of a store entry, read as ``training.champion`` does."""
    import bentoml
    from bentoml.exceptions import NotFound
    from safetensors.numpy import load_file

    from training.store import InvalidTagError, parse_tag

    name, _, version = reference.partition(":")
    try:
        model = bentoml.models.get(parse_tag(name, version or None))
    except InvalidTagError as exc:
        raise DriftInputError(str(exc)) from None
    except NotFound:
        raise DriftInputError(f"model {reference} is not in the model store ({store_home()})") from None
    tag = str(model.tag)
    try:
        meta = read_metadata(model.info.metadata, tag)
        check_weights_file(Path(model.path), tag)
    except (MetadataError, WeightsFileError) as exc:
        raise DriftInputError(str(exc)) from None
    if meta.reference is None:
        raise DriftInputError(
            f"model {tag} records no reference distribution (metadata schema_version "
            f"{meta.schema_version}; drift needs 4 or later): retrain it with this version"
        )
    weights = load_file(str(Path(model.path) / WEIGHTS_FILE))
    return tag, weights["weight"].astype(np.float64), weights["bias"].astype(np.float64), meta.reference


def column_drift(name: str, kind: str, values: np.ndarray, ref: ColumnReference) -> ColumnDrift:
    actual = drift.shares(drift.bin_counts(values, np.asarray(ref.edges)))
    value = drift.psi(actual, np.asarray(ref.shares))
    return ColumnDrift(
        name,
        kind,
        len(values),
        value,
        drift.verdict(value),
        float(values.mean()),
        ref.mean,
        actual.tolist(),
        ref.shares,
    )


def measure(
    rows: np.ndarray, weight: np.ndarray, bias: np.ndarray, reference: Reference
) -> list[ColumnDrift]:
    """Every feature of ``rows``, then every target of the model's predictions on them."""
    predictions = rows @ weight.T + bias  # float64, as training computed the reference's
    return [
        *(column_drift(n, "feature", rows[:, j], reference.features[n]) for j, n in enumerate(FEATURE_NAMES)),
        *(
            column_drift(n, "prediction", predictions[:, j], reference.targets[n])
            for j, n in enumerate(TARGET_NAMES)
        ),
    ]


def render(tag: str, data: Path, reference: Reference, columns: list[ColumnDrift]) -> str:
    lines = [
        f"drift of {data} ({columns[0].rows} rows) against {tag} (reference: {reference.rows} training rows)",
        f"{'column':<12} {'kind':<10} {'rows':>6} {'PSI':>8}  {'mean (ref -> data)':<22} verdict",
    ]
    for c in columns:
        means = f"{c.reference_mean:.2f} -> {c.mean:.2f}"
        lines.append(
            f"{c.name:<12} {c.kind:<10} {c.rows:>6} {c.psi:>8.4f}  {means:<22} {VERDICT_TEXT[c.verdict]}"
        )
    lines.append(
        f"PSI < {drift.MODERATE:g} no drift, < {drift.SIGNIFICANT:g} moderate, from there significant; "
        f"shares clamped to >= {drift.EPSILON:g}"
    )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.drift",
        description=(
            "Compare a CSV's rows with the training distribution a stored model records: each feature, "
            "and each target as the model's predictions on the rows, by the population stability index "
            f"(PSI < {drift.MODERATE:g}: no drift; < {drift.SIGNIFICANT:g}: moderate, warn; "
            "higher: significant, page). Exit 0 with the report, 2 when the model or the data cannot be used."
        ),
    )
    parser.add_argument(
        "data", type=Path, help="CSV with the feature columns (target columns optional, ignored)"
    )
    parser.add_argument(
        "--against", default=DEFAULT_TAG, metavar="TAG", help=f"model-store tag (default {DEFAULT_TAG})"
    )
    parser.add_argument(
        "--json", action="store_true", help="print machine-readable JSON instead of the table"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        tag, weight, bias, reference = load_model(args.against)
        rows = load_features(args.data, FEATURE_NAMES)
        columns = measure(rows, weight, bias, reference)
    except (DriftInputError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        body = {
            "model": tag,
            "data": str(args.data),
            "rows": len(rows),
            "reference_rows": reference.rows,
            "epsilon": drift.EPSILON,
            "thresholds": {"moderate": drift.MODERATE, "significant": drift.SIGNIFICANT},
            "columns": [asdict(c) for c in columns],
        }
        print(json.dumps(body, indent=2))
    else:
        print(render(tag, args.data, reference, columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Loading and validating training data from CSV.

Every rejection raises :class:`DataError` with one message naming the file and,
where it applies, the line and column, so the CLI can print it and exit non-zero
before anything touches the model store.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np

BUILTIN_DATA = "crop_yield.csv"
"""The 15-row dataset of seed 004, shipped in ``training/resources``."""


class DataError(ValueError):
    """Training data that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Dataset:
    features: np.ndarray
    """float64 array, rows × len(feature_names)."""
    targets: np.ndarray
    """float64 array, rows × len(target_names)."""
    feature_names: tuple[str, ...]
    target_names: tuple[str, ...]
    source: str
    """Where the rows came from: a file path or ``builtin:crop_yield.csv``."""
    sha256: str
    """Digest of the file's bytes, recorded in the model metadata."""

    @property
    def rows(self) -> int:
        return int(self.features.shape[0])


def min_rows(n_features: int) -> int:
    """Fewest rows that determine a linear fit with intercept and leave one residual."""
    return n_features + 2


def load_builtin(feature_names: Sequence[str], target_names: Sequence[str]) -> Dataset:
    resource = resources.files("training.resources").joinpath(BUILTIN_DATA)
    with resources.as_file(resource) as path:
        return replace(load_csv(path, feature_names, target_names), source=f"builtin:{BUILTIN_DATA}")


def load_csv(path: Path, feature_names: Sequence[str], target_names: Sequence[str]) -> Dataset:
    """Read a CSV whose header names every feature and target column (any order, extra columns ignored)."""
    raw, table = _read_table(path, [*feature_names, *target_names])
    n_rows = len(table)
    needed = min_rows(len(feature_names))
    if n_rows < needed:
        raise DataError(
            f"{path}: {n_rows} data row(s); at least {needed} are needed "
            f"to fit {len(feature_names)} feature(s) with an intercept"
        )
    features = table[:, : len(feature_names)]
    for j, name in enumerate(feature_names):
        if np.all(features[:, j] == features[0, j]):
            raise DataError(
                f"{path}, column '{name}': every row has the same value {features[0, j]:g}; "
                "a constant feature cannot be fitted"
            )
    return Dataset(
        features=np.ascontiguousarray(features),
        targets=np.ascontiguousarray(table[:, len(feature_names) :]),
        feature_names=tuple(feature_names),
        target_names=tuple(target_names),
        source=str(path),
        sha256=hashlib.sha256(raw).hexdigest(),
    )


def load_features(path: Path, feature_names: Sequence[str]) -> np.ndarray:
    """The feature columns of a CSV (rows × features), for scoring rather than fitting: target
    columns may be absent (they are ignored like any other extra column), one row is enough
    and a constant column is fine (a drift file may well hold one day's rows)."""
    _, table = _read_table(path, list(feature_names))
    if len(table) == 0:
        raise DataError(f"{path}: no data rows")
    return table


def _read_table(path: Path, wanted: list[str]) -> tuple[bytes, np.ndarray]:
    """The file's bytes and its ``wanted`` columns as a float64 rows × columns array; every
    problem with the file itself (not with how many rows it has) as a ``DataError``."""
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a CSV file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise DataError(f"{path}: file is empty; expected a header naming {', '.join(wanted)}")

    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] = []
    for fields in reader:
        if any(f.strip() for f in fields):
            header = [f.strip() for f in fields]
            break
    index = _column_index(path, reader.line_num, header, wanted)
    columns = [array("d") for _ in wanted]
    try:
        for fields in reader:
            if not fields or all(not f.strip() for f in fields):
                continue  # blank lines are not rows
            line = reader.line_num
            if len(fields) != len(header):
                raise DataError(
                    f"{path}, line {line}: expected {len(header)} fields as in the header, "
                    f"found {len(fields)}"
                )
            for out, name in zip(columns, wanted, strict=True):
                out.append(_parse_cell(path, line, name, fields[index[name]]))
    except csv.Error as exc:
        raise DataError(f"{path}, line {reader.line_num}: malformed CSV ({exc})") from None

    table = np.column_stack([np.frombuffer(c, dtype=np.float64) for c in columns])
    return raw, table.reshape(-1, len(wanted))


def _column_index(path: Path, line: int, header: list[str], wanted: list[str]) -> dict[str, int]:
    seen: dict[str, int] = {}
    for i, name in enumerate(header):
        if name in wanted and name in seen:
            raise DataError(f"{path}, line {line}: column '{name}' appears twice in the header")
        seen.setdefault(name, i)
    missing = [name for name in wanted if name not in seen]
    if missing:
        raise DataError(
            f"{path}, line {line}: missing column(s) {', '.join(repr(m) for m in missing)}; "
            f"the header has {', '.join(repr(h) for h in header)}"
        )
    return {name: seen[name] for name in wanted}


def _parse_cell(path: Path, line: int, column: str, cell: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        shown = cell if len(cell) <= 40 else cell[:37] + "..."
        raise DataError(f"{path}, line {line}, column '{column}': {shown!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{path}, line {line}, column '{column}': {cell.strip()!r} is not a finite number")
    return value

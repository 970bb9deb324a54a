"""CSV loading: the built-in data, user files in any column order, and every rejection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contract import FEATURE_NAMES, TARGET_NAMES
from tests.helpers import BAD_CSV_CASES, CSV_HEADER, builtin_rows
from training.data import DataError, load_builtin, load_csv, load_features


def write(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_builtin_is_seed_004() -> None:
    data = load_builtin(FEATURE_NAMES, TARGET_NAMES)
    assert data.rows == 15
    assert data.features[0].tolist() == [73, 67, 43]
    assert data.targets[0].tolist() == [56, 70]
    assert data.features[-1].tolist() == [68, 97, 70]
    assert data.targets[-1].tolist() == [102, 120]
    assert data.source == "builtin:crop_yield.csv"
    assert len(data.sha256) == 64


def test_columns_in_any_order_with_extras(tmp_path: Path) -> None:
    lines = ["region,oranges,humidity,apples,rainfall,temperature"]
    for i, row in enumerate(builtin_rows()):
        t, r, h, a, o = row.split(",")
        lines.append(f"r{i},{o},{h},{a},{r},{t}")
    data = load_csv(write(tmp_path, "\n".join(lines) + "\n"), FEATURE_NAMES, TARGET_NAMES)
    builtin = load_builtin(FEATURE_NAMES, TARGET_NAMES)
    np.testing.assert_array_equal(data.features, builtin.features)
    np.testing.assert_array_equal(data.targets, builtin.targets)


def test_blank_lines_and_crlf_are_accepted(tmp_path: Path) -> None:
    text = "\r\n".join([CSV_HEADER, "", *builtin_rows(), ""]) + "\r\n"
    assert load_csv(write(tmp_path, text), FEATURE_NAMES, TARGET_NAMES).rows == 15


@pytest.mark.parametrize("case", BAD_CSV_CASES, ids=list(BAD_CSV_CASES))
def test_bad_csv_is_rejected_with_location(tmp_path: Path, case: str) -> None:
    text, fragments = BAD_CSV_CASES[case]
    path = write(tmp_path, text)
    with pytest.raises(DataError) as info:
        load_csv(path, FEATURE_NAMES, TARGET_NAMES)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        load_csv(tmp_path / "nope.csv", FEATURE_NAMES, TARGET_NAMES)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a directory"):
        load_csv(tmp_path, FEATURE_NAMES, TARGET_NAMES)


def test_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="not UTF-8"):
        load_csv(path, FEATURE_NAMES, TARGET_NAMES)


def test_rows_to_score_need_only_the_features(tmp_path: Path) -> None:
    """Drift files: no target columns, a single row and a constant column are all fine."""
    path = write(tmp_path, "humidity,temperature,rainfall,region\n50,80,90,north\n")
    assert load_features(path, FEATURE_NAMES).tolist() == [[80.0, 90.0, 50.0]]
    with pytest.raises(DataError, match="no data rows"):
        load_features(write(tmp_path, "temperature,rainfall,humidity\n", "empty.csv"), FEATURE_NAMES)
    with pytest.raises(DataError, match="line 3, column 'rainfall': 'x' is not a number"):
        load_features(
            write(tmp_path, "temperature,rainfall,humidity\n1,2,3\n1,x,3\n", "bad.csv"), FEATURE_NAMES
        )

"""``contract.drift`` (edges, bins, PSI) and the metadata's ``reference`` built from it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from contract import FEATURE_NAMES, TARGET_NAMES, drift
from contract.metadata import ColumnReference, Reference, read_metadata
from training.data import load_builtin
from training.pipeline import TrainOptions, train


def test_edges_are_the_deciles_deduplicated() -> None:
    np.testing.assert_allclose(drift.quantile_edges(np.arange(11.0)), np.arange(11.0))
    # 11 values: each decile is one of them; ties collapse into one edge
    assert drift.quantile_edges(np.array([0.0] * 6 + [1.0] * 5)).tolist() == [0.0, 1.0]
    assert drift.quantile_edges(np.array([0.0] * 10 + [1.0])).tolist() == [0.0, 1.0]
    # between values the deciles interpolate (numpy's default linear method)
    interpolated = drift.quantile_edges(np.array([0.0, 0.0, 1.0]))  # deciles 0-0.5 are all 0
    np.testing.assert_allclose(interpolated, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0])


def test_a_constant_column_gets_one_inner_bin_holding_it() -> None:
    edges = drift.quantile_edges(np.full(5, 7.0))
    assert edges[0] == 7.0
    assert edges[1] == np.nextafter(7.0, np.inf)
    assert drift.bin_counts(np.full(5, 7.0), edges).tolist() == [0, 5, 0]


def test_bins_are_closed_below_and_the_last_inner_bin_closed_above() -> None:
    edges = np.array([0.0, 1.0, 2.0])  # bins: (-inf, 0), [0, 1), [1, 2], (2, inf)
    values = np.array([-0.1, 0.0, 0.5, 1.0, 1.5, 2.0, 2.1])
    assert drift.bin_indices(values, edges).tolist() == [0, 1, 1, 2, 2, 2, 3]
    assert drift.bin_counts(values, edges).tolist() == [1, 2, 3, 1]


def test_training_data_fills_no_tail() -> None:
    column = load_builtin(FEATURE_NAMES, TARGET_NAMES).features[:, 0]
    counts = drift.bin_counts(column, drift.quantile_edges(column))
    assert counts[0] == counts[-1] == 0
    assert counts.sum() == len(column)


def test_non_finite_values_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        drift.bin_indices(np.array([1.0, math.nan]), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="no values"):
        drift.quantile_edges(np.array([]))
    with pytest.raises(ValueError, match="no rows"):
        drift.shares(np.zeros(3, dtype=np.int64))


def test_psi_by_hand() -> None:
    # (0.25 - 0.5)·ln(0.25/0.5) + (0.75 - 0.5)·ln(0.75/0.5); the empty tails give 0
    expected = 0.25 * math.log(2) + 0.25 * math.log(1.5)
    assert drift.psi(np.array([0, 0.25, 0.75, 0]), np.array([0, 0.5, 0.5, 0])) == pytest.approx(expected)
    assert expected == pytest.approx(0.274653, abs=1e-6)


def test_an_empty_reference_bin_is_clamped_to_epsilon_not_infinite() -> None:
    # all rows in a tail the training data never reached: (1 - ε)·ln(1/ε) + (ε - 1)·ln(ε/1)
    value = drift.psi(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    assert value == pytest.approx(2 * (1 - drift.EPSILON) * math.log(1 / drift.EPSILON))
    with pytest.raises(ValueError, match="2 actual shares against 3"):
        drift.psi(np.ones(2) / 2, np.ones(3) / 3)


def test_psi_of_the_training_data_against_itself_is_zero_and_a_shift_is_significant() -> None:
    rng = np.random.default_rng(0)
    train_col = rng.normal(80, 10, 5_000)
    edges = drift.quantile_edges(train_col)
    reference = drift.shares(drift.bin_counts(train_col, edges))
    assert drift.psi(drift.shares(drift.bin_counts(train_col, edges)), reference) == 0.0
    same = drift.psi(drift.shares(drift.bin_counts(rng.normal(80, 10, 5_000), edges)), reference)
    shifted = drift.psi(drift.shares(drift.bin_counts(rng.normal(90, 10, 5_000), edges)), reference)
    assert drift.verdict(same) == "none"
    assert same < 0.02
    assert drift.verdict(shifted) == "significant"


def test_verdicts_at_the_thresholds() -> None:
    assert [drift.verdict(v) for v in (0.0, 0.0999, 0.1, 0.2499, 0.25, 9.0)] == [
        "none",
        "none",
        "moderate",
        "moderate",
        "significant",
        "significant",
    ]
    with pytest.raises(ValueError, match="NaN"):
        drift.verdict(math.nan)


GOOD: dict[str, Any] = {"edges": [0.0, 1.0, 2.0], "shares": [0.0, 0.5, 0.5, 0.0], "mean": 1.0}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"edges": [0.0, 0.0, 2.0]}, "strictly increasing"),
        ({"edges": [2.0, 1.0, 0.0]}, "strictly increasing"),
        ({"edges": [0.0], "shares": [0.5, 0.5]}, "at least 2"),
        ({"shares": [0.5, 0.5, 0.0]}, "3 edges need 4 shares, not 3"),
        ({"shares": [0.0, 0.5, 0.5, 1e-8]}, "sum to 1"),
        ({"shares": [0.0, 1.5, -0.5, 0.0]}, ">= 0"),
        ({"mean": math.inf}, "finite"),
        ({"edges": [0.0, 1.0, math.nan]}, "finite"),
    ],
)
def test_a_column_reference_must_be_a_distribution(change: dict[str, Any], message: str) -> None:
    ColumnReference(**GOOD)
    with pytest.raises(ValidationError, match=message):
        ColumnReference(**(GOOD | change))


def test_a_reference_covers_the_models_columns() -> None:
    column = ColumnReference(**GOOD)
    targets = dict.fromkeys(TARGET_NAMES, column)
    Reference(rows=3, features=dict.fromkeys(FEATURE_NAMES, column), targets=targets)
    with pytest.raises(ValidationError, match="features are"):
        Reference(rows=3, features={"temperature": column}, targets=targets)
    # a YAML dump that sorts the keys (yaml.safe_dump's default) reads back in the model's order
    sorted_keys = {name: column for name in sorted(FEATURE_NAMES)}
    assert list(Reference(rows=3, features=sorted_keys, targets=targets).features) == list(FEATURE_NAMES)


def test_training_records_the_reference_of_its_rows_and_predictions() -> None:
    outcome = train(TrainOptions(save=False))
    reference = outcome.metadata.reference
    assert reference is not None
    assert reference.rows == 15
    data = load_builtin(FEATURE_NAMES, TARGET_NAMES)
    temperature = reference.features["temperature"]
    assert temperature.edges[0] == 68.0
    assert temperature.edges[-1] == 103.0
    assert temperature.mean == pytest.approx(data.features[:, 0].mean())
    weight = outcome.fit.model.weight.detach().double().numpy()
    bias = outcome.fit.model.bias.detach().double().numpy()
    predictions = data.features @ weight.T + bias
    apples = reference.targets["apples"]  # the predictions' distribution, not the actuals'
    assert apples.mean == pytest.approx(predictions[:, 0].mean())
    assert apples.edges == drift.quantile_edges(predictions[:, 0]).tolist()
    assert apples.edges[0] != data.targets[:, 0].min()  # 20.0 is the smallest actual
    # through YAML as BentoML writes it and back, exactly: the service bins with the same edges
    stored = yaml.safe_load(yaml.safe_dump(outcome.metadata.to_store(), sort_keys=False))
    assert read_metadata(stored, "x:y") == outcome.metadata

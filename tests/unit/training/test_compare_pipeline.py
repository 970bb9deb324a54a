"""The pipeline with --compare-with, in process against a stand-in champion: what is
evaluated, what is refused, what is saved and what the lineage records."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

import training.pipeline
from contract import FEATURE_NAMES, TARGET_NAMES, __version__
from contract.metadata import read_metadata
from tests.helpers import CSV_HEADER, REPO_ROOT, builtin_rows
from training.champion import TrainedOn
from training.compare import ChallengerWorseError, Predictions
from training.data import DataError, load_builtin
from training.evaluation import least_squares
from training.pipeline import TrainOptions, train

BUILTIN = load_builtin(FEATURE_NAMES, TARGET_NAMES)
TRUTH = least_squares(BUILTIN.features, BUILTIN.targets)


@dataclass
class StandIn:
    """A champion predicting with ``model``; remembers the rows it was asked about."""

    model: Callable[[np.ndarray], np.ndarray]
    tag: str = "crop_yield:champion"
    source: str = "store"
    data_sha256: str | None = None
    trained_on: TrainedOn | None = None
    asked: list[np.ndarray] = field(default_factory=list)

    def predict(self, rows: np.ndarray) -> Predictions:
        self.asked.append(rows)
        return Predictions(self.model(rows), None)


def use(monkeypatch: pytest.MonkeyPatch, champion: StandIn) -> StandIn:
    monkeypatch.setattr(training.pipeline, "resolve", lambda reference, token: champion)
    return champion


def stored_entries(name: str) -> list[str]:
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        return [str(m.tag) for m in bentoml.models.list(name)]
    except NotFound:  # no entry of this name at all
        return []


def test_a_better_fit_is_saved_with_its_lineage(monkeypatch: pytest.MonkeyPatch) -> None:
    off = use(monkeypatch, StandIn(lambda rows: TRUTH.predict(rows) + np.array([3.0, -2.0])))
    outcome = train(TrainOptions(compare_with="crop_yield:champion", model_name="cmp-better"))
    assert outcome.tag is not None
    lineage = outcome.metadata.lineage
    assert lineage is not None
    assert (lineage.fit_rows, lineage.holdout_rows, lineage.folds) == (15, 0, 15)  # leave-one-out, then all
    assert lineage.compared_with == "crop_yield:champion"
    assert not lineage.forced
    assert lineage.comparison is not None
    assert not lineage.comparison.worse
    assert lineage.comparison.evaluation == "cross_validation"
    assert lineage.comparison.champion["apples"].bias == pytest.approx(3.0)
    assert lineage.comparison.champion["apples"].coverage_90 is None  # it gave no intervals
    assert lineage.comparison.challenger["apples"].coverage_95 is not None
    assert all(c < -0.5 for c in lineage.comparison.mse_change.values())
    assert "cross_validation" in outcome.metadata.metrics
    np.testing.assert_array_equal(off.asked[0], BUILTIN.features)  # every row, once
    import bentoml

    stored = read_metadata(bentoml.models.get(outcome.tag).info.metadata, outcome.tag)
    assert stored.lineage == lineage


def test_a_worse_fit_is_refused_and_nothing_saved(monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, StandIn(lambda rows: TRUTH.predict(rows) * 0 + BUILTIN.targets))  # an oracle
    with pytest.raises(ChallengerWorseError) as refused:
        train(TrainOptions(compare_with="crop_yield:champion", model_name="cmp-refused"))
    assert refused.value.comparison.worse
    assert refused.value.folds == 15
    assert "Nothing was saved; --force saves it anyway" in str(refused.value)
    assert stored_entries("cmp-refused") == []


def test_force_saves_a_worse_fit_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, StandIn(lambda rows: TRUTH.predict(rows) * 0 + BUILTIN.targets))
    outcome = train(TrainOptions(compare_with="crop_yield:champion", model_name="cmp-forced", force=True))
    assert outcome.tag is not None
    assert outcome.metadata.lineage is not None
    assert outcome.metadata.lineage.forced
    assert outcome.comparison is not None
    assert outcome.comparison.worse


def large_csv(tmp_path: Path, rows: int = 300) -> tuple[Path, str]:
    rng = np.random.default_rng(2)
    x = rng.uniform([60, 40, 30], [105, 140, 75], size=(rows, 3))
    y = TRUTH.predict(x) + rng.normal(0, 1, (rows, 2))
    path = tmp_path / "large.csv"
    path.write_text(
        "\n".join([CSV_HEADER, *(",".join(map(str, [*a, *b])) for a, b in zip(x, y, strict=True))])
    )
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_large_data_is_compared_on_the_holdout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = large_csv(tmp_path)
    champion = use(monkeypatch, StandIn(lambda rows: TRUTH.predict(rows) + 1.0, data_sha256="other"))
    outcome = train(TrainOptions(data=path, compare_with="x", save=False))
    lineage = outcome.metadata.lineage
    assert lineage is not None
    assert (lineage.fit_rows, lineage.holdout_rows, lineage.folds) == (240, 60, None)
    assert lineage.data == str(path)
    assert lineage.comparison is not None
    assert (lineage.comparison.evaluation, lineage.comparison.rows) == ("holdout", 60)
    assert not lineage.comparison.same_data
    assert len(champion.asked[0]) == 60
    assert "holdout" in outcome.metadata.metrics
    assert "cross_validation" not in outcome.metadata.metrics


def test_other_data_is_still_judged_out_of_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    """A champion of other data (new harvest rows) has not seen these: the challenger is
    judged out-of-sample, even though its record says it was fitted on every row of its own."""
    use(monkeypatch, StandIn(TRUTH.predict, data_sha256="0" * 64, trained_on=TrainedOn(15, 15, 0, 0.2)))
    outcome = train(TrainOptions(compare_with="x", save=False, force=True))
    comparison = outcome.comparison
    assert comparison is not None
    assert (comparison.evaluation, comparison.same_data) == ("cross_validation", False)
    # (this stand-in is in fact the in-sample optimum of these rows: out-of-fold figures lose to it)
    assert comparison.worse
    assert outcome.metadata.lineage is not None
    assert outcome.metadata.lineage.folds == 15
    assert "cross_validation" in outcome.metadata.metrics


def test_same_data_as_a_champion_fitted_on_every_row_is_scored_in_sample(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same fit of the same rows: in-sample against in-sample, no change, saved. (Out-of-sample
    for the challenger only, this is +79% apples MSE and a refusal.)"""
    champion = use(
        monkeypatch,
        StandIn(TRUTH.predict, data_sha256=BUILTIN.sha256, trained_on=TrainedOn(15, 15, 0, 0.2)),
    )
    outcome = train(TrainOptions(compare_with="x", model_name="cmp-same-data"))
    assert outcome.tag is not None
    lineage = outcome.metadata.lineage
    assert lineage is not None
    assert (lineage.fit_rows, lineage.holdout_rows, lineage.folds) == (15, 0, None)
    comparison = lineage.comparison
    assert comparison is not None
    assert (comparison.evaluation, comparison.rows, comparison.same_data) == ("in_sample_same_data", 15, True)
    assert not comparison.worse
    assert all(abs(c) < 1e-4 for c in comparison.mse_change.values())  # the fit is at the optimum
    assert comparison.challenger["apples"].mse == pytest.approx(
        outcome.metadata.metrics["train"]["apples"].mse
    )
    assert comparison.challenger["apples"].coverage_95 is not None  # the saved model's own intervals
    np.testing.assert_array_equal(champion.asked[0], BUILTIN.features)  # every row, once
    assert set(outcome.metadata.metrics) == {"train"}  # no cross-validation ran


def test_same_data_in_sample_still_refuses_a_worse_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, StandIn(TRUTH.predict, data_sha256=BUILTIN.sha256, trained_on=TrainedOn(15, 15, 0, 0.2)))
    with pytest.raises(ChallengerWorseError) as refused:
        train(TrainOptions(compare_with="x", model_name="cmp-same-worse", epochs=3, max_gap=1e9))
    assert refused.value.comparison.evaluation == "in_sample_same_data"
    assert all(c > 10 for c in refused.value.comparison.mse_change.values())
    assert stored_entries("cmp-same-worse") == []


def test_same_data_and_split_as_a_champion_that_held_rows_out_is_scored_on_its_holdout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """120 rows: without this the plan would cross-validate every row, 96 of which the champion
    was fitted on. With its seed and fraction this run holds out its 24 rows: both out-of-sample."""
    path, digest = large_csv(tmp_path, rows=120)
    reference = train(TrainOptions(data=path, save=False))  # how the champion was trained
    assert (reference.metadata.data.train_rows, reference.metadata.data.holdout_rows) == (96, 24)
    champion = use(
        monkeypatch,
        StandIn(TRUTH.predict, data_sha256=digest, trained_on=TrainedOn(120, 96, 0, 0.2)),
    )
    outcome = train(TrainOptions(data=path, compare_with="x", save=False))
    lineage = outcome.metadata.lineage
    assert lineage is not None
    assert (lineage.fit_rows, lineage.holdout_rows, lineage.folds) == (96, 24, None)
    assert lineage.comparison is not None
    assert (lineage.comparison.evaluation, lineage.comparison.rows) == ("holdout_same_data", 24)
    assert lineage.comparison.same_data
    assert len(champion.asked[0]) == 24
    assert outcome.metadata.metrics["holdout"] == reference.metadata.metrics["holdout"]  # the same rows


@pytest.mark.parametrize("trained_on", [None, TrainedOn(120, 96, 7, 0.2), TrainedOn(120, 96, 0, 0.3)])
def test_same_data_but_unknown_or_other_rows_falls_back_to_out_of_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trained_on: TrainedOn | None
) -> None:
    """Which rows the champion saw is not recorded, or its split is not this run's: the
    out-of-sample plan, flagged same_data so the report can warn."""
    path, digest = large_csv(tmp_path, rows=120)
    use(monkeypatch, StandIn(TRUTH.predict, data_sha256=digest, trained_on=trained_on))
    outcome = train(TrainOptions(data=path, compare_with="x", save=False))
    assert outcome.comparison is not None
    assert (outcome.comparison.evaluation, outcome.comparison.same_data) == ("cross_validation", True)


def test_too_few_rows_to_cross_validate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, StandIn(TRUTH.predict))
    path = tmp_path / "five.csv"
    path.write_text("\n".join([CSV_HEADER, *builtin_rows()[:5]]))
    with pytest.raises(DataError, match="5 rows are too few to compare models by cross-validation"):
        train(TrainOptions(data=path, compare_with="x", save=False))


def test_without_comparison_the_lineage_records_the_data() -> None:
    lineage = train(TrainOptions(save=False)).metadata.lineage
    assert lineage is not None
    csv = (REPO_ROOT / "training" / "resources" / "crop_yield.csv").read_bytes()
    assert lineage.data == "builtin"
    assert lineage.sha256 == hashlib.sha256(csv).hexdigest()
    assert (lineage.fit_rows, lineage.holdout_rows, lineage.folds) == (15, 0, None)
    assert (lineage.compared_with, lineage.comparison, lineage.forced) == (None, None, False)
    assert lineage.project_version == __version__

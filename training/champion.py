"""The model a new fit is compared with (``--compare-with``): a model-store entry or the
default version of a running service.

A store entry is read through the contract (metadata via ``read_metadata``, weights via
safetensors) and its intervals are computed from its metadata as the service would. A
service is asked ``GET /metadata`` for its default version, then ``POST /predict`` with
that version pinned (``X-Model-Version``, so a canary split cannot answer from another)
and an ``interval`` per coverage level: the store here need not hold that version.
Anything that makes the comparison impossible raises :class:`ChampionError`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from contract import (
    FEATURE_NAMES,
    TARGET_NAMES,
    WEIGHTS_FILE,
    WeightsFileError,
    check_weights_file,
    store_home,
)
from contract.metadata import MetadataError, read_metadata
from training.compare import COVERAGE_LEVELS, Predictions, with_bounds

ROWS_PER_REQUEST = 1_000
"""Well under the service's default row limit (CROP_YIELD_MAX_ROWS_PER_REQUEST, 10,000)."""
TIMEOUT_S = 30.0


class ChampionError(ValueError):
    """The model to compare with cannot be used; the message names it and the problem."""


@dataclass(frozen=True)
class TrainedOn:
    """Which rows of its data a model was fitted on, as its metadata records them: the
    pipeline's holdout split of ``rows`` by ``seed`` and ``holdout_fraction`` (none when
    ``fit_rows == rows``). Says whether the champion's figures on this data are in-sample."""

    rows: int
    fit_rows: int
    seed: int
    holdout_fraction: float


class Champion(Protocol):
    @property
    def tag(self) -> str: ...

    @property
    def source(self) -> str:
        """'store', or the service's URL."""
        ...

    @property
    def data_sha256(self) -> str | None:
        """The digest of the data it was trained on, where its metadata records one."""
        ...

    @property
    def trained_on(self) -> TrainedOn | None:
        """The rows of that data it was fitted on, where its metadata records them."""
        ...

    def predict(self, rows: np.ndarray) -> Predictions: ...


def resolve(reference: str, token: str | None) -> Champion:
    """The champion ``reference`` names: an http(s):// URL or a model-store tag."""
    if reference.startswith(("http://", "https://")):
        return ServiceChampion.connect(reference.rstrip("/"), token)
    return StoreChampion.load(reference)


def _check_columns(tag: str, features: Any, targets: Any) -> None:
    if (tuple(features), tuple(targets)) != (FEATURE_NAMES, TARGET_NAMES):
        raise ChampionError(
            f"model {tag} predicts {list(targets)} from {list(features)}; this model predicts "
            f"{list(TARGET_NAMES)} from {list(FEATURE_NAMES)}: they cannot be compared"
        )


def _names(columns: Any) -> list[Any]:
    """The ``name`` of each column description, or [] when it is not a list of them."""
    if not isinstance(columns, list):
        return []
    return [c.get("name") if isinstance(c, dict) else None for c in columns]


@dataclass(frozen=True)
class StoreChampion:
    tag: str
    weight: np.ndarray
    bias: np.ndarray
    intervals: tuple[np.ndarray, np.ndarray, int] | None
    """(XᵀX)⁻¹, residual variance per target, dof; None for an entry trained before intervals."""
    data_sha256: str | None
    trained_on: TrainedOn | None = None
    source: str = "store"

    @classmethod
    def load(cls, reference: str) -> StoreChampion:
        import bentoml
        from bentoml.exceptions import NotFound
        from safetensors.numpy import load_file

        from training.store import InvalidTagError, parse_tag

        name, _, version = reference.partition(":")
        try:
            tag = parse_tag(name, version or None)
        except InvalidTagError as exc:
            raise ChampionError(f"{exc} (and not an http:// or https:// URL)") from None
        try:
            model = bentoml.models.get(tag)
        except NotFound:
            raise ChampionError(f"model {tag} is not in the model store ({store_home()})") from None
        found, raw = str(model.tag), model.info.metadata
        if "features" in raw and "targets" in raw:
            _check_columns(found, _names(raw["features"]), _names(raw["targets"]))
        try:
            meta = read_metadata(raw, found)
            check_weights_file(Path(model.path), found)
        except (MetadataError, WeightsFileError) as exc:
            raise ChampionError(str(exc)) from None
        weights = load_file(str(Path(model.path) / WEIGHTS_FILE))
        basis = meta.intervals
        return cls(
            tag=found,
            weight=weights["weight"].astype(np.float64),
            bias=weights["bias"].astype(np.float64),
            intervals=None
            if basis is None
            else (
                np.asarray(basis.xtx_inverse),
                np.array([basis.residual_variance[t] for t in TARGET_NAMES]),
                basis.dof,
            ),
            data_sha256=meta.data.sha256,
            trained_on=TrainedOn(
                meta.data.rows, meta.data.train_rows, meta.seed, meta.hyperparameters.holdout_fraction
            ),
        )

    def predict(self, rows: np.ndarray) -> Predictions:
        values = rows @ self.weight.T + self.bias
        if self.intervals is None:
            return Predictions(values, None)
        return with_bounds(values, rows, *self.intervals)


def _trained_on(meta: Any) -> TrainedOn | None:
    """From a service's ``GET /metadata`` ``training`` (the store entry's data, seed and
    hyperparameters); None when it does not say."""
    try:
        training = meta["training"]
        data, fraction = training["data"], training["hyperparameters"]["holdout_fraction"]
        rows, fit_rows, seed = data["rows"], data["train_rows"], training["seed"]
    except (TypeError, KeyError):
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (rows, fit_rows, seed)):
        return None
    if not isinstance(fraction, int | float) or isinstance(fraction, bool):
        return None
    return TrainedOn(rows, fit_rows, seed, float(fraction))


@dataclass(frozen=True)
class ServiceChampion:
    url: str
    token: str | None
    tag: str
    version: str
    has_intervals: bool
    data_sha256: str | None
    trained_on: TrainedOn | None = None

    @property
    def source(self) -> str:
        return self.url

    @classmethod
    def connect(cls, url: str, token: str | None) -> ServiceChampion:
        meta = _call(url, token, "GET", "/metadata")
        try:
            tag, features, targets = meta["model"], _names(meta["features"]), _names(meta["targets"])
            _, version = tag.split(":")
            digest = ((meta.get("training") or {}).get("data") or {}).get("sha256")
        except (TypeError, KeyError, ValueError, AttributeError):
            raise ChampionError(f"{url} answered GET /metadata, but not like a crop-yield service") from None
        _check_columns(tag, features, targets)
        return cls(url, token, tag, version, meta.get("intervals") is not None, digest, _trained_on(meta))

    def predict(self, rows: np.ndarray) -> Predictions:
        values: list[np.ndarray] = []
        bounds: dict[float, tuple[list[np.ndarray], list[np.ndarray]]] = {
            lv: ([], []) for lv in COVERAGE_LEVELS
        }
        for start in range(0, len(rows), ROWS_PER_REQUEST):
            inputs = [
                dict(zip(FEATURE_NAMES, map(float, row), strict=True))
                for row in rows[start : start + ROWS_PER_REQUEST]
            ]
            if not self.has_intervals:  # asking would be refused: the model records none
                values.append(self._ask(inputs, None)[0])
                continue
            for level in COVERAGE_LEVELS:  # one level per request: the API takes one
                got, lower, upper = self._ask(inputs, level)
                if level == COVERAGE_LEVELS[0]:
                    values.append(got)
                bounds[level][0].append(lower)
                bounds[level][1].append(upper)
        if not self.has_intervals:
            return Predictions(np.concatenate(values), None)
        return Predictions(
            np.concatenate(values),
            {lv: (np.concatenate(low), np.concatenate(high)) for lv, (low, high) in bounds.items()},
        )

    def _ask(self, inputs: list[dict[str, float]], level: float | None) -> tuple[np.ndarray, ...]:
        """(predictions, lower, upper), each rows×targets; the bounds only when ``level`` is given."""
        body: dict[str, Any] = {"inputs": inputs} | ({} if level is None else {"interval": level})
        answer = _call(self.url, self.token, "POST", "/predict", body, self.version)
        try:
            model, predictions = answer["model"], answer["predictions"]
            if model != self.tag:  # the default changed mid-run, or the pin was ignored
                raise ChampionError(f"{self.url} answered POST /predict from {model}, not {self.tag}")
            if len(predictions) != len(inputs):
                raise ChampionError(f"{self.url} answered POST /predict with {len(predictions)} predictions")
            keys = (
                [TARGET_NAMES]
                if level is None
                else [
                    TARGET_NAMES,
                    *(tuple(f"{t}_{side}" for t in TARGET_NAMES) for side in ("lower", "upper")),
                ]
            )
            return tuple(np.array([[p[k] for k in names] for p in predictions], np.float64) for names in keys)
        except (TypeError, KeyError):
            raise ChampionError(
                f"{self.url} answered POST /predict without the predictions asked for"
            ) from None


def _call(
    url: str, token: str | None, method: str, path: str, body: Any = None, version: str | None = None
) -> Any:
    """One JSON request (stdlib only: training does not depend on an HTTP client)."""
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if version is not None:
        headers["X-Model-Version"] = version
    request = urllib.request.Request(url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            text = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read(500).decode(errors="replace").strip()
        hint = (
            "; give its bearer token with --token or CROP_YIELD_AUTH_TOKEN"
            if exc.code == 401 and not token
            else ""
        )
        raise ChampionError(f"{url} answered {method} {path} with {exc.code}: {detail}{hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise ChampionError(f"{url} does not answer {method} {path}: {reason}") from None
    try:
        return json.loads(text)
    except ValueError:
        raise ChampionError(f"{url} answered {method} {path} with something that is not JSON") from None

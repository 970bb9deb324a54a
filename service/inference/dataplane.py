"""The data plane: what every front end calls, in numpy, with no protocol in sight.

A front end decodes its request into a float32 n×3 matrix (``contract.FEATURE_NAMES``
order), awaits ``DataPlane.predict`` and encodes the ``Prediction`` it gets back: the model's
outputs, the interval bounds when asked for, and the extrapolation flags. The data plane
owns the rest: routing rows through the batcher or straight to the model, counting rows
per endpoint and per model call, feeding model monitoring, and refusing with its own
exceptions (``service.inference.errors``), which each front end answers in its protocol.

It is created empty when the service module is imported (nothing heavy), handed to every
front end, and loaded by the worker (``load`` in the service's ``__init__``, ``start`` in
its start-up hook), so the front ends receive it instead of looking the service up.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from service.inference.batching import RowBatcher
from service.inference.errors import ModelLoadError, NotReadyError, VersionNotServedError
from service.inference.intervals import Intervals
from service.inference.training_range import TrainingBox
from service.observability import metrics, monitoring
from service.settings import Settings

if TYPE_CHECKING:  # the worker hands the loaded model in; torch stays out of this module
    from service.inference.model import LinearModel


@dataclass
class Prediction:
    """One call's answer: n×2 float32 ``outputs`` and, when asked for, the interval ``bounds``
    (``{"apples_lower": column, ...}``) at confidence ``level``; ``tag`` names the model
    version that produced them, so an answer names its version from the call itself, not
    from whatever the plane serves by the time the answer is encoded."""

    rows: np.ndarray
    outputs: np.ndarray
    bounds: dict[str, np.ndarray] | None
    level: float | None
    box: TrainingBox = field(repr=False)
    tag: str = ""

    @property
    def version(self) -> str:
        return self.tag.partition(":")[2]

    @cached_property
    def outside(self) -> np.ndarray:
        """n×features booleans: the feature lies outside the training range (computed on first use)."""
        return self.box.outside(self.rows)

    @property
    def extrapolated(self) -> np.ndarray:
        """Per row: any feature outside the training range."""
        return np.asarray(self.outside.any(axis=1))


class Plane(Protocol):
    """What the front ends use of the data plane (``DataPlane``; tests pass stand-ins)."""

    @property
    def ready(self) -> bool: ...

    @property
    def model(self) -> LinearModel: ...

    @property
    def model_name(self) -> str: ...

    @property
    def model_version(self) -> str: ...

    @property
    def versions(self) -> list[str]: ...

    @property
    def max_bulk_rows(self) -> int: ...

    async def predict(
        self,
        rows: np.ndarray,
        endpoint: str,
        interval: float | None = None,
        batch: bool = True,
        version: str | None = None,
    ) -> Prediction: ...


class _Loaded:
    """What exists once a model is loaded: the model and everything computed from it."""

    def __init__(self, model: LinearModel) -> None:
        self.model = model
        self.name, _, self.version = model.tag.partition(":")
        feature_ranges, target_ranges = monitoring.training_ranges(
            model.metadata, model.weight.cpu().numpy(), model.bias.cpu().numpy()
        )
        self.box = TrainingBox(feature_ranges)
        self.monitor = monitoring.Monitor(feature_ranges, target_ranges, self.box)
        self.intervals = Intervals(model.metadata.intervals, model.tag)


class DataPlane:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loaded: _Loaded | None = None
        """The default version: it answers calls that name none."""
        self._versions: dict[str, _Loaded] = {}
        """Every served version, the default first, then newest first."""
        self._batcher: RowBatcher | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._sink: monitoring.PrometheusSink | None = None
        self._counters: dict[str, Any] = {}
        self.ready = False
        """True once the model is loaded, warmed up and the start-up hook has run (/readyz)."""

    # -- lifecycle (the service's __init__, start-up and shutdown hooks) ------------------

    def load(self, model: LinearModel, *others: LinearModel) -> None:
        """Take ``model`` (the default version) and ``others`` (newest first) into service,
        each after a warm-up call (which also checks it is finite)."""
        served = [_Loaded(m) for m in (model, *others)]
        for loaded in served:
            # Warm-up: the first call pays for lazy initialisation (and CUDA context creation).
            middle = ((loaded.box.lows + loaded.box.highs) / 2).reshape(1, -1)
            if not np.all(np.isfinite(loaded.model.predict(middle))):
                raise ModelLoadError(f"model {loaded.model.tag} gives non-finite predictions")
        self._versions = {loaded.version: loaded for loaded in served}
        self._loaded = served[0]

    def start(self) -> None:
        """In the worker's event loop: the batcher, the model-info metric, monitoring's flush."""
        loaded = self._require()
        if self.settings.batching:
            self._batcher = RowBatcher(
                self._call_model,
                self.settings.max_batch_size,
                self.settings.max_latency_ms,
                on_model_call=metrics.rows_per_model_call().observe,
            )
        device = str(loaded.model.device)
        metrics.model_info().labels(model=loaded.name, version=loaded.version, device=device).set(1)
        if self.settings.monitoring:
            self._sink = monitoring.PrometheusSink(loaded.monitor)
            self._tasks.append(asyncio.get_running_loop().create_task(self._sink.run()))
        self.ready = True

    def stop(self) -> None:
        """At shutdown: no more batches, the flush task cancelled, and one last flush, so the
        model calls of the last second before the shutdown reach the metrics too."""
        self.ready = False
        if self._batcher is not None:
            self._batcher.shutdown()
            self._batcher = None
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        if self._sink is not None:
            sink, self._sink = self._sink, None
            sink.flush()

    # -- what the front ends ask ----------------------------------------------------------

    @property
    def model(self) -> LinearModel:
        return self._require().model

    @property
    def model_name(self) -> str:
        return self._require().name

    @property
    def model_version(self) -> str:
        return self._require().version

    @property
    def versions(self) -> list[str]:
        """The served versions, the default first, then newest first."""
        self._require()
        return list(self._versions)

    @property
    def max_bulk_rows(self) -> int:
        return self.settings.max_bulk_rows

    async def predict(
        self,
        rows: np.ndarray,
        endpoint: str,
        interval: float | None = None,
        batch: bool = True,
        version: str | None = None,
    ) -> Prediction:
        """float32 n×3 → the outputs of ``version`` (the default when None) and bounds at
        ``interval``, counted under ``endpoint``; ``VersionNotServedError`` for a version not
        served.

        With ``batch``, up to the /predict row limit, rows of the default version share a
        model call with the rows of concurrent calls of any endpoint; larger calls would only
        hold the batch up, and bulk endpoints pass ``batch=False``. Calls naming another
        version go straight to it (they are the exception: canaries and comparisons).
        """
        default = self._require()
        loaded = default if version is None else self._versions.get(version)
        if loaded is None:
            raise VersionNotServedError(
                f"version {version!r} of model {default.name!r} is not served here; served: "
                + ", ".join(repr(v) for v in self._versions)
            )
        if (
            loaded is default
            and batch
            and self._batcher is not None
            and len(rows) <= self.settings.max_rows_per_request
        ):
            outputs = await self._batcher(rows)
        else:
            outputs = self._call_model(rows, loaded)
            metrics.rows_per_model_call().observe(len(rows))
        self._rows_predicted(endpoint).inc(len(rows))
        bounds = None if interval is None else loaded.intervals.bounds(rows, outputs, interval)
        return Prediction(rows, outputs, bounds, interval, loaded.box, loaded.model.tag)

    # -- inside ---------------------------------------------------------------------------

    def _require(self) -> _Loaded:
        if self._loaded is None:
            raise NotReadyError("the model is still loading")
        return self._loaded

    def _call_model(self, rows: np.ndarray, loaded: _Loaded | None = None) -> np.ndarray:
        """Every model call of every endpoint (of the default version unless ``loaded`` says
        another): predict, then fold the call into monitoring. Monitoring watches the default
        version only: its histograms' buckets are that version's training range."""
        default = self._require()
        loaded = loaded or default
        outputs = loaded.model.predict(rows)
        if self.settings.monitoring and loaded is default:
            loaded.monitor.observe(rows, outputs)
        return outputs

    def _rows_predicted(self, endpoint: str) -> Any:
        """The endpoint's row counter, its labels looked up once."""
        counter = self._counters.get(endpoint)
        if counter is None:
            counter = self._counters[endpoint] = metrics.rows_predicted().labels(endpoint=endpoint)
        return counter

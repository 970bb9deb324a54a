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
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from service.inference import feedback as ground_truth
from service.inference.batching import RowBatcher
from service.inference.errors import (
    DataPlaneError,
    ModelLoadError,
    NotReadyError,
    VersionLoadError,
    VersionNotServedError,
)
from service.inference.explain import Explainer, explanation
from service.inference.intervals import Intervals
from service.inference.routing import Split, parse_weights
from service.inference.serving import Serving
from service.inference.shadow import Shadow
from service.inference.training_range import TrainingBox
from service.observability import context, deferred, metrics, monitoring, statistics
from service.observability.tracing import TRACE
from service.settings import Settings

log = logging.getLogger("crop_yield.dataplane")
DRAIN_POLL_S = 0.01

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
    explainer: Explainer | None = field(default=None, repr=False)
    """The version's explainer (None: its metadata records no training means); used only by
    calls that ask for an explanation (``explanation``)."""

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

    def explanation(self) -> tuple[np.ndarray, np.ndarray]:
        """(contributions float32 [n, targets, features], base values float32 [targets]): the
        rows' exact Shapley values (``service.inference.explain``); ``NoExplanationsError``,
        naming this version, when its metadata records no training means."""
        try:
            return explanation(self.explainer, self.rows, self.tag)
        except DataPlaneError as exc:
            exc.version = self.version
            raise


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

    @property
    def serving(self) -> Serving: ...

    def model_of(self, version: str) -> LinearModel: ...

    async def predict(
        self,
        rows: np.ndarray,
        endpoint: str,
        interval: float | None = None,
        batch: bool = True,
        version: str | None = None,
    ) -> Prediction: ...

    def feedback(
        self, rows: np.ndarray, actuals: np.ndarray, version: str | None = None
    ) -> ground_truth.Scored: ...


class _Loaded:
    """One served version: the model, everything computed from it, its batcher and metrics,
    and how many calls are using it (an unloaded version is dropped once none is)."""

    def __init__(self, model: LinearModel) -> None:
        self.model = model
        self.name, _, self.version = model.tag.partition(":")
        feature_ranges, target_ranges = monitoring.training_ranges(
            model.metadata, model.weight.cpu().numpy(), model.bias.cpu().numpy()
        )
        self.box = TrainingBox(feature_ranges)
        self.monitor = monitoring.Monitor(feature_ranges, target_ranges, self.box, model.metadata.reference)
        self.intervals = Intervals(model.metadata.intervals, model.tag)
        self.explainer = Explainer.of(
            model.metadata.reference, model.weight.cpu().numpy(), model.bias.cpu().numpy()
        )
        self.batcher: RowBatcher | None = None
        self.sink: monitoring.PrometheusSink | None = None
        self.in_flight = 0
        self.counters: dict[str, Any] = {}
        """Rows predicted by endpoint, for this version (bound on first use)."""

    def warm_up(self) -> None:
        """The first call pays for lazy initialisation (and CUDA context creation); it also
        checks the model gives finite answers."""
        middle = ((self.box.lows + self.box.highs) / 2).reshape(1, -1)
        if not np.all(np.isfinite(self.model.predict(middle))):
            raise ModelLoadError(f"model {self.model.tag} gives non-finite predictions")

    def rows_predicted(self, endpoint: str) -> Any:
        """The endpoint's row counter for this version, its labels looked up once."""
        counter = self.counters.get(endpoint)
        if counter is None:
            counter = self.counters[endpoint] = deferred.Counter(
                metrics.rows_predicted().labels(endpoint=endpoint, version=self.version)
            )
        return counter


@cache
def rows_per_model_call() -> deferred.Histogram:
    """Rows in each model call, written to Prometheus once a second (``deferred``)."""
    return deferred.Histogram(metrics.rows_per_model_call())


@dataclass(frozen=True)
class Served:
    """What the plane serves at one moment; replaced whole when the set changes, so a call
    that took it keeps its version to the end."""

    default: _Loaded
    versions: dict[str, _Loaded]
    """Every served version, the default first, then newest first."""
    split: Split | None = None
    """Canary weights for calls that name no version (None: the default answers them)."""

    def not_served(self, version: str | None) -> VersionNotServedError:
        """The refusal of a call that names a version not served here (it lists those that are)."""
        return VersionNotServedError(
            f"version {version!r} of model {self.default.name!r} is not served here; served: "
            + ", ".join(repr(v) for v in self.versions)
        )

    def pick(self, version: str | None, key: str | None) -> _Loaded | None:
        if version is not None:
            return self.versions.get(version)
        if self.split is None:
            return self.default
        return self.versions[self.split.pick(key)]


class DataPlane:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._max_batched_rows = settings.max_rows_per_request
        self._served: Served | None = None
        self._weights = None if settings.version_weights is None else parse_weights(settings.version_weights)
        self._started = False
        self._tasks: list[asyncio.Task[Any]] = []
        self.shadow: Shadow | None = None
        self._draining: dict[str, _Loaded] = {}
        """Versions left out of the set whose calls in flight are still finishing."""
        self.ready = False
        """True once the model is loaded, warmed up and the start-up hook has run (/readyz)."""

    # -- lifecycle (the service's __init__, start-up and shutdown hooks) ------------------

    def load(self, model: LinearModel, *others: LinearModel) -> None:
        """Take ``model`` (the default version) and ``others`` (newest first) into service,
        each after a warm-up call (which also checks it is finite)."""
        served = [_Loaded(m) for m in (model, *others)]
        for loaded in served:
            loaded.warm_up()
        self._served = self._snapshot(served[0], served)

    def start(self) -> None:
        """In the worker's event loop: the batchers, the model-info metric, the once-a-second
        flush (monitoring's and the statistics')."""
        served = self._require()
        self._started = True
        for loaded in served.versions.values():
            self._start_version(loaded, loaded is served.default)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._flush_periodically()))
        if self.settings.shadow_version is not None:
            self.shadow = Shadow(self.settings.shadow_version)
            self._tasks.append(loop.create_task(self.shadow.run(self._versions_now)))
        self.ready = True

    def stop(self) -> None:
        """At shutdown: no more batches, the flush task cancelled, and one last flush, so the
        model calls of the last second before the shutdown reach the metrics too."""
        self.ready = False
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        if self._served is not None:
            for loaded in [*self._served.versions.values(), *self._draining.values()]:
                self._stop_version(loaded)

    async def change(
        self,
        versions: Sequence[str],
        default: str,
        load: Callable[[str], Awaitable[LinearModel]],
        drain_s: float,
    ) -> list[str]:
        """Serve ``versions`` (newest first) with ``default`` answering calls that name none.

        A version not served yet is loaded with ``load``, warmed up and started before the
        set changes; if any fails (``ModelLoadError`` from ``load`` or the warm-up) the set
        is left as it was (``VersionLoadError``). Then the new set replaces the old in one
        assignment: calls already running keep the version they started with, new calls see
        the new set. A version
        left out is drained in the background (its calls in flight finish, up to
        ``drain_s`` seconds) before its batcher stops. Returns the versions left out."""
        current = self._require()
        if default not in versions:
            raise ValueError(f"the default {default!r} is not among the versions {list(versions)}")
        fresh: list[_Loaded] = []
        for version in versions:  # nothing is started before all are loaded: a failure leaves no trace
            if version not in current.versions:
                try:
                    loaded = _Loaded(await load(version))
                    loaded.warm_up()
                except ModelLoadError as exc:
                    raise VersionLoadError(version, str(exc)) from None
                fresh.append(loaded)
        by_version = {**current.versions, **{loaded.version: loaded for loaded in fresh}}
        chosen = [by_version[v] for v in versions]
        new = self._snapshot(by_version[default], chosen)
        if self._started:
            for loaded in chosen:
                if loaded in fresh or (loaded is new.default) != (loaded is current.default):
                    self._start_version(loaded, loaded is new.default)
        self._served = new
        dropped = [loaded for v, loaded in current.versions.items() if v not in new.versions]
        self._tasks = [task for task in self._tasks if not task.done()]  # finished drains
        for loaded in dropped:
            self._draining[loaded.version] = loaded
            self._tasks.append(asyncio.get_running_loop().create_task(self._drain(loaded, drain_s)))
        return [loaded.version for loaded in dropped]

    # -- what the front ends ask ----------------------------------------------------------

    @property
    def draining(self) -> set[str]:
        """Versions left out of the set whose calls in flight are still finishing."""
        return set(self._draining)

    @property
    def served(self) -> Served:
        return self._require()

    @property
    def model(self) -> LinearModel:
        return self._require().default.model

    @property
    def model_name(self) -> str:
        return self._require().default.name

    @property
    def model_version(self) -> str:
        return self._require().default.version

    @property
    def versions(self) -> list[str]:
        """The served versions, the default first, then newest first."""
        return list(self._require().versions)

    @property
    def max_bulk_rows(self) -> int:
        return self.settings.max_bulk_rows

    @property
    def serving(self) -> Serving:
        """How calls are served (Triton's model configuration reports it)."""
        device = self.model.device
        return Serving(
            max_rows=self.settings.max_bulk_rows,
            batching=self.settings.batching,
            max_batched_rows=self._max_batched_rows,
            max_latency_ms=self.settings.max_latency_ms,
            workers=self.settings.workers,
            gpu=(device.index or 0) if device.type == "cuda" else None,
        )

    def model_of(self, version: str) -> LinearModel:
        """The model of a served ``version``."""
        return self._require().versions[version].model

    async def predict(
        self,
        rows: np.ndarray,
        endpoint: str,
        interval: float | None = None,
        batch: bool = True,
        version: str | None = None,
    ) -> Prediction:
        """float32 n×3 → the outputs of ``version`` and bounds at ``interval``, counted under
        ``endpoint``; ``VersionNotServedError`` for a version not served. A call naming no
        version goes to the default, or where the canary weights send its routing key (the
        request's, ``service.observability.context.ROUTING_KEY``).

        With ``batch``, up to the /predict row limit, rows share a model call with the rows
        of concurrent calls of any endpoint to the same version; larger calls would only hold
        the batch up, and bulk endpoints pass ``batch=False``.
        """
        served = self._served
        if served is None:
            raise NotReadyError("the model is still loading")
        if version is None and served.split is None:  # the common case, without a call
            loaded: _Loaded | None = served.default
        else:
            loaded = served.pick(version, None if served.split is None else context.ROUTING_KEY.get())
        if loaded is None:
            raise served.not_served(version)
        trace = TRACE.get()
        if trace is not None and trace.span is not None:  # a sampled request: its predict span
            trace.mark("predict_start", len(rows))
        call = statistics.CALL.get()
        loaded.in_flight += 1  # no await since the set was read: a drain cannot miss this call
        started = time.perf_counter()
        try:
            if batch and loaded.batcher is not None and len(rows) <= self._max_batched_rows:
                outputs = await loaded.batcher(rows)
                infer_s = loaded.batcher.seconds_of(outputs)
            else:
                outputs = self._call_model(rows, loaded)
                infer_s = time.perf_counter() - started
                rows_per_model_call().observe(len(rows))
        except DataPlaneError as exc:
            exc.version = loaded.version
            raise
        finally:
            loaded.in_flight -= 1
            if trace is not None and trace.span is not None:
                trace.mark("predict_end")
        if call is not None:  # Triton's statistics (service.observability.statistics)
            call.model_start, call.model_end = started, time.perf_counter()
            call.infer_s = infer_s
            call.version = loaded.version
        (loaded.counters.get(endpoint) or loaded.rows_predicted(endpoint)).inc(len(rows))
        if version is None and self.shadow is not None:
            self.shadow.offer(rows, outputs, loaded.version)
        try:
            bounds = None if interval is None else loaded.intervals.bounds(rows, outputs, interval)
        except DataPlaneError as exc:  # no interval statistics
            exc.version = loaded.version
            raise
        return Prediction(rows, outputs, bounds, interval, loaded.box, loaded.model.tag, loaded.explainer)

    def feedback(
        self, rows: np.ndarray, actuals: np.ndarray, version: str | None = None
    ) -> ground_truth.Scored:
        """Ground truth (``POST /feedback``): the observed n×targets ``actuals`` against what
        ``version`` (the default when None) predicts for the float32 n×3 ``rows``, with the
        90% and 95% intervals, added to the ``crop_yield_feedback_*`` metrics;
        ``VersionNotServedError`` for a version not served. The model is called directly and
        nothing else counts the rows: they were predicted when they were served, so they are
        not predictions again (not in the row counts, the batch sizes, monitoring, the shadow)."""
        served = self._require()
        loaded = served.default if version is None else served.versions.get(version)
        if loaded is None:
            raise served.not_served(version)
        half = ground_truth.half_widths(loaded.intervals, rows)
        scored = ground_truth.score(loaded.model.predict(rows), actuals, half, loaded.model.tag)
        ground_truth.count(scored)
        return scored

    # -- inside ---------------------------------------------------------------------------

    def _require(self) -> Served:
        if self._served is None:
            raise NotReadyError("the model is still loading")
        return self._served

    def _versions_now(self) -> dict[str, _Loaded]:
        return self._require().versions

    def _snapshot(self, default: _Loaded, newest_first: Sequence[_Loaded]) -> Served:
        ordered = {default.version: default, **{loaded.version: loaded for loaded in newest_first}}
        split = None
        if self._weights is not None:
            split = Split(self._weights, ordered)
            if not split:
                log.warning("CROP_YIELD_VERSION_WEIGHTS names no served version; the default answers all")
                split = None
        return Served(default, ordered, split)

    def _start_version(self, loaded: _Loaded, default: bool) -> None:
        """Its batcher and monitoring sink (once), and its line of the model-info metric."""
        if loaded.batcher is None and self.settings.batching:
            loaded.batcher = RowBatcher(
                lambda rows: self._call_model(rows, loaded),
                self.settings.max_batch_size,
                self.settings.max_latency_ms,
                on_model_call=rows_per_model_call().observe,
            )
        if loaded.sink is None and self.settings.monitoring:
            loaded.sink = monitoring.PrometheusSink(loaded.monitor, loaded.version)
        ground_truth.export_version(loaded.model.metadata, loaded.version)
        self._model_info(loaded, default)

    def _model_info(self, loaded: _Loaded, default: bool | None) -> None:
        """1 on the version's line with its ``default`` label, 0 on the other (a multiprocess
        gauge cannot drop a line); ``default=None``: the version is no longer served."""
        info = metrics.model_info()
        device = str(loaded.model.device)
        for marked in (True, False):
            value = 1 if default is marked else 0
            info.labels(
                model=loaded.name, version=loaded.version, device=device, default=str(marked).lower()
            ).set(value)

    async def _drain(self, loaded: _Loaded, drain_s: float) -> None:
        """A version left out of the set: its calls in flight finish, then it stops."""
        deadline = asyncio.get_running_loop().time() + drain_s
        while loaded.in_flight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)
        if loaded.in_flight:
            log.warning(
                "version %s still had %d calls after %g s; stopping it",
                loaded.version,
                loaded.in_flight,
                drain_s,
            )
        self._stop_version(loaded)
        if self._draining.get(loaded.version) is loaded:
            del self._draining[loaded.version]
        if loaded.version not in self._require().versions:  # not loaded again meanwhile
            self._model_info(loaded, None)

    def _stop_version(self, loaded: _Loaded) -> None:
        if loaded.batcher is not None:
            loaded.batcher.shutdown()
            loaded.batcher = None
        if loaded.sink is not None:
            sink, loaded.sink = loaded.sink, None
            sink.flush()

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(monitoring.FLUSH_EVERY_S)
            statistics.STATISTICS.flush()
            deferred.flush_all()
            if self._served is not None and self.settings.monitoring:
                for loaded in self._served.versions.values():
                    if loaded.sink is not None:
                        loaded.sink.flush()

    def _call_model(self, rows: np.ndarray, loaded: _Loaded) -> np.ndarray:
        """Every model call of every endpoint: predict, then fold the call into that
        version's monitoring (its histograms' buckets are its own training range)."""
        outputs = loaded.model.predict(rows)
        statistics.STATISTICS.executed(loaded.version, len(rows))
        if self.settings.monitoring:
            if len(rows) < monitoring.DEFER_ROWS:
                loaded.monitor.observe(rows, outputs)
            else:
                # A bulk call's monitoring (some 30 ns a row) runs once the answer is on its
                # way: the loop's next turn, after the handler wrote the response. Nothing
                # writes to rows or outputs after this call.
                asyncio.get_running_loop().call_soon(loaded.monitor.observe, rows, outputs)
        return outputs

"""Model control: how the served set changes while serving (``CROP_YIELD_MODEL_CONTROL``,
Triton's modes), and the model-repository calls that read and change it.

- ``none``: the set chosen at start is kept.
- ``poll``: each worker lists the model store every ``CROP_YIELD_CONTROL_INTERVAL`` and
  serves what the version policy selects from it: a version trained into the store is
  loaded, a deleted one drained and unloaded. A version that fails to load is left out
  (and the index says why) until its store entry changes.
- ``explicit``: the repository calls (``load``, ``unload``, ``set_default``) change the
  served-set file (``service.inference.served_set``), which every worker follows.

Each worker runs one ``ModelControl``; changes in one worker are serialized by a lock, and
the data plane swaps sets whole (``DataPlane.change``), so calls never see half a change.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from service.inference import served_set, store
from service.inference.errors import (
    ControlError,
    NotConvergedError,
    VersionLoadError,
    VersionNotServedError,
)
from service.inference.served_set import ServedSet
from service.inference.versions import PolicyError, VersionPolicy
from service.settings import Settings

if TYPE_CHECKING:
    from service.inference.dataplane import DataPlane
    from service.inference.model import LinearModel

log = logging.getLogger("crop_yield.control")
State = Literal["READY", "UNAVAILABLE", "UNLOADING"]
CONVERGE_S = 10.0
"""How long a repository call waits for every worker to serve the new set before it answers 503."""
LOCK_POLL_S = 0.02


@dataclass(frozen=True)
class IndexEntry:
    """One line of the repository index (Triton's fields, and whether it is the default)."""

    name: str
    version: str
    state: State
    reason: str
    default: bool = False


class Control(Protocol):
    """What the repository routes use of the model control (``ModelControl``; tests pass stand-ins)."""

    async def index(self, ready_only: bool = False) -> list[IndexEntry]: ...

    async def load(self, version: str | None) -> None: ...

    async def unload(self, version: str) -> None: ...

    async def set_default(self, version: str) -> None: ...


class ModelControl:
    def __init__(
        self, settings: Settings, plane: DataPlane, load_model: Callable[[Any, Any], LinearModel]
    ) -> None:
        """``load_model(store entry, device)``: ``LinearModel.from_store`` (torch: the worker's)."""
        self.settings = settings
        self.mode = settings.model_control
        self.plane = plane
        self.path = served_set.path_of(settings.served_set_file)
        self._load_model = load_model
        self._failed: dict[str, tuple[str, str]] = {}
        """version → (the store entry's creation time, why its load failed): not retried until it changes."""
        self._lock = asyncio.Lock()
        self._turn = asyncio.Lock()
        """One look at the file (or store) or one repository call at a time in this worker: a
        look that read the file before a call rewrote it must not apply the old content after."""
        self._signature: tuple[int, int, int] | None = None
        self._applied: str | None = None
        self._complaint: str | None = None

    # -- following the store or the file (the worker's background task) -------------------

    async def run(self) -> None:
        if self.mode == "explicit":
            found = await asyncio.to_thread(self._read_file)
            served_set.acknowledge(found[1] if found else "none")  # what it loaded at start
        while self.mode != "none":
            try:
                await self.tick()
            except Exception:  # keep following (and look at the file again); the log says why
                self._signature = None
                log.exception("model control (%s) failed to look at the store", self.mode)
            await asyncio.sleep(self.settings.control_interval)

    async def tick(self) -> None:
        async with self._turn:
            if self.mode == "poll":
                await self._follow_store()
            elif self.mode == "explicit":
                await self._follow_file()

    async def _follow_store(self) -> None:
        models = await asyncio.to_thread(store.stored, self.settings.model_name)
        usable = {v: m for v, m in models.items() if not self._known_bad(v, m)}
        try:
            chosen, default = store.selected(self.settings, usable)
        except PolicyError as exc:
            self._complain(f"keeping the served set: {exc}")
            return
        with contextlib.suppress(VersionLoadError):  # recorded; the set stays as it was
            await self._serve(chosen, default, models)

    async def _follow_file(self) -> None:
        signature = served_set.signature(self.path)
        if signature == self._signature:
            return
        self._signature = signature
        try:
            found = await asyncio.to_thread(self._read_file)
        except PolicyError as exc:
            self._complain(f"keeping the served set: {exc}")
            return
        if found is None or found[1] == self._applied:
            return
        wanted, digest = found
        models = await asyncio.to_thread(store.stored, self.settings.model_name)
        if wanted.default not in models:
            self._complain(
                f"keeping the served set: the default {wanted.default!r} is not in the model store"
            )
            return
        try:
            await self._serve(self._newest_first(wanted.versions, models), wanted.default, models)
        except VersionLoadError as exc:
            self._complain(f"keeping the served set: {exc}")
            return
        self._applied = digest
        served_set.acknowledge(digest)

    # -- the repository calls --------------------------------------------------------------

    async def index(self, ready_only: bool = False) -> list[IndexEntry]:
        models = await asyncio.to_thread(store.stored, self.settings.model_name)
        served = self.plane.served
        recorded: dict[str, str] = {}
        if self.mode == "explicit":
            with contextlib.suppress(PolicyError):
                found = await asyncio.to_thread(self._read_file)
                recorded = found[0].unavailable if found else {}
        order = [v for v in self._newest_first(list(models), models)]
        order += [v for v in served.versions if v not in models]  # deleted from the store, still served
        entries = []
        for version in order:
            if version in served.versions:
                is_default = version == served.default.version
                entries.append(
                    IndexEntry(
                        served.default.name, version, "READY", "default" if is_default else "", is_default
                    )
                )
            elif version in self.plane.draining and not ready_only:
                entries.append(
                    IndexEntry(served.default.name, version, "UNLOADING", "calls in flight finish")
                )
            elif not ready_only:
                reason = (
                    self._failed.get(version, ("", ""))[1] or recorded.get(version) or self._why_not(version)
                )
                entries.append(IndexEntry(served.default.name, version, "UNAVAILABLE", reason))
        return entries

    async def load(self, version: str | None) -> None:
        """Add ``version`` (None: every version the policy selects) to the served set."""

        def change(current: ServedSet, models: dict[str, Any]) -> ServedSet:
            if version is None:
                chosen, _ = store.selected(self.settings.model_copy(update={"model_control": "none"}), models)
                added = [v for v in chosen if v not in current.versions]
            else:
                added = [] if version in current.versions else [version]
            return replace(current, versions=(*current.versions, *added))

        await self._edit(change, version)

    async def unload(self, version: str) -> None:
        def change(current: ServedSet, models: dict[str, Any]) -> ServedSet:
            if version == current.default:
                raise ControlError(
                    f"version {version!r} is the default: make another version the default first"
                )
            return replace(current, versions=tuple(v for v in current.versions if v != version))

        await self._edit(change, version)

    async def set_default(self, version: str) -> None:
        def change(current: ServedSet, models: dict[str, Any]) -> ServedSet:
            if version not in current.versions:
                raise ControlError(
                    f"version {version!r} is not served: load it first "
                    f"(served: {', '.join(current.versions)})"
                )
            return replace(current, default=version)

        await self._edit(change, version)

    async def _edit(
        self, change: Callable[[ServedSet, dict[str, Any]], ServedSet], version: str | None
    ) -> None:
        """Read-modify-write of the served-set file under its lock: the change is applied in
        this worker first (so a version that fails to load changes nothing but the index),
        then written, then every running worker is waited for."""
        if self.mode != "explicit":
            raise ControlError(
                f"model control is {self.mode!r}: the served set changes only with "
                "CROP_YIELD_MODEL_CONTROL=explicit"
            )
        if not _writable(self.path):
            raise ControlError(
                f"the served-set file {self.path} is read-only (a mounted ConfigMap?): edit it there instead"
            )
        async with self._turn, self._file_lock():
            models = await asyncio.to_thread(store.stored, self.settings.model_name)
            if version is not None and version not in models and version not in self.plane.served.versions:
                raise VersionNotServedError(
                    f"version {version!r} of model {self.settings.model_name!r} is not in the model store "
                    f"(it holds {', '.join(self._newest_first(list(models), models)) or 'none'})"
                )
            found = await asyncio.to_thread(self._read_file)
            served = self.plane.served
            current = found[0] if found else ServedSet(tuple(served.versions), served.default.version)
            wanted = change(current, models)
            try:
                await self._serve(self._newest_first(wanted.versions, models), wanted.default, models)
            except VersionLoadError as exc:
                failed = replace(current, unavailable={**current.unavailable, exc.version: exc.reason})
                await asyncio.to_thread(served_set.write, self.path, failed)
                raise
            kept = {v: r for v, r in wanted.unavailable.items() if v not in wanted.versions}
            digest = await asyncio.to_thread(served_set.write, self.path, replace(wanted, unavailable=kept))
            self._applied, self._signature = digest, served_set.signature(self.path)
            served_set.acknowledge(digest)
        await self._converged(digest)

    # -- inside ---------------------------------------------------------------------------

    async def _serve(self, versions: Sequence[str], default: str, models: dict[str, Any]) -> None:
        """Make the plane serve ``versions`` (newest first) with ``default``; a failed load is
        recorded (for the index, and so poll mode does not retry it) and raised."""
        async with self._lock:
            served = self.plane.served
            if set(versions) == set(served.versions) and default == served.default.version:
                return
            device = self.plane.model.device

            async def load(version: str) -> LinearModel:
                return await asyncio.to_thread(self._load_model, models[version], device)

            try:
                dropped = await self.plane.change(versions, default, load, self.settings.request_timeout)
            except VersionLoadError as exc:
                entry = models.get(exc.version)
                created = entry.info.creation_time.isoformat() if entry is not None else ""
                self._failed[exc.version] = (created, exc.reason)
                log.error("%s; still serving %s", exc, ", ".join(served.versions))
                raise
            self._complaint = None
            log.info(
                "now serving %s of %s (default %s)%s",
                ", ".join(versions),
                self.plane.model_name,
                default,
                f"; unloading {', '.join(dropped)}" if dropped else "",
            )

    def _known_bad(self, version: str, entry: Any) -> bool:
        failed = self._failed.get(version)
        return failed is not None and failed[0] == entry.info.creation_time.isoformat()

    def _why_not(self, version: str) -> str:
        if self.mode == "explicit":
            return f"not loaded (POST /v2/repository/models/{self.settings.model_name}/load)"
        policy = store.policy_of(self.settings)
        return f"not selected by the version policy {policy}"

    def _newest_first(self, versions: Sequence[str], models: dict[str, Any]) -> list[str]:
        present = tuple(v for v in versions if v in models)
        ordered = (
            VersionPolicy("specific", versions=present).select(store.entries_of(models)) if present else []
        )
        return ordered + [v for v in versions if v not in models and v in self.plane.served.versions]

    def _read_file(self) -> tuple[ServedSet, str] | None:
        return served_set.read(self.path)

    def _complain(self, message: str) -> None:
        """Log a reason to keep the set once, not every tick."""
        if message != self._complaint:
            self._complaint = message
            log.error(message)

    @contextlib.asynccontextmanager
    async def _file_lock(self) -> AsyncIterator[None]:
        """``served_set.locked`` without blocking the event loop: try, then wait a little."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{self.path}.lock", "w") as lock:
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(LOCK_POLL_S)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    async def _converged(self, digest: str) -> None:
        deadline = asyncio.get_running_loop().time() + CONVERGE_S
        while True:
            acks = await asyncio.to_thread(served_set.acknowledgements)
            behind = [pid for pid, applied in acks.items() if applied != digest]
            if not behind:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise NotConvergedError(
                    f"the served set is recorded, but {len(behind)} of {len(acks)} workers do not serve it "
                    f"yet after {CONVERGE_S:g} s (they follow {self.path})"
                )
            await asyncio.sleep(min(0.05, self.settings.control_interval))


def _writable(path: Path) -> bool:
    """Whether the served-set file (or, before it exists, its folder) can be replaced."""
    folder = path.parent
    return os.access(folder, os.W_OK) if folder.exists() else os.access(_existing_parent(folder), os.W_OK)


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path

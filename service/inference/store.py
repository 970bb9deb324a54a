"""The model store's entries a worker serves: the version policy (``versions``) applied to
what BentoML's store holds (its own, or a built bento's), or under explicit model control
the served-set file (``served_set``), with the default version."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from contract import SAVE_LOCK_FILE, store_home
from service.inference import served_set
from service.inference.errors import missing_model_message
from service.inference.versions import Entry, PolicyError, VersionPolicy, default_of
from service.settings import Settings


def policy_of(settings: Settings) -> VersionPolicy:
    """CROP_YIELD_VERSION_POLICY, else the version CROP_YIELD_MODEL_TAG pins, else latest:1."""
    if settings.version_policy is not None:
        return VersionPolicy.parse(settings.version_policy)
    pinned = settings.model_tag.partition(":")[2]
    return (
        VersionPolicy("specific", versions=(pinned.lower(),))
        if pinned and pinned != "latest"
        else VersionPolicy("latest")
    )


@contextmanager
def _no_save_in_progress() -> Iterator[None]:
    """Shared hold of training's save lock (``contract.SAVE_LOCK_FILE``) where the store has one."""
    lock_path = store_home() / "models" / SAVE_LOCK_FILE
    try:
        lock = lock_path.open("r")
    except OSError:  # no lock file (nothing saved here by training), or a read-only store
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def stored(name: str) -> dict[str, Any]:
    """Every ``bentoml.models`` entry of model ``name`` by version (blocking: file reads)."""
    import bentoml
    from bentoml.exceptions import NotFound

    with _no_save_in_progress():
        try:
            return {str(m.tag.version): m for m in bentoml.models.list(name)}
        except NotFound:
            return {}


def entries_of(models: dict[str, Any]) -> list[Entry]:
    return [Entry(v, m.info.creation_time.isoformat()) for v, m in models.items()]


def selected(settings: Settings, models: dict[str, Any]) -> tuple[list[str], str]:
    """The versions the policy (or the served-set file, under explicit control) selects
    among ``models``, newest first, and the default; ``PolicyError`` saying why none."""
    entries = entries_of(models)
    policy = policy_of(settings)
    if not entries or (
        settings.version_policy is None and policy.kind == "specific" and policy.versions[0] not in models
    ):
        raise PolicyError(missing_model_message(settings.model_tag))
    if settings.model_control == "explicit":
        found = served_set.read(served_set.path_of(settings.served_set_file))
        if found is not None:
            chosen_set, _ = found
            if chosen_set.default not in models:
                raise PolicyError(
                    f"the default {chosen_set.default!r} of {served_set.path_of(settings.served_set_file)} "
                    f"is not in the model store (it holds {', '.join(models)})"
                )
            present = [v for v in chosen_set.versions if v in models]
            newest_first = VersionPolicy("specific", versions=tuple(present)).select(entries)
            return newest_first, chosen_set.default
    chosen = policy.select(entries)
    return chosen, default_of(chosen, settings.default_version)


def served_entries(settings: Settings) -> tuple[list[Any], str]:
    """The ``bentoml.models`` entries to serve, newest first, and the default version;
    ``PolicyError`` (one line) when the policy or the store cannot give them, ``ValueError``
    for a malformed tag."""
    import bentoml

    bentoml.Tag.from_taglike(settings.model_tag)  # ValueError: a malformed tag
    models = stored(settings.model_name)
    chosen, default = selected(settings, models)
    return [models[v] for v in chosen], default

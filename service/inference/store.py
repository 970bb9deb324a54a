"""The model store's entries this worker serves: the version policy (``versions``) applied to
what BentoML's store holds (its own, or a built bento's), with the default version."""

from __future__ import annotations

from typing import Any

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


def served_entries(settings: Settings) -> tuple[list[Any], str]:
    """The ``bentoml.models`` entries to serve, newest first, and the default version;
    ``PolicyError`` (one line) when the policy or the store cannot give them, ``ValueError``
    for a malformed tag."""
    import bentoml
    from bentoml.exceptions import NotFound

    policy = policy_of(settings)
    bentoml.Tag.from_taglike(settings.model_tag)  # ValueError: a malformed tag
    try:
        stored = {str(m.tag.version): m for m in bentoml.models.list(settings.model_name)}
    except NotFound:
        stored = {}
    entries = [Entry(v, m.info.creation_time.isoformat()) for v, m in stored.items()]
    if not entries or (
        settings.version_policy is None and policy.kind == "specific" and policy.versions[0] not in stored
    ):
        raise PolicyError(missing_model_message(settings.model_tag))
    chosen = policy.select(entries)
    return [stored[v] for v in chosen], default_of(chosen, settings.default_version)

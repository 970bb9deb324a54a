"""Triton's model-repository extension, what REST and gRPC share: which version a load,
unload or default call names (the HTTP routes are ``service.v2.repository_routes``).

The version comes from ``parameters.version``; or, as ``tritonclient`` sends none, from the
``X-Model-Version`` header (its ``headers=``) or a load's ``parameters.config`` naming one
version in ``version_policy.specific.versions``.
"""

from __future__ import annotations

import json

from pydantic import ValidationError

from service.v2.schemas import RepositoryModelRequest


class BadRepositoryCallError(ValueError):
    """A repository call whose body or version cannot be read (400)."""


def version_of(body: bytes, header: str | None) -> str | None:
    """The version a load, unload or default call names, or None; ``BadRepositoryCallError``
    saying why not."""
    try:
        request = RepositoryModelRequest.model_validate_json(body or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise BadRepositoryCallError(f"{where}: {first['msg']}") from None
    parameters = request.parameters
    if parameters.version is not None:
        return str(parameters.version).strip().lower() or None
    if parameters.config is not None:
        return config_version(parameters.config)
    return header.strip().lower() or None if header is not None else None


def config_version(config: str) -> str | None:
    try:
        document = json.loads(config)
    except json.JSONDecodeError as exc:
        raise BadRepositoryCallError(f"parameters.config is not JSON: {exc}") from None
    policy = document.get("version_policy") if isinstance(document, dict) else None
    specific = policy.get("specific") if isinstance(policy, dict) else None
    if specific is None:
        return None
    versions = specific.get("versions") if isinstance(specific, dict) else None
    if not isinstance(versions, list) or len(versions) != 1:
        raise BadRepositoryCallError(
            "parameters.config: version_policy.specific.versions must name exactly one version"
        )
    return str(versions[0]).strip().lower()

"""Triton's model-repository extension over REST, on the model control
(``service.inference.control``): the index, and load / unload / default of a version."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from service.http import errors
from service.http.errors import error_response, refusal_response
from service.inference.control import Control
from service.inference.dataplane import Plane
from service.inference.errors import DataPlaneError
from service.settings import MODEL_VERSION_HEADER
from service.v2.repository import BadRepositoryCallError, version_of
from service.v2.schemas import RepositoryIndexRequest


def _json(content: Any) -> Response:
    return Response(orjson.dumps(content), media_type="application/json")


async def index(control: Control, request: Request) -> Response:
    """``POST /v2/repository/index``."""
    path = request.url.path
    try:
        asked = RepositoryIndexRequest.model_validate_json(await request.body() or b"{}")
    except ValidationError as exc:
        message = f"not a repository index request: {exc.errors()[0]['msg']}"
        return error_response(path, errors.INVALID, ["body"], message)
    try:
        entries = await control.index(asked.ready)
    except DataPlaneError as exc:
        return refusal_response(path, exc)
    return _json([entry.__dict__ for entry in entries])


async def change(plane: Plane, control: Control, request: Request, action: str) -> Response:
    """``POST /v2/repository/models/{model_name}/<action>``: load, unload or default."""
    path = request.url.path
    try:
        name = request.path_params["model_name"]
        if name != plane.model_name:
            message = f"model {name!r} is not in this repository; it holds {plane.model_name!r}"
            return error_response(path, errors.NOT_FOUND, ["path"], message)
        version = version_of(await request.body(), request.headers.get(MODEL_VERSION_HEADER))
        if action == "load":
            await control.load(version)
        elif version is None:
            raise BadRepositoryCallError(f"{action} needs parameters.version (or the X-Model-Version header)")
        elif action == "unload":
            await control.unload(version)
        else:
            await control.set_default(version)
    except BadRepositoryCallError as exc:
        return error_response(path, errors.INVALID, ["body", "parameters"], str(exc))
    except DataPlaneError as exc:
        return refusal_response(path, exc, ["body", "parameters", "version"])
    served = plane.versions
    return _json({"name": plane.model_name, "versions": served, "default": served[0]})

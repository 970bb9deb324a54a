"""``inference.GRPCInferenceService``: the Open Inference Protocol's RPCs over the data plane.

The same plane and model as the HTTP routes (calls skip the batcher: see ModelInfer);
model checks, metadata and request validation are the protocol's shared pieces
(``service.v2.served``, ``service.v2.codec``), so a refusal reads the same over both
transports. Refusals map to gRPC status codes: another model or version → NOT_FOUND, a bad
request → INVALID_ARGUMENT, still loading → UNAVAILABLE (and, were the plane to shed a
call, RESOURCE_EXHAUSTED, as admission answers when the worker is full:
``service.grpc.layers``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar, assert_never

import grpc
from google.protobuf import json_format

from service.grpc import codec
from service.grpc import inference_pb2 as pb
from service.grpc import inference_pb2_grpc as rpc
from service.grpc.layers import RETRY_PUSHBACK, metadata
from service.inference.control import Control
from service.inference.dataplane import Plane
from service.inference.errors import ControlError, DataPlaneError, Kind
from service.settings import MODEL_VERSION_HEADER
from service.v2 import repository, served
from service.v2.codec import CodecError

log = logging.getLogger("crop_yield.grpc")
ENDPOINT = "grpc_infer"
"""The ``endpoint`` label of the rows this front end predicts."""
EXTENSIONS = ["model_configuration", "statistics"]
Answer = TypeVar("Answer")


def status_of(kind: Kind) -> grpc.StatusCode:
    """The status code of a data-plane refusal (mypy holds the match exhaustive)."""
    match kind:
        case Kind.INVALID:
            return grpc.StatusCode.INVALID_ARGUMENT
        case Kind.NOT_FOUND:
            return grpc.StatusCode.NOT_FOUND
        case Kind.NOT_READY:
            return grpc.StatusCode.UNAVAILABLE
        case Kind.OVERLOADED:
            return grpc.StatusCode.RESOURCE_EXHAUSTED
        case Kind.CONFLICT:
            return grpc.StatusCode.FAILED_PRECONDITION
    assert_never(kind)


class InferenceServicer(rpc.GRPCInferenceServiceServicer):
    def __init__(self, plane: Plane, control: Control | None = None) -> None:
        """``control``: the repository RPCs' (without one they answer FAILED_PRECONDITION)."""
        self.plane = plane
        self._control = control

    @property
    def control(self) -> Control:
        if self._control is None:
            raise ControlError("this server has no model control")
        return self._control

    async def _answer(
        self, context: grpc.aio.ServicerContext, handle: Callable[[], Awaitable[Answer]]
    ) -> Answer:
        try:
            return await handle()
        except served.NotServedError as exc:
            code, message = grpc.StatusCode.NOT_FOUND, str(exc)
        except (CodecError, repository.BadRepositoryCallError) as exc:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        except DataPlaneError as exc:
            code, message = status_of(exc.kind), str(exc)
        log.info("answered %s: %s", code.name, message)  # one line, with the call's request id
        retry = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
        await context.abort(code, message, trailing_metadata=RETRY_PUSHBACK if retry else ())
        raise AssertionError("abort() raises")  # pragma: no cover

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.plane.ready)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        async def handle() -> pb.ModelReadyResponse:
            served.check_model(self.plane, request.name, request.version or None)
            return pb.ModelReadyResponse(ready=self.plane.ready)

        return await self._answer(context, handle)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**served.server_metadata(EXTENSIONS))

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        async def handle() -> pb.ModelMetadataResponse:
            name, version = served.check_model(self.plane, request.name, request.version or None)
            metadata = served.model_metadata(name, [version] if request.version else self.plane.versions)
            return pb.ModelMetadataResponse(**metadata)

        return await self._answer(context, handle)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        async def handle() -> pb.ModelInferResponse:
            name, _ = served.check_model(self.plane, request.model_name, request.model_version or None)
            decoded, raw = codec.decode(request, self.plane.max_bulk_rows)
            # Straight to the model, not through the batcher: grpc.aio hands calls to the event
            # loop one at a time, so the batcher found next to nothing to merge and only added
            # its own cost (figures in docs/architecture.md).
            prediction = await self.plane.predict(
                decoded.rows, ENDPOINT, decoded.interval, batch=False, version=request.model_version or None
            )
            flags = prediction.extrapolated if decoded.wants_flags else None
            explanation = prediction.explanation() if decoded.explain else None
            return codec.encode(
                decoded,
                raw,
                prediction.outputs,
                name,
                prediction.version,
                prediction.bounds,
                flags,
                explanation,
            )

        return await self._answer(context, handle)

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelConfigResponse:
        async def handle() -> pb.ModelConfigResponse:
            name, version = served.check_model(self.plane, request.name, request.version or None)
            config = json_format.ParseDict(served.config_of(self.plane, name, version), pb.ModelConfig())
            return pb.ModelConfigResponse(config=config)

        return await self._answer(context, handle)

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        async def handle() -> pb.ModelStatisticsResponse:
            if not request.name:  # every model: this server serves one
                found = served.statistics_of(self.plane, self.plane.model_name, None)
            else:
                name, version = served.check_model(self.plane, request.name, request.version or None)
                found = served.statistics_of(self.plane, name, version if request.version else None)
            answer = pb.ModelStatisticsResponse()
            json_format.ParseDict(found, answer)
            return answer

        return await self._answer(context, handle)

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        async def handle() -> pb.RepositoryIndexResponse:
            entries = await self.control.index(request.ready)
            return pb.RepositoryIndexResponse(
                models=[
                    pb.RepositoryIndexResponse.ModelIndex(
                        name=e.name, version=e.version, state=e.state, reason=e.reason
                    )
                    for e in entries
                ]
            )

        return await self._answer(context, handle)

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        async def handle() -> pb.RepositoryModelLoadResponse:
            await self.control.load(self._version(request, context))
            return pb.RepositoryModelLoadResponse()

        return await self._answer(context, handle)

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        async def handle() -> pb.RepositoryModelUnloadResponse:
            version = self._version(request, context)
            if version is None:
                raise repository.BadRepositoryCallError(
                    "unload needs parameters['version'] (or the x-model-version metadata)"
                )
            await self.control.unload(version)
            return pb.RepositoryModelUnloadResponse()

        return await self._answer(context, handle)

    def _version(
        self,
        request: pb.RepositoryModelLoadRequest | pb.RepositoryModelUnloadRequest,
        context: grpc.aio.ServicerContext,
    ) -> str | None:
        """The version a load or unload names: ``parameters["version"]``, a load's
        ``parameters["config"]``, or the ``x-model-version`` metadata (tritonclient's headers)."""
        name = self.plane.model_name
        if request.model_name != name:
            raise served.NotServedError(
                f"model {request.model_name!r} is not in this repository; it holds {name!r}"
            )
        parameters = request.parameters
        if "version" in parameters:
            given = parameters["version"]
            return str(getattr(given, given.WhichOneof("parameter_choice") or "string_param")).strip().lower()
        if "config" in parameters:
            return repository.config_version(parameters["config"].string_param)
        asked = metadata(context, MODEL_VERSION_HEADER)
        return asked.strip().lower() or None if asked is not None else None

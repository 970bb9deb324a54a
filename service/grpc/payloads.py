"""Payload logging of gRPC ``ModelInfer`` (``service.observability.payloads``).

``payload_logged`` is the innermost layer of ModelInfer (``service.grpc.server``), inside the
token and admission, as the HTTP routes' is inside their guards: a call refused for its
token or for load is not logged. Admission hands it the message ``Sized``: its length on the
wire is what the request event counts against the queue's byte bound (the answer's is
protobuf's ``ByteSize`` for a small call, an estimate from the tensors' shapes for a bulk
one, which ``ByteSize`` would serialize). It holds the messages by reference; the
sender writes them as the V2 REST JSON of the same call (``service.grpc.v2_json``), so
consumers read both transports alike. ``ce-statuscode`` is the HTTP status of the call's
gRPC code (Google's mapping, as gRPC-HTTP gateways use); ``ce-grpccode`` names the code. An
answer that is an error carries the protocol's error body, ``{"error": message}``.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any, Final

import grpc
import orjson

from service.grpc import inference_pb2 as pb
from service.grpc import v2_json
from service.grpc.layers import Behaviour, Sized, abandoned
from service.observability import context as request_context
from service.observability.payloads import Call, Payload, PayloadLog

V2_GRPC: Final = "v2-grpc"
"""``ce-protocol`` of ModelInfer over gRPC."""
JSON = "application/json"
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.DATA_LOSS: 500,
}
"""The HTTP status of each gRPC code (google/rpc/code.proto)."""
SMALL_BYTES = 65_536
"""Below this many bytes on the wire a call's answer is small too, and ``ByteSize`` cheap."""
TENSOR_OVERHEAD = 64
"""Bytes counted per tensor besides its elements (name, datatype, shape)."""


def answer_bytes(answer: pb.ModelInferResponse, request_bytes: int) -> int:
    """About the bytes an answer holds: exact for a small call; for a bulk one, 8 bytes per
    element of each output (``ByteSize`` serializes the whole message)."""
    if request_bytes < SMALL_BYTES:
        return int(answer.ByteSize())
    return sum(TENSOR_OVERHEAD + 8 * math.prod(t.shape) for t in answer.outputs)


def status_code(code: Any) -> grpc.StatusCode:
    """``context.code()`` as a ``StatusCode`` (grpcio may hold the number; None: unknown)."""
    if isinstance(code, grpc.StatusCode):
        return code
    return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)


class GrpcCall(Call):
    """A ModelInfer call: the request, and the answer or the status it ended with."""

    __slots__ = ("answer", "code", "message", "metadata", "received")

    def __init__(
        self,
        received: pb.ModelInferRequest,
        request_bytes: int,
        metadata: Any,
        started: float,
        answer: pb.ModelInferResponse | None,
        code: grpc.StatusCode,
        message: str | None,
    ) -> None:
        super().__init__(
            V2_GRPC,
            v2_json.rest_path(received),
            request_context.REQUEST_ID.get(),
            started,
            time.time(),
            request_bytes,
            TENSOR_OVERHEAD if answer is None else answer_bytes(answer, request_bytes),
        )
        self.received = received
        self.metadata = metadata
        self.answer = answer
        self.code = code
        self.message = message

    def request(self) -> Payload:
        return Payload(v2_json.dumps(v2_json.request_document(self.received)), JSON)

    def response(self) -> Payload:
        if self.answer is not None:
            return Payload(v2_json.dumps(v2_json.response_document(self.answer)), JSON)
        return Payload(orjson.dumps({"error": self.message or self.code.name}), JSON)

    def attributes(self) -> dict[str, str]:
        attributes = {"statuscode": str(HTTP_STATUS.get(self.code, 500)), "grpccode": self.code.name}
        version = self.answer.model_version if self.answer is not None else self.received.model_version
        if version:
            attributes["modelversion"] = version
        for key, value in self.metadata or ():
            if key in ("traceparent", "tracestate"):
                attributes[key] = str(value)
        return attributes


def payload_logged(behaviour: Behaviour, log: PayloadLog) -> Behaviour:
    """ModelInfer, its sampled calls handed to ``log`` once answered."""

    async def logged(received: Sized, context: grpc.aio.ServicerContext) -> Any:
        request, size = received
        if not log.keeps(request_context.REQUEST_ID.get()):
            return await behaviour(request, context)
        started = time.time()
        answer = None
        code = grpc.StatusCode.OK
        try:
            answer = await behaviour(request, context)
            return answer
        except asyncio.CancelledError:  # the request deadline (observed), or the client gave up
            code = abandoned(context) if context.cancelled() else grpc.StatusCode.DEADLINE_EXCEEDED
            raise
        except BaseException:
            code = status_code(context.code())
            raise
        finally:
            details = None if answer is not None else context.details()
            message = details.decode(errors="replace") if isinstance(details, bytes) else details
            log.record(GrpcCall(request, size, context.invocation_metadata(), started, answer, code, message))

    return logged

"""The transports' floors: what a call costs when the server does nothing but answer it.

    .venv/bin/python -m benchmarks.floors http PORT   # raw ASGI under uvicorn (uvloop, httptools)
    .venv/bin/python -m benchmarks.floors grpc PORT   # bare grpc.aio (uvloop), ModelInfer only

The service benchmark measures these in the same run as the service, one process each and
the same load, so that its ratios say how much of a call is the project's own work above the
transport: the raw ASGI app reads the request body and answers a constant single-row
``/predict`` answer; the gRPC server parses each ModelInferRequest (any server has to) and
answers a constant ModelInferResponse, with no interceptors or layers.
"""

from __future__ import annotations

import sys
from typing import Any

import grpc
import numpy as np
import uvicorn
import uvloop

from service.grpc import inference_pb2 as pb

ANSWER = b'{"predictions":[{"apples":56.8,"oranges":70.4}],"model_version":"floor"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Any request: its body read, a constant JSON answer."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})


def constant_response() -> bytes:
    response = pb.ModelInferResponse(model_name="crop_yield", model_version="floor")
    for name, value in (("apples", 56.8), ("oranges", 70.4)):
        tensor = response.outputs.add(name=name, datatype="FP32", shape=[1])
        tensor.contents.fp32_contents.extend(np.array([value], np.float32).tolist())
    return response.SerializeToString()


async def serve_grpc(port: int) -> None:
    answer = constant_response()

    async def model_infer(request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> bytes:
        return answer

    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(
                model_infer, request_deserializer=pb.ModelInferRequest.FromString
            )
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "http":
        uvicorn.run(
            asgi,
            host="127.0.0.1",
            port=port,
            loop="uvloop",
            http="httptools",
            log_level="warning",
            access_log=False,
        )
    elif kind == "grpc":
        uvloop.run(serve_grpc(port))
    else:
        raise SystemExit(f"usage: python -m benchmarks.floors http|grpc PORT (not {kind!r})")


if __name__ == "__main__":
    main()

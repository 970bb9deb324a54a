"""Peer for the service benchmark: the same Linear(3, 2) behind NVIDIA Triton, via PyTriton.

Runs in its own venv (see setup_peers.sh), on CPU only:

    LD_LIBRARY_PATH=<the interpreter's LIBDIR> PEER_WEIGHTS=/path/model.safetensors \\
        .peers/pytriton/bin/python benchmarks/peers/pytriton_server.py \\
        --http-port 8000 --grpc-port 8001 --metrics-port 8002

Ready when GET /v2/health/ready (or /v2/models/crop_yield/ready) answers 200. Requests,
the Open Inference Protocol over REST (POST /v2/models/crop_yield/infer) and gRPC
(inference.GRPCInferenceService/ModelInfer):

    one FP32 tensor "input-0" of shape [N, 3]  ->  one FP32 tensor "output-0" of shape [N, 2]

What runs: PyTriton starts the ``tritonserver`` binary shipped in its wheel (Triton 2.51's
C++ HTTP and gRPC front ends and dynamic batcher) as a child of this process, with the
model in Triton's Python backend. That backend's stub (a child of tritonserver) only
forwards each batch over ZeroMQ to the callable below, which runs in this process: two
IPC hops a batch (tritonserver <-> stub in shared memory, stub <-> this process). The
dynamic batcher gathers up to --max-batch requests within --delay-us microseconds.

Two details this machine needs:

- The Python backend stub links ``libpython3.11.so.1.0`` and finds it through the
  dynamic loader, not through the interpreter that started it: give it the interpreter's
  own (``sysconfig.get_config_var("LIBDIR")``) in LD_LIBRARY_PATH, or it may load another
  Python 3.11 (e.g. Debian's in /usr/lib) than the venv's (pyenv's here). peers_bench.py
  sets it.
- PyTriton 0.7 protects Triton's shared-memory, model-repository, statistics, trace and
  logging endpoints with a random access token by default; ``restricted_endpoints=[]``
  leaves them open, so the benchmark can read the failure counts from
  /v2/models/crop_yield/stats.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable

import numpy as np
import torch
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig
from safetensors.torch import load_file

torch.set_num_threads(1)
MODEL = "crop_yield"


def crop_yield(weights: str) -> Callable[..., dict[str, np.ndarray]]:
    """The inference callable: nn.Linear(3, 2), (temperature, rainfall, humidity) ->
    (apples, oranges), over the batch the dynamic batcher gathered."""
    linear = torch.nn.Linear(3, 2)
    # The safetensors file holds `weight` (2x3) and `bias` (2,), as nn.Linear names them.
    linear.load_state_dict(load_file(weights))
    linear.eval()

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        rows = inputs["input-0"]
        with torch.inference_mode():
            out = linear(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))).numpy()
        return {"output-0": out}

    return infer


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM (the benchmark's stop()) ends serve() like Ctrl-C, so Triton.__exit__ stops
    # tritonserver and removes PyTriton's workspace.
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--max-batch", type=int, default=32, help="the dynamic batcher's largest batch")
    parser.add_argument("--delay-us", type=int, default=1000, help="the dynamic batcher's queue delay")
    args = parser.parse_args()

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_address="127.0.0.1",
        metrics_port=args.metrics_port,
        allow_gpu_metrics=False,
        exit_timeout_secs=5,
        log_verbose=0,
    )
    signal.signal(signal.SIGTERM, _terminate)
    try:
        with Triton(config=config, security_config=TritonSecurityConfig(restricted_endpoints=[])) as triton:
            triton.bind(
                model_name=MODEL,
                infer_func=crop_yield(os.environ["PEER_WEIGHTS"]),
                inputs=[Tensor(name="input-0", dtype=np.float32, shape=(3,))],
                outputs=[Tensor(name="output-0", dtype=np.float32, shape=(2,))],
                config=ModelConfig(
                    max_batch_size=args.max_batch,
                    batcher=DynamicBatcher(max_queue_delay_microseconds=args.delay_us),
                ),
                strict=True,
            )
            triton.serve()  # until SIGINT / SIGTERM
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()

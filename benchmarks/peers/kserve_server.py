"""Peer for the service benchmark: the same Linear(3, 2) behind KServe's Python model server.

Runs in its own venv (see setup_peers.sh), one uvicorn worker, no batching, gRPC off:

    PEER_WEIGHTS=/path/model.safetensors \\
        .peers/kserve/bin/python benchmarks/peers/kserve_server.py --http_port 8080

Any other kserve ModelServer flag works too (e.g. --enable_latency_logging false).
Ready when GET /v1/models/crop_yield (or /v2/health/ready) answers 200. Requests:

    POST /v1/models/crop_yield:predict  {"instances": [[73.0, 67.0, 43.0], ...]}
        -> {"predictions": [[apples, oranges], ...]}
    POST /v2/models/crop_yield/infer    one FP32 tensor of shape [N, 3]
        -> one FP32 tensor "output-0" of shape [N, 2]
"""

from __future__ import annotations

import argparse
import os

import kserve
import numpy as np
import torch
from kserve.errors import InvalidInput
from kserve.utils.utils import get_predict_input, get_predict_response
from safetensors.torch import load_file

torch.set_num_threads(1)


class CropYield(kserve.Model):
    """nn.Linear(3, 2): (temperature, rainfall, humidity) -> (apples, oranges)."""

    def __init__(self, name: str, weights: str) -> None:
        super().__init__(name)
        self.weights = weights
        self.linear = torch.nn.Linear(3, 2)
        self.load()

    def load(self) -> bool:
        # The safetensors file holds `weight` (2x3) and `bias` (2,), as nn.Linear names them.
        self.linear.load_state_dict(load_file(self.weights))
        self.linear.eval()
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None):
        # kserve hands us a dict for V1 ({"instances": ...}) and an InferRequest for V2;
        # its helpers turn either into an array of rows and the answer back into the same
        # protocol's response.
        rows = np.asarray(get_predict_input(payload), dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != 3:
            raise InvalidInput(f"expected rows of 3 features, got shape {list(rows.shape)}")
        with torch.inference_mode():
            out = self.linear(torch.from_numpy(rows)).numpy()
        return get_predict_response(payload, out, self.name)


def main() -> None:
    # Reuse kserve's own flags (--http_port, --workers, ...), with our defaults.
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.set_defaults(model_name="crop_yield", enable_grpc=False, workers=1)
    args = parser.parse_args()
    model = CropYield(args.model_name, os.environ["PEER_WEIGHTS"])
    server = kserve.ModelServer(http_port=args.http_port, workers=args.workers, enable_grpc=args.enable_grpc)
    server.start([model])  # serves until SIGINT / SIGTERM


if __name__ == "__main__":
    main()

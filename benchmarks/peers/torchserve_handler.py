"""TorchServe handler for the service benchmark's peer: the same Linear(3, 2) as the service.

Packed into a .mar by torchserve_peer.py together with the weights (``model.safetensors``,
tensors ``weight`` 2x3 and ``bias`` 2, as nn.Linear names them). One row per request:

    POST /predictions/crop_yield  {"temperature": 73.0, "rainfall": 67.0, "humidity": 43.0}
        -> {"apples": ..., "oranges": ...}

or a list of such rows in one request (the benchmark's 100-row case) -> a list of answers.

TorchServe groups concurrent requests into one batch (batchSize / maxBatchDelay in the
server's config) and calls ``handle`` with a list of requests; it expects a list of
answers of the same length and order back. All rows of a batch go through one matmul.
"""

from __future__ import annotations

import json
import os

import torch
from safetensors.torch import load_file
from ts.torch_handler.base_handler import BaseHandler

torch.set_num_threads(1)
FEATURES = ("temperature", "rainfall", "humidity")
WEIGHTS_FILE = "model.safetensors"


class CropYieldHandler(BaseHandler):
    def initialize(self, context):
        # BaseHandler.initialize loads TorchScript/pickled models; ours is a safetensors
        # state dict shipped as an extra file, which TorchServe unpacks into model_dir.
        model_dir = context.system_properties["model_dir"]
        self.manifest = context.manifest
        self.device = torch.device("cpu")
        self.model = torch.nn.Linear(3, 2)
        self.model.load_state_dict(load_file(os.path.join(model_dir, WEIGHTS_FILE)))
        self.model.eval()
        self.initialized = True

    def preprocess(self, data):
        # Each request is a dict; its JSON body is under "body" (or "data"), already
        # decoded when the client sent Content-Type: application/json.
        rows = []
        self.requests = []  # per request: (first row, row count, sent as a list?)
        for request in data:
            body = request.get("body") or request.get("data")
            if isinstance(body, (bytes, bytearray)):
                body = json.loads(body)
            many = isinstance(body, list)
            batch = body if many else [body]
            self.requests.append((len(rows), len(batch), many))
            rows += [[float(row[name]) for name in FEATURES] for row in batch]
        return torch.tensor(rows, dtype=torch.float32).reshape(-1, 3)

    # inference() is BaseHandler's: self.model(batch) under torch.inference_mode().

    def postprocess(self, data):
        # One answer per request, in order: its row, or the list of its rows.
        answers = [{"apples": apples, "oranges": oranges} for apples, oranges in data.tolist()]
        out = []
        for first, count, many in self.requests:
            out.append(answers[first : first + count] if many else answers[first])
        return out

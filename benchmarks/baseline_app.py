"""The bare baseline the service benchmark compares against (not part of the product).

FastAPI ``async def`` + pydantic + the same torch Linear (torch threads = 1), served by
one uvicorn worker with uvloop and httptools:

    BENTOML_HOME=... uvicorn benchmarks.baseline_app:app --loop uvloop --http httptools
"""

from __future__ import annotations

import os

import bentoml
import torch
from fastapi import FastAPI
from pydantic import BaseModel
from safetensors.torch import load_file

from contract import WEIGHTS_FILE

torch.set_num_threads(1)
_ref = bentoml.models.get(os.environ.get("CROP_YIELD_MODEL_TAG", "crop_yield:latest"))
_state = load_file(_ref.path_of(WEIGHTS_FILE))
model = torch.nn.Linear(3, 2)
model.load_state_dict(_state)
model.eval()


class Row(BaseModel):
    temperature: float
    rainfall: float
    humidity: float


class Request(BaseModel):
    inputs: list[Row]


class Prediction(BaseModel):
    apples: float
    oranges: float


class Response(BaseModel):
    predictions: list[Prediction]
    model: str


class Columns(BaseModel):
    temperature: list[float]
    rainfall: list[float]
    humidity: list[float]


class ColumnsOut(BaseModel):
    apples: list[float]
    oranges: list[float]
    model: str


app = FastAPI()
TAG = str(_ref.tag)


@app.post("/predict")
async def predict(request: Request) -> Response:
    x = torch.tensor([[r.temperature, r.rainfall, r.humidity] for r in request.inputs])
    with torch.inference_mode():
        y = model(x).tolist()
    return Response(predictions=[Prediction(apples=a, oranges=o) for a, o in y], model=TAG)


@app.post("/predict_columns")
async def predict_columns(request: Columns) -> ColumnsOut:
    x = torch.tensor([request.temperature, request.rainfall, request.humidity]).T
    with torch.inference_mode():
        y = model(x)
    return ColumnsOut(apples=y[:, 0].tolist(), oranges=y[:, 1].tolist(), model=TAG)


@app.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ok"}

"""Open Inference Protocol request bodies shared by the codec's unit tests and the served
bad-input matrix: builders for valid requests and the malformed ones with the fragments
their error message must contain."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

FEATURES = ("temperature", "rainfall", "humidity")
ROW = {"temperature": 73.0, "rainfall": 67.0, "humidity": 43.0}


def tensor(name: str, data: Any, shape: list[int] | None = None, datatype: str = "FP32") -> dict[str, Any]:
    return {"name": name, "shape": shape or [len(data)], "datatype": datatype, "data": data}


def json_request(rows: np.ndarray, **extra: Any) -> dict[str, Any]:
    """A V2 JSON request for an n×3 row matrix (features in contract order)."""
    columns = np.asarray(rows, dtype=np.float64)
    return {"inputs": [tensor(name, columns[:, j].tolist()) for j, name in enumerate(FEATURES)], **extra}


def binary_request(
    rows: np.ndarray, dtype: str = "<f4", datatype: str = "FP32", **extra: Any
) -> tuple[bytes, int]:
    """(body, JSON header length) of a binary-tensor request for an n×3 row matrix."""
    columns = [np.ascontiguousarray(np.asarray(rows)[:, j], dtype=dtype) for j in range(len(FEATURES))]
    header = {
        "inputs": [
            {
                "name": name,
                "shape": [len(c)],
                "datatype": datatype,
                "parameters": {"binary_data_size": c.nbytes},
            }
            for name, c in zip(FEATURES, columns, strict=True)
        ],
        **extra,
    }
    text = json.dumps(header).encode()
    return text + b"".join(c.tobytes() for c in columns), len(text)


def with_input(index: int, **changes: Any) -> bytes:
    """The one-row JSON request with input ``index`` changed (a key set to None is removed)."""
    request = json_request(np.array([[ROW[n] for n in FEATURES]]))
    request["inputs"][index].update(changes)
    request["inputs"][index] = {k: v for k, v in request["inputs"][index].items() if v is not None}
    return json.dumps(request).encode()


ONE_ROW = json.dumps(json_request(np.array([[73.0, 67.0, 43.0]]))).encode()
_BINARY, _BINARY_HEADER = binary_request(np.array([[73.0, 67.0, 43.0], [91.0, 88.0, 64.0]]))

# (case, body, Inference-Header-Content-Length or None, fragments the error message must contain)
BAD_BODIES: list[tuple[str, bytes, str | None, list[str]]] = [
    ("empty body", b"", None, ["body is empty"]),
    ("not JSON", b"temperature=73", None, ["not valid JSON"]),
    ("truncated JSON", ONE_ROW[:-5], None, ["not valid JSON"]),
    ("array at the root", b"[]", None, ["JSON object"]),
    ("no inputs", b'{"outputs": []}', None, ["inputs is missing"]),
    ("inputs not an array", b'{"inputs": {}}', None, ["inputs must be a JSON array"]),
    ("input not an object", b'{"inputs": [3]}', None, ["inputs[0] must be a JSON object"]),
    (
        "missing input",
        json.dumps({"inputs": json_request(np.ones((1, 3)))["inputs"][:2]}).encode(),
        None,
        ["missing input", "humidity"],
    ),
    ("unknown input", with_input(0, name="sunshine"), None, ["unknown input 'sunshine'"]),
    ("input twice", with_input(1, name="temperature"), None, ["'temperature' appears twice"]),
    (
        "unsupported datatype",
        with_input(0, datatype="BYTES"),
        None,
        ["'temperature'", "'BYTES' is not supported"],
    ),
    ("BOOL datatype", with_input(2, datatype="BOOL"), None, ["'humidity'", "'BOOL' is not supported"]),
    ("missing datatype", with_input(0, datatype=None), None, ["'temperature'", "datatype is missing"]),
    ("missing shape", with_input(0, shape=None), None, ["'temperature'", "shape is missing"]),
    ("shape of strings", with_input(0, shape=["1"]), None, ["'temperature'", "must hold integers"]),
    ("3-d shape", with_input(0, shape=[1, 1, 1]), None, ["'temperature'", "send [N] or [N, 1]"]),
    ("[N, 2] shape", with_input(0, shape=[1, 2]), None, ["'temperature'", "send [N] or [N, 1]"]),
    ("empty tensor", with_input(1, shape=[0], data=[]), None, ["'rainfall' is empty"]),
    ("shape/data mismatch", with_input(0, shape=[2]), None, ["'temperature'", "2 rows", "1 elements"]),
    ("mixed N", with_input(2, shape=[2], data=[43, 44]), None, ["differ in rows", "humidity has 2"]),
    ("missing data", with_input(0, data=None), None, ["'temperature'", "data is missing"]),
    ("string element", with_input(1, data=["67"]), None, ["'rainfall'", "element 0", "not a number"]),
    ("bool element", with_input(1, data=[True]), None, ["'rainfall'", "element 0", "True, not a number"]),
    ("null element", with_input(1, data=[None]), None, ["'rainfall'", "element 0", "not a number"]),
    (
        "NaN literal",
        ONE_ROW.replace(b"67.0", b"NaN"),
        None,
        ["'rainfall'", "element 0", "not a finite number"],
    ),
    (
        "Infinity literal",
        ONE_ROW.replace(b"43.0", b"-Infinity"),
        None,
        ["'humidity'", "element 0", "not a finite number"],
    ),
    (
        "below the minimum",
        with_input(1, data=[-3.0]),
        None,
        ["'rainfall'", "element 0", "below the minimum 0 mm"],
    ),
    ("above the maximum", with_input(2, data=[100.5]), None, ["'humidity'", "above the maximum 100 %"]),
    (
        "fractional INT32",
        with_input(0, datatype="INT32", data=[73.5]),
        None,
        ["'temperature'", "not an integer"],
    ),
    ("id not a string", ONE_ROW.replace(b"{", b'{"id": 42, ', 1), None, ["id must be a string"]),
    (
        "parameters not an object",
        ONE_ROW.replace(b"{", b'{"parameters": [], ', 1),
        None,
        ["parameters must be a JSON object"],
    ),
    (
        "binary_data_output not a bool",
        ONE_ROW.replace(b"{", b'{"parameters": {"binary_data_output": 1}, ', 1),
        None,
        ["binary_data_output must be true or false"],
    ),
    (
        "unknown output",
        ONE_ROW.replace(b"{", b'{"outputs": [{"name": "pears"}], ', 1),
        None,
        ["unknown output 'pears'"],
    ),
    (
        "output twice",
        ONE_ROW.replace(b"{", b'{"outputs": [{"name": "apples"}, {"name": "apples"}], ', 1),
        None,
        ["'apples' is requested twice"],
    ),
    ("header length not a number", _BINARY, "abc", ["Inference-Header-Content-Length", "'abc'"]),
    (
        "header length beyond the body",
        _BINARY,
        str(len(_BINARY) + 1),
        ["Inference-Header-Content-Length", "only"],
    ),
    (
        "binary size mismatch",
        _BINARY.replace(b'"binary_data_size": 8}', b'"binary_data_size": 4}', 1),
        str(_BINARY_HEADER),
        ["'temperature'", "binary_data_size is 4 bytes", "take 8"],
    ),
    ("binary data cut short", _BINARY[:-4], str(_BINARY_HEADER), ["'humidity'", "only"]),
    ("extra bytes after the tensors", _BINARY + b"\0\0\0\0", str(_BINARY_HEADER), ["add up to 24"]),
    (
        "binary NaN",
        _BINARY[:_BINARY_HEADER] + np.array([np.nan, 1], "<f4").tobytes() + _BINARY[_BINARY_HEADER + 8 :],
        str(_BINARY_HEADER),
        ["'temperature'", "element 0", "not a finite number"],
    ),
    (
        "binary out of bounds",
        _BINARY[:-4] + np.array([150], "<f4").tobytes(),
        str(_BINARY_HEADER),
        ["'humidity'", "element 1", "above the maximum"],
    ),
    ("binary without the header length", _BINARY, None, ["not valid JSON"]),
]

"""Open Inference Protocol bodies ↔ the model's row matrices: pure functions, no server.

Request bodies are JSON, or JSON followed by raw tensor bytes (Triton's binary tensor
extension: ``Inference-Header-Content-Length`` gives the JSON's length). Small JSON is
parsed with orjson into plain Python objects. Large JSON (bulk tensors) is parsed with
simdjson, whose ``as_buffer`` turns a number array into a float64 buffer without a Python
object per element (100,000 rows decode about 3x faster than with orjson) and refuses any
element that is not a number; its lazy objects cost more per field than orjson's dicts,
so small bodies, where the fields dominate, do not use it.

Every problem raises ``CodecError`` with one message naming the tensor and, where it
applies, the element index; the routes answer it as the error table's ``invalid request``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import simdjson

from contract import FEATURE_NAMES, FEATURES, TARGET_NAMES, Column
from service.inference.explain import BASE_VALUES, CONTRIBUTIONS
from service.inference.intervals import BOUND_NAMES, MAX_LEVEL, MIN_LEVEL

DTYPES: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
}
FEATURE_BY_NAME: dict[str, Column] = {c.name: c for c in FEATURES}
HEADER_LENGTH = "inference-header-content-length"


class CodecError(Exception):
    """A request body the protocol refuses: the message names the tensor and element."""


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    """A decoded request: the rows (float32 N×3, ``contract.FEATURES`` order) and what to return."""

    id: str | None
    rows: np.ndarray
    outputs: tuple[RequestedOutput, ...]
    interval: float | None = None
    """Confidence level of the bounds, when a bound output is requested."""
    explain: bool = False
    """An explanation output is requested (``parameters.explain``, or one named in ``outputs``)."""

    @property
    def wants_flags(self) -> bool:
        return any(output.name == EXTRAPOLATED for output in self.outputs)


# -- the body -------------------------------------------------------------------------


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """(JSON header, binary section) of a request body."""
    if header_length is None:
        return body, memoryview(b"")
    text = header_length.strip()
    if not text.isdigit():
        raise CodecError(f"Inference-Header-Content-Length must be a byte count, not {header_length!r}")
    length = int(text)
    if length > len(body):
        raise CodecError(
            f"Inference-Header-Content-Length is {length} but the body has only {len(body)} bytes"
        )
    return body[:length], memoryview(body)[length:]


SIMDJSON_FROM_BYTES = 32 * 1024
OBJECT_TYPES = (dict, simdjson.Object)
ARRAY_TYPES = (list, simdjson.Array)


_parser = simdjson.Parser()


def _simdjson_parse(header: bytes) -> Any:
    """Parse with the module's parser: reusing its buffers saves a third of a bulk parse.

    A parser cannot be reused while objects of its previous document are alive (a
    traceback may still hold them): then a fresh one is used.
    """
    global _parser
    try:
        return _parser.parse(header)
    except RuntimeError:
        _parser = simdjson.Parser()
        return _parser.parse(header)


def _parse_json(header: bytes) -> Any:
    try:
        if len(header) >= SIMDJSON_FROM_BYTES:
            return _simdjson_parse(header)
        return orjson.loads(header)
    # orjson.JSONDecodeError is a ValueError; simdjson raises ValueError for malformed JSON
    # and RuntimeError for what it cannot represent (an integer beyond 64 bits)
    except (ValueError, UnicodeDecodeError, RuntimeError) as exc:
        raise CodecError(_explain_bad_json(header, exc)) from None


def _explain_bad_json(header: bytes, exc: Exception) -> str:
    """The message for a body simdjson refused (the error path only: parsed again, slowly).

    Python's json accepts NaN and Infinity literals, which are not JSON: when it can read
    the body, the message names the tensor and element holding the non-finite number.
    """
    if not header.strip():
        return "the request body is empty; send an inference request object"
    try:
        document = json.loads(header)
    except (ValueError, RecursionError) as error:
        return f"the request body is not valid JSON: {error}"
    inputs = document.get("inputs") if isinstance(document, dict) else None
    for tensor in inputs if isinstance(inputs, list) else []:
        data = tensor.get("data") if isinstance(tensor, dict) else None
        flat = _flatten(data) if isinstance(data, list) else []
        for index, value in enumerate(flat):
            if isinstance(value, float) and not math.isfinite(value):
                return f"input {tensor.get('name')!r}: element {index} is {value}, not a finite number"
    return f"the request body could not be read as JSON ({exc})"


# -- fields of the JSON header ----------------------------------------------------------


def _object(value: Any, field: str, owner: str = "") -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, OBJECT_TYPES):
        raise CodecError(f"{owner}{field} must be a JSON object")
    return value


def _bool(value: Any, field: str, owner: str = "") -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise CodecError(f"{owner}{field} must be true or false, not {value!r}")
    return value


def _string(value: Any, field: str, owner: str = "") -> str:
    if not isinstance(value, str):
        raise CodecError(f"{owner}{field} " + ("must be a string" if value is not None else "is missing"))
    return value


def _array(value: Any, field: str, owner: str = "") -> Any:
    if not isinstance(value, ARRAY_TYPES):
        raise CodecError(f"{owner}{field} " + ("must be a JSON array" if value is not None else "is missing"))
    return value


def _rows_of(shape: Any, name: str, width: int = 1) -> int:
    """N of a tensor's shape: [N] or [N, 1] for one feature, [N, 3] for all of them."""
    dims = _as_list(_array(shape, "shape", f"input {name!r}: ") if type(shape) is not list else shape)
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
        raise CodecError(f"input {name!r}: shape {dims} must hold integers")
    if width > 1 and dims[1:] != [width]:
        raise CodecError(f"input {name!r}: shape {dims} is not supported; send [N, {width}]")
    if len(dims) not in (1, 2) or (len(dims) == 2 and dims[1] != width):
        raise CodecError(f"input {name!r}: shape {dims} is not supported; send [N] or [N, 1]")
    if dims[0] < 1:
        raise CodecError(f"input {name!r} is empty (shape {dims}); send at least one row")
    return int(dims[0])


def _is_matrix(shape: Any) -> bool:
    if not isinstance(shape, ARRAY_TYPES):
        return False
    dims = _as_list(shape)
    return len(dims) == 2 and type(dims[1]) is int and dims[1] == len(FEATURE_NAMES)


def _as_list(array: Any) -> list[Any]:
    return array if isinstance(array, list) else array.as_list()


def _json_data(data: Any, name: str) -> np.ndarray:
    """A JSON number array (flat or nested) → float64 values; anything else is refused."""
    array = data if type(data) is list else _array(data, "data", f"input {name!r}: ")
    if isinstance(array, simdjson.Array):
        try:
            return np.frombuffer(array.as_buffer(of_type="d"), dtype=np.float64)
        except (TypeError, ValueError):
            flat = _flatten(array.as_list())
    else:
        flat = _flatten(array)
        if all(type(v) is float or type(v) is int for v in flat):  # bool is not a number here
            return np.array(flat, dtype=np.float64)
    index, value = next((i, v) for i, v in enumerate(flat) if type(v) not in (int, float))
    raise CodecError(f"input {name!r}: element {index} is {value!r}, not a number")


def _flatten(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        out.extend(_flatten(value) if isinstance(value, list) else [value])
    return out


SMALL_ROWS = 64
MINIMA = np.array([-np.inf if c.minimum is None else c.minimum for c in FEATURES])
MAXIMA = np.array([np.inf if c.maximum is None else c.maximum for c in FEATURES])


def _check_rows(rows: np.ndarray, columns: dict[str, np.ndarray], datatypes: dict[str, str]) -> None:
    """Every value finite and within its feature's physical bounds (as /predict), integral
    for integer datatypes sent as JSON. One vectorized pass first; a column is searched for
    the offending element only when that pass fails."""
    integral_needed = [
        n for n, t in datatypes.items() if t.startswith("INT") and columns[n].dtype.kind == "f"
    ]
    if len(rows) <= SMALL_ROWS:  # two calls for the whole matrix: least call overhead
        lows, highs = rows.min(axis=0), rows.max(axis=0)
    else:  # contiguous columns: reductions down the n×3 matrix's columns are ten times slower
        lows = np.array([columns[name].min() for name in FEATURE_NAMES])
        highs = np.array([columns[name].max() for name in FEATURE_NAMES])
    # NaN fails both comparisons, so non-finite values take the slow path too
    if np.all(lows >= MINIMA) and np.all(highs <= MAXIMA) and not integral_needed:
        return
    for column in FEATURES:
        _check_column(columns[column.name], column, datatypes[column.name])


def _check_column(values: np.ndarray, column: Column, datatype: str) -> None:
    unit = column.unit
    problems: list[tuple[np.ndarray, str, str]] = [(~np.isfinite(values), "not a finite number", "")]
    if datatype.startswith("INT") and values.dtype.kind == "f":
        problems.append((values != np.trunc(values), f"not an integer ({datatype})", ""))
    if column.minimum is not None:
        problems.append((values < column.minimum, f"below the minimum {column.minimum:g} {unit}", unit))
    if column.maximum is not None:
        problems.append((values > column.maximum, f"above the maximum {column.maximum:g} {unit}", unit))
    for mask, what, shown_unit in problems:
        if mask.any():
            bad = np.flatnonzero(mask)
            more = f" ({bad.size - 1} more elements like it)" if bad.size > 1 else ""
            value = f"{float(values[bad[0]]):g} {shown_unit}".strip()
            raise CodecError(f"input {column.name!r}: element {int(bad[0])} is {value}, {what}{more}")


# -- the request ------------------------------------------------------------------------


def decode_request(body: bytes, header_length: str | None, max_rows: int) -> InferRequest:
    """An infer request body → its rows and requested outputs, or ``CodecError``."""
    try:
        return _decode(body, header_length, max_rows)
    except (UnicodeDecodeError, RuntimeError) as exc:  # simdjson decodes strings lazily
        raise CodecError(f"the request body could not be read as JSON ({exc})") from None


def _decode(body: bytes, header_length: str | None, max_rows: int) -> InferRequest:
    header, binary = split_body(body, header_length)
    return decode_document(_parse_json(header), binary, max_rows)


def decode_document(document: Any, binary: memoryview, max_rows: int) -> InferRequest:
    """A parsed infer request (the JSON document, or the same objects built from another
    encoding of the protocol, such as gRPC's) and its binary tensor section → rows and outputs."""
    if not binary:
        small = small_request(document, max_rows)
        if small is not None:
            return small
    if not isinstance(document, OBJECT_TYPES):
        raise CodecError("the request must be a JSON object with an 'inputs' array")
    request_id = document.get("id")
    if request_id is not None:
        request_id = _string(request_id, "id")
    binary_output, level, explain = read_parameters(_object(document.get("parameters"), "parameters"))

    tensors = _array(document.get("inputs"), "inputs")
    inputs = Inputs(len(tensors), max_rows)
    offset = 0
    for i, tensor in enumerate(tensors):
        if not isinstance(tensor, OBJECT_TYPES):
            raise CodecError(f"inputs[{i}] must be a JSON object")
        name = _string(tensor.get("name"), "name", f"inputs[{i}].")

        def values(count: int, datatype: str, tensor: Any = tensor, name: str = name) -> np.ndarray:
            nonlocal offset
            tensor_parameters = tensor.get("parameters")
            size = (
                None
                if tensor_parameters is None
                else _object(tensor_parameters, "parameters", f"input {name!r}: ").get("binary_data_size")
            )
            if size is None:
                return _json_data(tensor.get("data"), name)
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise CodecError(f"input {name!r}: binary_data_size must be a byte count, not {size!r}")
            if tensor.get("data") is not None:
                raise CodecError(f"input {name!r} has both data and binary_data_size; send one")
            data = binary_data(binary, offset, size, count, name, datatype)
            offset += size
            return data

        inputs.add(name, tensor.get("datatype"), tensor.get("shape"), values)
    if offset != len(binary):
        raise CodecError(
            f"the body has {len(binary)} bytes after the JSON header but the inputs' "
            f"binary_data_size add up to {offset}"
        )
    outputs, explained = chosen_outputs(document.get("outputs"), explain, binary_output)
    return request_of(request_id, inputs.rows(), outputs, level, explained)


def read_parameters(parameters: Mapping[str, Any]) -> tuple[bool, float, bool | None]:
    """(``binary_data_output``, the ``interval`` level, ``explain``) of a request's parameters."""
    binary_output = bool(_bool(parameters.get("binary_data_output"), "parameters.binary_data_output"))
    return (
        binary_output,
        _level(parameters.get("interval")),
        _bool(parameters.get("explain"), "parameters.explain"),
    )


def chosen_outputs(
    outputs: Any, explain: bool | None, binary_output: bool
) -> tuple[tuple[RequestedOutput, ...], bool]:
    """(the outputs to answer, whether any is the explanation's) of a request's ``outputs``."""
    return _with_explanation(_requested_outputs(outputs, binary_output), explain, binary_output)


def request_of(
    request_id: str | None,
    rows: np.ndarray,
    outputs: tuple[RequestedOutput, ...],
    level: float,
    explained: bool,
) -> InferRequest:
    """The decoded request; the confidence level kept only when a bound is requested."""
    wants_bounds = any(output.name in BOUND_NAMES for output in outputs)
    return InferRequest(request_id, rows, outputs, level if wants_bounds else None, explained)


class Inputs:
    """A request's feature columns, added tensor by tensor as either transport reads them:
    one place decides which tensors, shapes and datatypes are accepted and words refusals."""

    def __init__(self, count: int, max_rows: int) -> None:
        self.count = count
        """How many input tensors the request has."""
        self.max_rows = max_rows
        self.columns: dict[str, np.ndarray] = {}
        self.datatypes: dict[str, str] = {}

    def add(self, name: str, datatype: Any, shape: Any, values: Callable[[int, str], np.ndarray]) -> None:
        """The tensor ``name``; ``values(count, datatype)`` reads its ``count`` elements."""
        # One [N, 3] tensor of any name holds every feature, in the metadata's order: what
        # clients written for single-tensor models (KServe's "input-0") send.
        width = len(FEATURE_NAMES) if self.count == 1 and _is_matrix(shape) else 1
        if name not in FEATURE_BY_NAME and width == 1:
            raise CodecError(
                f"unknown input {name!r}; the model's inputs are {', '.join(FEATURE_BY_NAME)} "
                f"(or one [N, {len(FEATURE_NAMES)}] tensor of them in that order)"
            )
        if name in self.columns:
            raise CodecError(f"input {name!r} appears twice")
        if type(datatype) is not str:
            _string(datatype, "datatype", f"input {name!r}: ")
        if datatype not in DTYPES:
            raise CodecError(
                f"input {name!r}: datatype {datatype!r} is not supported; "
                "send FP32 (FP64, INT32 and INT64 are converted)"
            )
        rows = _rows_of(shape, name, width)
        if rows > self.max_rows:
            raise CodecError(f"input {name!r} has {rows} rows; at most {self.max_rows} rows per request")
        data = values(rows * width, datatype)
        if data.size != rows * width:
            says = f"{rows} rows" if width == 1 else f"{rows} rows of {width} ({rows * width} elements)"
            raise CodecError(f"input {name!r}: shape says {says} but data holds {data.size} elements")
        if width == 1:
            self.columns[name] = data
            self.datatypes[name] = datatype
        else:
            grid = data.reshape(rows, width)
            self.columns = {feature: grid[:, j] for j, feature in enumerate(FEATURE_NAMES)}
            self.datatypes = dict.fromkeys(FEATURE_NAMES, datatype)

    def rows(self) -> np.ndarray:
        """The checked float32 n×3 matrix."""
        return _to_rows(self.columns, self.datatypes)


PLAIN_TENSOR = frozenset({"name", "shape", "datatype", "data"})
FLOAT_TYPES = frozenset({"FP32", "FP64"})
LARGEST = sys.float_info.max
SMALL_BOUNDS = {
    c.name: (-LARGEST if c.minimum is None else c.minimum, LARGEST if c.maximum is None else c.maximum)
    for c in FEATURES
}


def small_request(document: Any, max_rows: int) -> InferRequest | None:
    """The common small request decoded in plain Python, or None for the general path.

    Three flat FP32/FP64 JSON tensors of up to ``SMALL_ROWS`` elements, an optional ``id``,
    nothing else, and every value a finite number within its feature's bounds: then the
    answer is the general path's (same rows, default outputs), for a tenth of the numpy
    calls a single row would cost there. Anything else, valid or not, returns None and the
    general path decodes it and words any error.
    """
    if type(document) is not dict or not document.keys() <= {"id", "inputs"}:
        return None
    request_id, inputs = document.get("id"), document.get("inputs")
    if (request_id is not None and type(request_id) is not str) or type(inputs) is not list:
        return None
    columns: dict[str, list[Any]] = {}
    for tensor in inputs:
        if type(tensor) is not dict or tensor.keys() != PLAIN_TENSOR:
            return None
        name, shape, data, datatype = tensor["name"], tensor["shape"], tensor["data"], tensor["datatype"]
        if type(name) is not str or name in columns or name not in SMALL_BOUNDS or type(data) is not list:
            return None
        if type(datatype) is not str or datatype not in FLOAT_TYPES:
            return None
        n = len(data)
        if not 1 <= n <= min(SMALL_ROWS, max_rows) or type(shape) is not list or shape not in ([n], [n, 1]):
            return None
        if not all(type(d) is int for d in shape):  # [1.0] == [1] in Python, but not a valid shape
            return None
        low, high = SMALL_BOUNDS[name]
        for value in data:  # bool is not a number here; NaN fails the comparison
            if (type(value) is not float and type(value) is not int) or not low <= value <= high:
                return None
        columns[name] = data
    if len(columns) != len(FEATURE_NAMES) or len({len(c) for c in columns.values()}) != 1:
        return None
    rows = np.array(list(zip(*(columns[name] for name in FEATURE_NAMES), strict=True)), dtype=np.float32)
    return InferRequest(request_id, rows, ALL_OUTPUTS[False])


def _level(value: Any) -> float:
    """``parameters.interval``: the bounds' confidence level (default 0.95)."""
    if value is None:
        return DEFAULT_LEVEL
    if isinstance(value, bool) or not isinstance(value, int | float) or not MIN_LEVEL <= value <= MAX_LEVEL:
        raise CodecError(
            f"parameters.interval must be a confidence level from {MIN_LEVEL} to {MAX_LEVEL}, not {value!r}"
        )
    return float(value)


def binary_data(
    binary: memoryview, offset: int, size: int, rows: int, name: str, datatype: str
) -> np.ndarray:
    dtype = DTYPES[datatype]
    if size != rows * dtype.itemsize:
        raise CodecError(
            f"input {name!r}: binary_data_size is {size} bytes but {rows} {datatype} elements "
            f"take {rows * dtype.itemsize}"
        )
    if offset + size > len(binary):
        raise CodecError(
            f"input {name!r}: its binary data ends at byte {offset + size} after the header, "
            f"but only {len(binary)} bytes follow it"
        )
    return np.frombuffer(binary, dtype=dtype, count=rows, offset=offset)


def _to_rows(columns: dict[str, np.ndarray], datatypes: dict[str, str]) -> np.ndarray:
    """The checked float32 n×3 matrix (checked in the inputs' own precision, then converted)."""
    missing = [name for name in FEATURE_BY_NAME if name not in columns]
    if missing:
        raise CodecError(f"missing input(s) {', '.join(map(repr, missing))}")
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise CodecError(f"inputs differ in rows: {shown}")
    all_fp32 = all(values.dtype == np.float32 for values in columns.values())
    rows = np.empty((lengths[FEATURE_NAMES[0]], len(FEATURE_NAMES)), np.float32 if all_fp32 else np.float64)
    for j, name in enumerate(FEATURE_NAMES):
        rows[:, j] = columns[name]
    _check_rows(rows, columns, datatypes)
    return rows if all_fp32 else rows.astype(np.float32)


EXTRAPOLATED = "extrapolated"
OUTPUT_NAMES = (*TARGET_NAMES, *BOUND_NAMES, EXTRAPOLATED)
"""The predictions, then (only when requested by name) their interval bounds and the
per-row flag for inputs outside the training range: the outputs the model metadata lists."""
EXPLANATION_NAMES = (CONTRIBUTIONS, BASE_VALUES)
"""The explanation's outputs (``service.inference.explain``), returned with
``parameters.explain`` or when named: FP32 ``contributions`` [N, targets, features] and
``base_values`` [targets]. Not in the model metadata, whose outputs are one value per row."""
REQUESTABLE = (*OUTPUT_NAMES, *EXPLANATION_NAMES)
OUTPUT_DATATYPES = {name: ("BOOL" if name == EXTRAPOLATED else "FP32") for name in REQUESTABLE}
DEFAULT_LEVEL = 0.95
ALL_OUTPUTS = {flag: tuple(RequestedOutput(name, flag) for name in TARGET_NAMES) for flag in (False, True)}


def _requested_outputs(outputs: Any, binary_default: bool) -> tuple[RequestedOutput, ...]:
    if outputs is None:
        return ALL_OUTPUTS[binary_default]
    chosen: dict[str, RequestedOutput] = {}
    for i, output in enumerate(_array(outputs, "outputs")):
        if not isinstance(output, OBJECT_TYPES):
            raise CodecError(f"outputs[{i}] must be a JSON object")
        name = _string(output.get("name"), f"outputs[{i}].name")
        if name not in REQUESTABLE:
            raise CodecError(f"unknown output {name!r}; the model's outputs are {', '.join(REQUESTABLE)}")
        if name in chosen:
            raise CodecError(f"output {name!r} is requested twice")
        flag = _bool(
            _object(output.get("parameters"), "parameters", f"output {name!r}: ").get("binary_data"),
            "parameters.binary_data",
            f"output {name!r}: ",
        )
        chosen[name] = RequestedOutput(name, binary_default if flag is None else flag)
    if not chosen:
        raise CodecError("outputs is empty; omit it to get every output")
    return tuple(chosen.values())


def _with_explanation(
    outputs: tuple[RequestedOutput, ...], explain: bool | None, binary_default: bool
) -> tuple[tuple[RequestedOutput, ...], bool]:
    """(the outputs, whether any is the explanation's): ``parameters.explain`` true adds the
    explanation outputs not named in ``outputs``; false refuses a request that names one."""
    named = [output.name for output in outputs if output.name in EXPLANATION_NAMES]
    if explain is False and named:
        raise CodecError(f"output {named[0]!r} is requested but parameters.explain is false")
    if not explain:
        return outputs, bool(named)
    added = tuple(RequestedOutput(name, binary_default) for name in EXPLANATION_NAMES if name not in named)
    return outputs + added, True


# -- the response -----------------------------------------------------------------------


def output_columns(
    request: InferRequest,
    outputs: np.ndarray,
    bounds: dict[str, np.ndarray] | None,
    extrapolated: np.ndarray | None,
    explanation: tuple[np.ndarray, np.ndarray] | None = None,
) -> Iterator[tuple[RequestedOutput, str, list[int], np.ndarray]]:
    """(output, datatype, shape, contiguous little-endian elements) of each requested output,
    in order: a column of N, or the explanation's [N, targets, features] and [targets], their
    elements flattened row-major (as the protocol sends tensors)."""
    columns = {**dict(zip(TARGET_NAMES, outputs.T, strict=True)), **(bounds or {})}
    if extrapolated is not None:
        columns[EXTRAPOLATED] = extrapolated
    for output in request.outputs:
        datatype = OUTPUT_DATATYPES[output.name]
        if output.name in EXPLANATION_NAMES:
            if explanation is None:
                raise ValueError(f"output {output.name!r} is requested but no explanation was given")
            contributions, base_values = explanation
            tensor = np.ascontiguousarray(base_values if output.name == BASE_VALUES else contributions, "<f4")
            yield output, datatype, list(tensor.shape), tensor.reshape(-1)
            continue
        column = np.ascontiguousarray(columns[output.name], np.bool_ if datatype == "BOOL" else "<f4")
        yield output, datatype, [len(column)], column


def encode_response(
    request: InferRequest,
    outputs: np.ndarray,
    model_name: str,
    model_version: str,
    bounds: dict[str, np.ndarray] | None = None,
    extrapolated: np.ndarray | None = None,
    explanation: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """(body, headers) for the model's n×2 outputs, the requested interval ``bounds``,
    ``extrapolated`` flags and ``explanation``: JSON, or JSON + binary when asked for (BOOL:
    one byte each; tensors of more than one dimension flattened row-major, as the protocol says).

    orjson writes float32 arrays in their shortest exact form straight from numpy.
    """
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for output, datatype, shape, column in output_columns(
        request, outputs, bounds, extrapolated, explanation
    ):
        tensor: dict[str, Any] = {"name": output.name, "datatype": datatype, "shape": shape}
        if output.binary:
            tensor["parameters"] = {"binary_data_size": column.nbytes}
            blobs.append(column.tobytes())
        else:
            tensor["data"] = column
        tensors.append(tensor)
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        document["id"] = request.id
    document["outputs"] = tensors
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {
        "content-type": "application/octet-stream",
        HEADER_LENGTH: str(len(header)),
    }

"""Messages that are not valid protobuf: read without raising, and said what is wrong.

grpcio calls a method's request deserializer before any of the method's code runs, and
answers an exception there ``UNKNOWN: Unexpected <class 'DecodeError'>``: a client's error
reported as the server's, and a call no layer counted. ``parsing`` makes a deserializer that
never raises: a message protobuf refuses becomes ``Malformed``, which ``service.grpc.layers``
answers INVALID_ARGUMENT inside the layers that count and log calls.

protobuf's own error names only the message type, so ``diagnose`` walks the wire format
(on the error path only) to say where it breaks: a tag or length cut short, a length past
the end, a wire type no field can have, a string that is not UTF-8.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError

VARINT, FIXED64, LENGTH, START_GROUP, END_GROUP, FIXED32 = range(6)
MAX_DEPTH = 32


class Malformed(NamedTuple):
    """A request message that could not be read, and why (the INVALID_ARGUMENT message)."""

    problem: str


class CutShortError(Exception):
    """The bytes end inside a field."""


def parsing(message_type: Any) -> Callable[[bytes], Any]:
    """A deserializer of ``message_type`` that returns ``Malformed`` instead of raising."""
    parse = message_type.FromString
    descriptor: Descriptor = message_type.DESCRIPTOR

    def read(data: bytes) -> Any:
        try:
            return parse(data)
        except (DecodeError, RecursionError):
            return Malformed(malformed(data, descriptor))

    return read


def malformed(data: bytes, descriptor: Descriptor) -> str:
    """The message for bytes that protobuf refused as ``descriptor``."""
    where = diagnose(data, descriptor)
    problem = f": {where}" if where else " (protobuf refused it)"
    return f"the request is not a valid {descriptor.full_name} message ({len(data)} bytes){problem}"


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """(the varint at ``pos``, the position after it); ``CutShortError`` when the bytes end first."""
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise CutShortError
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def diagnose(data: bytes, descriptor: Descriptor, path: str = "", depth: int = 0) -> str | None:
    """Where ``data`` stops being a valid encoding of ``descriptor``; None if it nowhere does."""
    if depth > MAX_DEPTH:
        return f"{path or 'the message'} nests more than {MAX_DEPTH} messages deep"
    seen: dict[int, int] = {}
    pos = 0
    while pos < len(data):
        start = pos
        try:
            tag, pos = read_varint(data, pos)
        except CutShortError:
            return f"the bytes end inside a field's tag, at byte {start}{_in(path)}"
        number, wire = tag >> 3, tag & 7
        field = descriptor.fields_by_number.get(number)
        index = seen.get(number, 0)
        seen[number] = index + 1
        name = _named(path, field, number, index)
        if number == 0:
            return f"field number 0 at byte {start}{_in(path)}"
        try:
            if wire == VARINT:
                _, pos = read_varint(data, pos)
            elif wire in (FIXED64, FIXED32):
                pos += 8 if wire == FIXED64 else 4
                if pos > len(data):
                    raise CutShortError
            elif wire == LENGTH:
                length, pos = read_varint(data, pos)
                if pos + length > len(data):
                    return (
                        f"{name} says {length} bytes but only {len(data) - pos} remain (a truncated message?)"
                    )
                chunk, pos = data[pos : pos + length], pos + length
                problem = _check(chunk, field, name, depth)
                if problem:
                    return problem
            else:
                return f"{name} has wire type {wire}, which this protocol does not use"
        except CutShortError:
            return f"the bytes end inside {name}"
    return None


def _check(chunk: bytes, field: FieldDescriptor | None, name: str, depth: int) -> str | None:
    if field is None:
        return None  # an unknown field: protobuf keeps it as it is
    if field.type == FieldDescriptor.TYPE_STRING:
        try:
            chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"{name} is not valid UTF-8 (byte {exc.start} of the string)"
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        return diagnose(chunk, field.message_type, name, depth + 1)
    return None


def _named(path: str, field: FieldDescriptor | None, number: int, index: int) -> str:
    if field is None:
        return f"{path}.field {number}" if path else f"field {number}"
    name = field.name
    if field.label == FieldDescriptor.LABEL_REPEATED and not (
        field.message_type is not None and field.message_type.GetOptions().map_entry
    ):
        name += f"[{index}]"
    return f"{path}.{name}" if path else name


def _in(path: str) -> str:
    return f" of {path}" if path else ""

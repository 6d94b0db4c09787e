"""Parsing request bytes into protobuf messages with errors that name the field.

The service receives raw bytes and parses them here, so that bytes protobuf cannot decode
(truncated or garbage wire format, invalid UTF-8 in a string field) get INVALID_ARGUMENT with a
message naming the place, e.g. "users[2].history.titles[0] is not valid UTF-8", rather than gRPC's
UNKNOWN "Unexpected DecodeError". The wire-format walk runs only after protobuf has refused the
bytes, to find where and why; a valid request costs one ordinary parse.
"""
from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

_VARINT, _FIXED64, _LENGTH, _START_GROUP, _END_GROUP, _FIXED32 = 0, 1, 2, 3, 4, 5
_MAX_VARINT_BYTES = 10
_MAX_DEPTH = 32  # the planner's messages nest 3 deep


class _Corrupt(Exception):
    def __init__(self, where: str, offset: int, why: str) -> None:
        super().__init__(f"{where or 'the request'}: {why} at byte {offset}")


def parse_request(message_type: type[Message], data: bytes) -> Message:
    """`data` parsed as `message_type`; ValueError naming the field at fault when it cannot be."""
    try:
        return message_type.FromString(data)
    except DecodeError as error:
        full_name = message_type.DESCRIPTOR.full_name
        problem = describe_decode_error(message_type.DESCRIPTOR, data) or str(error)
        raise ValueError(f"the request is not a valid {full_name}: {problem}") from None


def describe_decode_error(descriptor: Descriptor, data: bytes) -> str | None:
    """Where and why `data` is not a valid `descriptor` message ("users[0].history.titles[3] is not
    valid UTF-8", "users[1]: truncated length-delimited field at byte 57"); None when the walk finds
    nothing wrong (then protobuf's own message is used)."""
    try:
        return _walk(descriptor, memoryview(data), 0, len(data), "", 0)
    except _Corrupt as error:
        return str(error)


def _varint(data: memoryview, pos: int, end: int, where: str) -> tuple[int, int]:
    value = shift = 0
    for k in range(_MAX_VARINT_BYTES):
        if pos + k >= end:
            raise _Corrupt(where, pos, "truncated varint")
        byte = data[pos + k]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos + k + 1
        shift += 7
    raise _Corrupt(where, pos, "varint longer than 10 bytes")


def _walk(descriptor: Descriptor, data: memoryview, pos: int, end: int, path: str, depth: int) -> str | None:
    if depth > _MAX_DEPTH:
        raise _Corrupt(path, pos, "messages nested too deep")
    seen: dict[int, int] = {}
    while pos < end:
        key, pos = _varint(data, pos, end, path)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Corrupt(path, pos, "field number 0")
        field = descriptor.fields_by_number.get(number)
        name = field.name if field is not None else f"unknown field {number}"
        if field is not None and field.is_repeated and wire == _LENGTH \
                and field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_MESSAGE):
            index = seen.get(number, 0)
            seen[number] = index + 1
            name = f"{name}[{index}]"
        where = f"{path}.{name}" if path else name
        if wire == _VARINT:
            _, pos = _varint(data, pos, end, where)
        elif wire in (_FIXED64, _FIXED32):
            pos += 8 if wire == _FIXED64 else 4
            if pos > end:
                raise _Corrupt(where, end, "truncated fixed-width field")
        elif wire == _LENGTH:
            length, pos = _varint(data, pos, end, where)
            if pos + length > end:
                raise _Corrupt(where, pos, f"length {length} runs past the end")
            if field is not None and field.type == FieldDescriptor.TYPE_STRING:
                try:
                    bytes(data[pos:pos + length]).decode("utf-8")
                except UnicodeDecodeError as error:
                    return f"{where} is not valid UTF-8 (byte {error.start} of the string)"
            elif field is not None and field.type == FieldDescriptor.TYPE_MESSAGE:
                found = _walk(field.message_type, data, pos, pos + length, where, depth + 1)
                if found:
                    return found
            pos += length
        elif wire in (_START_GROUP, _END_GROUP):
            raise _Corrupt(where, pos, "group wire type (not used by this contract)")
        else:
            raise _Corrupt(where, pos, f"invalid wire type {wire}")
    return None


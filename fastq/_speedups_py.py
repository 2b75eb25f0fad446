"""Pure-Python TaskMessage codec: the readable reference implementation.

``fastq/_speedups.pyx`` mirrors this module name for name; ``fastq/_codec.py``
picks one at import time. The wire format is Asynq's ``TaskMessage`` protobuf
(proto3, ``internal/proto/asynq.proto``):

    1 type string, 2 payload bytes, 3 id string, 4 queue string, 5 retry int32,
    6 retried int32, 7 error_msg string, 8 timeout int64, 9 deadline int64,
    10 unique_key string, 11 last_failed_at int64, 12 retention int64,
    13 completed_at int64, 14 group_key string, 15 headers map<string,string>

Known fields are written in field-number order with proto3 defaults omitted,
exactly as Go's marshaller does; header entries are written sorted by key.
Unknown fields are kept verbatim in ``unknown`` and written back after the
known ones, so a newer Asynq's additions survive a fastq retry or archive.
"""
from __future__ import annotations

import os
import uuid
from typing import Any

from fastq.errors import DecodeError

__all__ = ["TaskMessage", "encode_message", "decode_message", "new_task_ids", "IMPLEMENTATION"]

IMPLEMENTATION = "python"

_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_U64 = 1 << 64


class TaskMessage:
    """One task as Asynq stores it in the ``msg`` field of ``asynq:{q}:t:<id>``."""

    __slots__ = (
        "type", "payload", "id", "queue", "retry", "retried", "error_msg", "timeout",
        "deadline", "unique_key", "last_failed_at", "retention", "completed_at",
        "group_key", "headers", "unknown",
    )

    def __init__(
        self,
        type: str = "",
        payload: bytes = b"",
        id: str = "",
        queue: str = "",
        retry: int = 0,
        retried: int = 0,
        error_msg: str = "",
        timeout: int = 0,
        deadline: int = 0,
        unique_key: str = "",
        last_failed_at: int = 0,
        retention: int = 0,
        completed_at: int = 0,
        group_key: str = "",
        headers: dict[str, str] | None = None,
        unknown: bytes = b"",
    ) -> None:
        self.type = type
        self.payload = payload
        self.id = id
        self.queue = queue
        self.retry = retry
        self.retried = retried
        self.error_msg = error_msg
        self.timeout = timeout
        self.deadline = deadline
        self.unique_key = unique_key
        self.last_failed_at = last_failed_at
        self.retention = retention
        self.completed_at = completed_at
        self.group_key = group_key
        self.headers = {} if headers is None else headers
        self.unknown = unknown

    def copy(self) -> "TaskMessage":
        """A shallow copy (the headers dict is copied too)."""
        return TaskMessage(
            self.type, self.payload, self.id, self.queue, self.retry, self.retried,
            self.error_msg, self.timeout, self.deadline, self.unique_key,
            self.last_failed_at, self.retention, self.completed_at, self.group_key,
            dict(self.headers), self.unknown,
        )

    def _astuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in TaskMessage.__slots__)

    def __eq__(self, other: object) -> bool:
        if not hasattr(other, "_astuple"):
            return NotImplemented
        theirs: tuple[Any, ...] = other._astuple()
        return self._astuple() == theirs

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"TaskMessage(type={self.type!r}, id={self.id!r}, queue={self.queue!r}, "
            f"retry={self.retry}, retried={self.retried}, payload={len(self.payload)} bytes)"
        )


# ---------------------------------------------------------------------------
# encoding

def _varint(value: int, out: bytearray) -> None:
    if value < 0:
        value += _U64  # int32/int64 negatives are sign-extended to 10 bytes
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _put_str(field: int, value: str, out: bytearray) -> None:
    if value:
        if type(value) is not str:
            raise TypeError(f"TaskMessage field {field} must be str, not {type(value).__name__}")
        data = value.encode("utf-8")
        out.append(field << 3 | 2)
        _varint(len(data), out)
        out += data


def _put_int(field: int, value: int, lo: int, hi: int, out: bytearray) -> None:
    if value:
        if not lo <= value <= hi:
            raise OverflowError(f"TaskMessage field {field} value {value} out of range")
        out.append(field << 3)
        _varint(value, out)


def encode_message(msg: TaskMessage) -> bytes:
    """Serialize ``msg`` to the exact bytes Go Asynq would write."""
    out = bytearray()
    _put_str(1, msg.type, out)
    payload = msg.payload
    if payload:
        if not isinstance(payload, bytes):
            raise TypeError(f"TaskMessage payload must be bytes, not {type(payload).__name__}")
        out.append(0x12)
        _varint(len(payload), out)
        out += payload
    _put_str(3, msg.id, out)
    _put_str(4, msg.queue, out)
    _put_int(5, msg.retry, _INT32_MIN, _INT32_MAX, out)
    _put_int(6, msg.retried, _INT32_MIN, _INT32_MAX, out)
    _put_str(7, msg.error_msg, out)
    _put_int(8, msg.timeout, _INT64_MIN, _INT64_MAX, out)
    _put_int(9, msg.deadline, _INT64_MIN, _INT64_MAX, out)
    _put_str(10, msg.unique_key, out)
    _put_int(11, msg.last_failed_at, _INT64_MIN, _INT64_MAX, out)
    _put_int(12, msg.retention, _INT64_MIN, _INT64_MAX, out)
    _put_int(13, msg.completed_at, _INT64_MIN, _INT64_MAX, out)
    _put_str(14, msg.group_key, out)
    if msg.headers:
        for key in sorted(msg.headers):
            entry = bytearray()
            _put_str(1, key, entry)
            _put_str(2, msg.headers[key], entry)
            out.append(0x7A)  # field 15, wire type 2
            _varint(len(entry), out)
            out += entry
    if msg.unknown:
        out += msg.unknown
    return bytes(out)


# ---------------------------------------------------------------------------
# decoding

def _read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise DecodeError("truncated varint")
        byte = data[pos]
        pos += 1
        if shift == 63 and byte > 1:
            raise DecodeError("varint overflows 64 bits")
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise DecodeError("varint longer than 10 bytes")


def _skip(data: bytes, pos: int, end: int, wire: int) -> int:
    """Return the position after a field value of wire type ``wire``."""
    if wire == 0:
        return _read_varint(data, pos, end)[1]
    if wire == 1:
        pos += 8
    elif wire == 5:
        pos += 4
    elif wire == 2:
        length, pos = _read_varint(data, pos, end)
        pos += length
    else:
        raise DecodeError(f"unsupported wire type {wire}")
    if pos > end:
        raise DecodeError("truncated field")
    return pos


def _as_int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _as_int64(value: int) -> int:
    return value - _U64 if value & (1 << 63) else value


def _utf8(data: bytes, start: int, stop: int, what: str) -> str:
    try:
        return data[start:stop].decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(f"{what} is not valid UTF-8") from None


def _decode_header(data: bytes, pos: int, end: int, headers: dict[str, str]) -> None:
    key = value = ""
    while pos < end:
        tag, pos = _read_varint(data, pos, end)
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise DecodeError("invalid field number 0 in headers entry")
        if wire == 2 and field in (1, 2):
            length, pos = _read_varint(data, pos, end)
            stop = pos + length
            if stop > end:
                raise DecodeError("truncated headers entry")
            text = _utf8(data, pos, stop, "header")
            if field == 1:
                key = text
            else:
                value = text
            pos = stop
        else:
            pos = _skip(data, pos, end, wire)
    headers[key] = value


_STRING_FIELDS = {1: "type", 3: "id", 4: "queue", 7: "error_msg", 10: "unique_key", 14: "group_key"}
_INT32_FIELDS = {5: "retry", 6: "retried"}
_INT64_FIELDS = {8: "timeout", 9: "deadline", 11: "last_failed_at", 12: "retention", 13: "completed_at"}


def decode_message(data: bytes) -> TaskMessage:
    """Parse Asynq ``TaskMessage`` bytes; raise ``fastq.DecodeError`` on malformed input.

    Unknown fields are skipped (and kept in ``unknown``); a known field sent
    with an unexpected wire type is treated as unknown, as protobuf does.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_message() needs bytes, not {type(data).__name__}")
    data = bytes(data)
    msg = TaskMessage()
    unknown = bytearray()
    pos, end = 0, len(data)
    while pos < end:
        start = pos
        tag, pos = _read_varint(data, pos, end)
        field, wire = tag >> 3, tag & 7
        if field == 0:
            raise DecodeError("invalid field number 0")
        if wire == 2 and (field in _STRING_FIELDS or field in (2, 15)):
            length, pos = _read_varint(data, pos, end)
            stop = pos + length
            if stop > end:
                raise DecodeError(f"field {field} is truncated")
            if field == 2:
                msg.payload = data[pos:stop]
            elif field == 15:
                _decode_header(data, pos, stop, msg.headers)
            else:
                name = _STRING_FIELDS[field]
                setattr(msg, name, _utf8(data, pos, stop, name))
            pos = stop
        elif wire == 0 and field in _INT32_FIELDS:
            value, pos = _read_varint(data, pos, end)
            setattr(msg, _INT32_FIELDS[field], _as_int32(value))
        elif wire == 0 and field in _INT64_FIELDS:
            value, pos = _read_varint(data, pos, end)
            setattr(msg, _INT64_FIELDS[field], _as_int64(value))
        else:
            pos = _skip(data, pos, end, wire)
            unknown += data[start:pos]
    msg.unknown = bytes(unknown)
    return msg


# ---------------------------------------------------------------------------
# task IDs

def new_task_ids(n: int) -> list[str]:
    """``n`` random UUID v4 strings in canonical lowercase form (Go's ``uuid.NewString()``)."""
    raw = os.urandom(16 * n)
    return [str(uuid.UUID(bytes=raw[i:i + 16], version=4)) for i in range(0, 16 * n, 16)]

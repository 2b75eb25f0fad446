"""Asynq's other protobuf messages: ServerInfo, WorkerInfo, SchedulerEntry, SchedulerEnqueueEvent.

These are written a few times a second at most, so one small schema-driven
pure-Python codec serves them all (the hot TaskMessage has its own codec in
``_speedups``). Fields are written in field-number order with proto3 defaults
omitted; map entries sorted by key. Unknown fields are skipped on decode.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Iterator, NamedTuple, TypeVar

from fastq._speedups_py import _as_int32, _as_int64, _read_varint, _skip, _utf8, _varint
from fastq.errors import DecodeError

__all__ = ["Timestamp", "ServerInfo", "WorkerInfo", "SchedulerEntry", "SchedulerEnqueueEvent", "encode", "decode"]


class Timestamp(NamedTuple):
    """google.protobuf.Timestamp."""

    seconds: int = 0
    nanos: int = 0

    @classmethod
    def from_unix(cls, t: float) -> "Timestamp":
        ns = int(round(t * 1e9))
        return cls(ns // 1_000_000_000, ns % 1_000_000_000)

    @classmethod
    def now(cls) -> "Timestamp":
        ns = time.time_ns()
        return cls(ns // 1_000_000_000, ns % 1_000_000_000)

    def to_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.seconds + self.nanos / 1e9, timezone.utc)


# Schema kinds. Each message dataclass lists (field number, kind) in its metadata.
STR, BYTES, INT32, INT64, BOOL, TS, MAP_STR_INT32, MAP_STR_STR, REP_STR = (
    "str", "bytes", "int32", "int64", "bool", "ts", "map_str_int32", "map_str_str", "rep_str")


def _f(number: int, kind: str, default: Any = None) -> Any:
    meta = {"pb": (number, kind)}
    if kind in (MAP_STR_INT32, MAP_STR_STR):
        return field(default_factory=dict, metadata=meta)
    if kind == REP_STR:
        return field(default_factory=list, metadata=meta)
    if kind == TS:
        return field(default_factory=Timestamp, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ServerInfo:
    host: str = _f(1, STR, "")
    pid: int = _f(2, INT32, 0)
    server_id: str = _f(3, STR, "")
    concurrency: int = _f(4, INT32, 0)
    queues: dict[str, int] = _f(5, MAP_STR_INT32)
    strict_priority: bool = _f(6, BOOL, False)
    status: str = _f(7, STR, "")
    start_time: Timestamp = _f(8, TS)
    active_worker_count: int = _f(9, INT32, 0)


@dataclass
class WorkerInfo:
    host: str = _f(1, STR, "")
    pid: int = _f(2, INT32, 0)
    server_id: str = _f(3, STR, "")
    task_id: str = _f(4, STR, "")
    task_type: str = _f(5, STR, "")
    task_payload: bytes = _f(6, BYTES, b"")
    queue: str = _f(7, STR, "")
    start_time: Timestamp = _f(8, TS)
    deadline: Timestamp = _f(9, TS)


@dataclass
class SchedulerEntry:
    id: str = _f(1, STR, "")
    spec: str = _f(2, STR, "")
    task_type: str = _f(3, STR, "")
    task_payload: bytes = _f(4, BYTES, b"")
    enqueue_options: list[str] = _f(5, REP_STR)
    next_enqueue_time: Timestamp = _f(6, TS)
    prev_enqueue_time: Timestamp = _f(7, TS)


@dataclass
class SchedulerEnqueueEvent:
    task_id: str = _f(1, STR, "")
    enqueue_time: Timestamp = _f(2, TS)


_Msg = TypeVar("_Msg")


def _schema(cls: type) -> list[tuple[int, str, str]]:
    cached: list[tuple[int, str, str]] | None = cls.__dict__.get("_pb_schema")
    if cached is None:
        cached = sorted((f.metadata["pb"][0], f.metadata["pb"][1], f.name) for f in fields(cls))
        setattr(cls, "_pb_schema", cached)  # noqa: B010 - a cache on the message class
    return cached


def _put_len(number: int, data: bytes, out: bytearray) -> None:
    _varint(number << 3 | 2, out)
    _varint(len(data), out)
    out += data


def _encode_ts(ts: Timestamp) -> bytes:
    out = bytearray()
    if ts.seconds:
        out.append(0x08)
        _varint(ts.seconds, out)
    if ts.nanos:
        out.append(0x10)
        _varint(ts.nanos, out)
    return bytes(out)


def encode(msg: Any) -> bytes:
    """Serialize one of this module's message dataclasses."""
    out = bytearray()
    for number, kind, name in _schema(type(msg)):
        value = getattr(msg, name)
        if kind == STR:
            if value:
                _put_len(number, value.encode("utf-8"), out)
        elif kind == BYTES:
            if value:
                _put_len(number, bytes(value), out)
        elif kind in (INT32, INT64, BOOL):
            if value:
                _varint(number << 3, out)
                _varint(int(value), out)
        elif kind == TS:
            # Go writes a set Timestamp even when it is all zeros; absent only if None.
            if value is not None:
                _put_len(number, _encode_ts(value), out)
        elif kind == REP_STR:
            for item in value:
                _put_len(number, item.encode("utf-8"), out)
        else:
            for key in sorted(value):
                entry = bytearray()
                if key:
                    _put_len(1, key.encode("utf-8"), entry)
                v = value[key]
                if kind == MAP_STR_INT32:
                    if v:
                        entry.append(0x10)
                        _varint(int(v), entry)
                elif v:
                    _put_len(2, v.encode("utf-8"), entry)
                _put_len(number, bytes(entry), out)
    return bytes(out)


def _fields(data: bytes, pos: int, end: int) -> Iterator[tuple[int, int, Any]]:
    """Yield (field number, wire type, value) where value is an int (wire type 0) or a
    (start, stop) span (wire type 2)."""
    while pos < end:
        tag, pos = _read_varint(data, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise DecodeError("invalid field number 0")
        if wire == 0:
            value, pos = _read_varint(data, pos, end)
            yield number, wire, value
        elif wire == 2:
            length, pos = _read_varint(data, pos, end)
            if pos + length > end:
                raise DecodeError(f"field {number} is truncated")
            yield number, wire, (pos, pos + length)
            pos += length
        else:
            pos = _skip(data, pos, end, wire)


def _decode_ts(data: bytes, start: int, stop: int) -> Timestamp:
    seconds = nanos = 0
    for number, wire, value in _fields(data, start, stop):
        if wire == 0 and number == 1:
            seconds = _as_int64(value)
        elif wire == 0 and number == 2:
            nanos = _as_int32(value)
    return Timestamp(seconds, nanos)


def _decode_entry(data: bytes, start: int, stop: int, kind: str) -> tuple[str, Any]:
    key: str = ""
    val: Any = 0 if kind == MAP_STR_INT32 else ""
    for number, wire, value in _fields(data, start, stop):
        if number == 1 and wire == 2:
            key = _utf8(data, value[0], value[1], "map key")
        elif number == 2 and wire == 0 and kind == MAP_STR_INT32:
            val = _as_int32(value)
        elif number == 2 and wire == 2 and kind == MAP_STR_STR:
            val = _utf8(data, value[0], value[1], "map value")
    return key, val


def decode(cls: type[_Msg], data: bytes) -> _Msg:
    """Parse ``data`` as message ``cls``; raise ``DecodeError`` when malformed."""
    data = bytes(data)
    msg = cls()
    by_number = {number: (kind, name) for number, kind, name in _schema(cls)}
    for number, wire, value in _fields(data, 0, len(data)):
        spec = by_number.get(number)
        if spec is None:
            continue
        kind, name = spec
        if wire == 0 and kind in (INT32, INT64, BOOL):
            value = _as_int32(value) if kind == INT32 else _as_int64(value)
            setattr(msg, name, bool(value) if kind == BOOL else value)
        elif wire == 2 and kind not in (INT32, INT64, BOOL):
            start, stop = value
            if kind == STR:
                setattr(msg, name, _utf8(data, start, stop, name))
            elif kind == BYTES:
                setattr(msg, name, data[start:stop])
            elif kind == TS:
                setattr(msg, name, _decode_ts(data, start, stop))
            elif kind == REP_STR:
                getattr(msg, name).append(_utf8(data, start, stop, name))
            else:
                k, v = _decode_entry(data, start, stop, kind)
                getattr(msg, name)[k] = v
    return msg

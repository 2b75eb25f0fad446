"""Typed payloads: declare a task type with a payload schema; JSON bytes on the wire.

A schema is a dataclass (always) or a pydantic v2 model (when pydantic is
installed; fastq does not depend on it)::

    @dataclass
    class EmailPayload:
        to: str
        user_id: int

    EmailTask = fastq.TaskType("email:deliver", EmailPayload)
    client.enqueue(EmailTask(EmailPayload("a@example.com", 42)))   # a plain fastq.Task

    @EmailTask.handle(mux)        # or: @fastq.typed_task(mux, "email:deliver", EmailPayload)
    async def deliver(payload: EmailPayload) -> None: ...

The payload is checked against the schema when it is encoded (``PayloadError``
names the field) and decoded before the handler runs; a task whose payload does
not match is archived at once (the handler raises ``SkipRetry`` naming the
field) instead of failing on every retry. The JSON is an object with the
field names as keys, byte for byte as Go's ``encoding/json`` writes the same struct
(``fastq._gojson``: bytes as base64, times as RFC 3339, ``dict`` fields as maps with sorted
keys, floats and HTML-safe string escapes as Go writes them), so Go producers and consumers
can share it.
Plain ``bytes`` payloads stay the default: this module is optional.

Dataclass fields may be ``str``, ``int``, ``float``, ``bool``, ``bytes``,
``None``, ``Any``, ``datetime``, ``date``, ``UUID``, ``Enum`` subclasses,
``Literal[...]``, ``Optional``/unions, ``list[T]``, ``tuple[...]``,
``dict[str, T]``, nested dataclasses and pydantic v2 models. Unknown JSON keys are refused
(nothing is dropped silently); fields with defaults may be missing.
"""
from __future__ import annotations

import base64
import binascii
import builtins
import dataclasses
import enum
import functools
import json
import math
import re
import types
import typing
import uuid
from datetime import date, datetime
from typing import Any, Callable, Generic, Mapping, Optional, TypeVar

from fastq import _gojson
from fastq.errors import PayloadError, SkipRetry
from fastq.mux import ServeMux, is_async_handler
from fastq.task import Task

__all__ = ["TaskType", "typed_task", "make_task", "encode_payload", "decode_payload"]

P = TypeVar("P")


# ------------------------------------------------------------------ pydantic, when installed

def _pydantic_base() -> Optional[type]:
    try:
        from pydantic import BaseModel
    except ImportError:
        return None
    return BaseModel


def _is_pydantic_model(schema: Any) -> bool:
    base = _pydantic_base()
    return base is not None and isinstance(schema, type) and issubclass(schema, base)


# ------------------------------------------------------------------ dataclass schemas

class _Bad(Exception):
    """A value does not fit its annotation; ``path`` is filled in on the way up."""

    def __init__(self, reason: str, path: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = path


def _join(path: str, part: str) -> str:
    if part.startswith("["):
        return path + part
    return f"{path}.{part}" if path else part


def _describe(tp: Any) -> str:
    if isinstance(tp, type):
        return "null" if tp is type(None) else tp.__name__
    return str(tp).replace("typing.", "")


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _type_name(value: Any) -> str:
    return type(value).__name__


def _is_union(origin: Any) -> bool:
    return origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType)


def _literal(value: Any, args: tuple[Any, ...]) -> Any:
    """``value`` if it is one of a ``Literal``'s values (of the same type: ``True`` is not ``1``)."""
    for a in args:
        if value == a and type(value) is type(a):
            return value
    raise _Bad(f"{value!r} is not one of {', '.join(repr(a) for a in args)}"[:200])


def _union(value: Any, args: tuple[Any, ...], convert: Callable[[Any, Any], Any], kind: Callable[[Any], str]) -> Any:
    """``convert`` (``_load`` or ``_dump``) ``value`` with the first member of a union that takes it;
    ``kind(value)`` names the value in the error."""
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    if len(options) == 1:
        return convert(value, options[0])
    for a in options:
        try:
            return convert(value, a)
        except _Bad:
            continue
    raise _Bad(f"{kind(value)} matches none of {', '.join(_describe(a) for a in args)}")


_SCALARS = (str, int, float, bool, bytes, type(None), datetime, date, uuid.UUID)


@functools.lru_cache(maxsize=None)
def _fields(cls: type) -> tuple[tuple[str, Any, bool], ...]:
    """(name, resolved annotation, required) of each ``__init__`` field of a dataclass."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception as exc:  # NameError for an annotation that does not resolve
        raise TypeError(f"cannot resolve the annotations of {cls.__name__}: {exc}") from None
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        out.append((f.name, hints.get(f.name, Any), required))
    return tuple(out)


def _check_annotation(tp: Any, path: str, seen: set[Any]) -> None:
    """Raise TypeError naming ``path`` for an annotation fastq cannot map to JSON."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object or tp in _SCALARS:
        return
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if tp in seen:
            return
        seen.add(tp)
        for name, ann, _ in _fields(tp):
            _check_annotation(ann, _join(path, name), seen)
        return
    if origin is typing.Literal:
        for a in args:
            if not isinstance(a, (str, int, bool, type(None))):
                raise TypeError(f"field {path!r}: Literal values must be str, int, bool or None")
        return
    if _is_union(origin):
        for a in args:
            _check_annotation(a, path, seen)
        return
    if tp is list or tp is dict or tp is tuple:
        return
    if origin is list:
        _check_annotation(args[0], _join(path, "[]"), seen)
        return
    if origin is tuple:
        for a in args:
            if a is not Ellipsis:
                _check_annotation(a, _join(path, "[]"), seen)
        return
    if origin is dict:
        if args and args[0] is not str:
            raise TypeError(f"field {path!r}: dict keys must be str (JSON object keys), not {_describe(args[0])}")
        if args:
            _check_annotation(args[1], _join(path, "[]"), seen)
        return
    if _is_pydantic_model(tp):
        return
    raise TypeError(f"field {path!r}: type {_describe(tp)} is not supported in a JSON payload schema")


_FRACTION = re.compile(r"(T\d\d:\d\d:\d\d)\.(\d+)")


def _microseconds(match: re.Match[str]) -> str:
    return f"{match.group(1)}.{match.group(2)[:6].ljust(6, '0')}"


def _parse_time(value: str, kind: type) -> Any:
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value  # RFC 3339 'Z' (Go's time.Time)
    # Go writes 1 to 9 fraction digits (trailing zeros dropped); Python 3.10 reads only 3 or 6
    text = _FRACTION.sub(_microseconds, text, count=1)
    if kind is datetime:
        return datetime.fromisoformat(text)
    return date.fromisoformat(value)


def _load(value: Any, tp: Any) -> Any:
    """JSON value -> Python value of annotation ``tp`` (raises _Bad)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if tp is type(None):
        if value is not None:
            raise _Bad(f"expected null, got {_json_kind(value)}")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise _Bad(f"expected a boolean, got {_json_kind(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"expected an integer, got {_json_kind(value)} {value!r}"[:120])
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Bad(f"expected a number, got {_json_kind(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _Bad(f"expected a string, got {_json_kind(value)}")
        return value
    if tp is bytes:
        if not isinstance(value, str):
            raise _Bad(f"expected a base64 string, got {_json_kind(value)}")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _Bad("not valid base64") from None
    if tp in (datetime, date, uuid.UUID):
        if not isinstance(value, str):
            raise _Bad(f"expected a {tp.__name__} string, got {_json_kind(value)}")
        try:
            return uuid.UUID(value) if tp is uuid.UUID else _parse_time(value, tp)
        except ValueError:
            raise _Bad(f"not a valid {tp.__name__}: {value!r}"[:120]) from None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in tp)
            raise _Bad(f"{value!r} is not one of {allowed}"[:200]) from None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _load_dataclass(value, tp)
    if origin is typing.Literal:
        return _literal(value, args)
    if _is_union(origin):
        return _union(value, args, _load, _json_kind)
    if tp is list or origin is list:
        if not isinstance(value, list):
            raise _Bad(f"expected an array, got {_json_kind(value)}")
        item = args[0] if args else Any
        return [_at(f"[{i}]", _load, v, item) for i, v in enumerate(value)]
    if tp is tuple or origin is tuple:
        if not isinstance(value, list):
            raise _Bad(f"expected an array, got {_json_kind(value)}")
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            item = args[0] if args else Any
            return tuple(_at(f"[{i}]", _load, v, item) for i, v in enumerate(value))
        if len(value) != len(args):
            raise _Bad(f"expected an array of {len(args)} items, got {len(value)}")
        return tuple(_at(f"[{i}]", _load, v, a) for i, (v, a) in enumerate(zip(value, args, strict=False)))
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise _Bad(f"expected an object, got {_json_kind(value)}")
        item = args[1] if args else Any
        return {k: _at(f"[{k!r}]", _load, v, item) for k, v in value.items()}
    if _is_pydantic_model(tp):
        return _load_pydantic(value, tp)
    raise _Bad(f"type {_describe(tp)} is not supported")  # pragma: no cover - refused by _check_annotation


def _at(part: str, fn: Callable[..., Any], value: Any, tp: Any) -> Any:
    try:
        return fn(value, tp)
    except _Bad as bad:
        bad.path = _join(part, bad.path) if bad.path else part
        raise


def _load_dataclass(value: Any, cls: type) -> Any:
    if not isinstance(value, dict):
        raise _Bad(f"expected an object, got {_json_kind(value)}")
    fields = _fields(cls)
    names = {name for name, _, _ in fields}
    unknown = sorted(set(value) - names)
    if unknown:
        raise _Bad(f"unknown field (the schema {cls.__name__} has: {', '.join(sorted(names)) or 'no fields'})",
                   unknown[0])
    kwargs = {}
    for name, ann, required in fields:
        if name in value:
            kwargs[name] = _at(name, _load, value[name], ann)
        elif required:
            raise _Bad("missing", name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # a __post_init__ check
        raise _Bad(f"rejected by {cls.__name__}: {exc}") from None


def _pydantic_error(exc: Any) -> tuple[str, str]:
    """(dotted path, reason) of the first error of a pydantic ``ValidationError``."""
    errors = exc.errors()
    first = errors[0]
    path = ""
    for part in first.get("loc", ()):
        path = _join(path, f"[{part}]" if isinstance(part, int) else str(part))
    reason = first.get("msg", "invalid")
    if len(errors) > 1:
        reason += f" (+{len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return path, reason


def _load_pydantic(value: Any, model: Any) -> Any:
    """A JSON value -> an instance of a pydantic v2 model (a field of a dataclass, an App task's parameter)."""
    from pydantic import ValidationError

    try:
        return model.model_validate(value)
    except ValidationError as exc:
        path, reason = _pydantic_error(exc)
        raise _Bad(reason, path) from None


def _dump(value: Any, tp: Any) -> Any:
    """Python value of annotation ``tp`` -> JSON value (raises _Bad for a value that does not fit)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return _dump_any(value)
    if tp is type(None):
        if value is not None:
            raise _Bad(f"expected None, got {type(value).__name__}")
        return None
    if tp in (bool, int, float, str):
        ok = isinstance(value, tp) and not (tp is not bool and isinstance(value, bool))
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise _Bad(f"expected {tp.__name__}, got {type(value).__name__}")
        if tp is float:
            if not math.isfinite(value):
                raise _Bad(f"{value!r} cannot be written as JSON")
            return float(value)
        return value
    if tp is bytes:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise _Bad(f"expected bytes, got {type(value).__name__}")
        return base64.b64encode(bytes(value)).decode("ascii")
    if tp in (datetime, date, uuid.UUID):
        if not isinstance(value, tp) or (tp is date and isinstance(value, datetime)):
            raise _Bad(f"expected {tp.__name__}, got {type(value).__name__}")
        if tp is uuid.UUID:
            return str(value)
        return _gojson.go_time(value) if tp is datetime else value.isoformat()
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if not isinstance(value, tp):
            raise _Bad(f"expected {tp.__name__}, got {type(value).__name__}")
        return _dump_any(value.value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, tp):
            raise _Bad(f"expected {tp.__name__}, got {type(value).__name__}")
        return {name: _at(name, _dump, getattr(value, name), ann) for name, ann, _ in _fields(tp)}
    if origin is typing.Literal:
        return _literal(value, args)
    if _is_union(origin):
        return _union(value, args, _dump, _type_name)
    if tp in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Bad(f"expected {_describe(tp)}, got {type(value).__name__}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise _Bad(f"expected {len(args)} items, got {len(value)}")
            return [_at(f"[{i}]", _dump, v, a) for i, (v, a) in enumerate(zip(value, args, strict=False))]
        item = args[0] if args else Any
        return [_at(f"[{i}]", _dump, v, item) for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise _Bad(f"expected a dict, got {type(value).__name__}")
        item = args[1] if args else Any
        for k in value:
            if not isinstance(k, str):
                raise _Bad(f"dict keys must be str, got {type(k).__name__}", f"[{k!r}]")
        # a map: Go's encoding/json writes its keys sorted
        return {k: _at(f"[{k!r}]", _dump, value[k], item) for k in sorted(value)}
    if _is_pydantic_model(tp):
        if not isinstance(value, tp):
            raise _Bad(f"expected {tp.__name__}, got {type(value).__name__}")
        return value.model_dump(mode="json")
    raise _Bad(f"type {_describe(tp)} is not supported")  # pragma: no cover - refused by _check_annotation


def _dump_any(value: Any) -> Any:
    """A value under ``Any``: only what JSON holds as it is."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return _dump(value, float)
    if isinstance(value, (list, tuple)):
        return [_at(f"[{i}]", _dump, v, Any) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return _dump(value, dict)
    raise _Bad(f"{type(value).__name__} is not a JSON value (give the field a precise type)")


def _loads(data: bytes) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not valid JSON")

    return json.loads(data, parse_constant=refuse)


# ------------------------------------------------------------------ codecs

class _DataclassCodec:
    def __init__(self, schema: type) -> None:
        _check_annotation(schema, "", set())
        self.schema = schema

    def encode(self, task_type: str, obj: Any) -> bytes:
        if not isinstance(obj, self.schema):
            raise PayloadError(task_type, "", f"expected a {self.schema.__name__}, got {type(obj).__name__}")
        try:
            value = _dump(obj, self.schema)
        except _Bad as bad:
            raise PayloadError(task_type, bad.path, bad.reason) from None
        return _gojson.dumps(value)

    def decode(self, task_type: str, data: bytes) -> Any:
        if not data:
            raise PayloadError(task_type, "", f"empty; expected a JSON object for {self.schema.__name__}")
        try:
            value = _loads(data)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise PayloadError(task_type, "", f"not valid JSON ({exc})") from None
        try:
            return _load_dataclass(value, self.schema)
        except _Bad as bad:
            raise PayloadError(task_type, bad.path, bad.reason) from None


class _PydanticCodec:
    def __init__(self, schema: type) -> None:
        if not hasattr(schema, "model_validate_json"):
            raise TypeError(f"{schema.__name__} is a pydantic v1 model; fastq.typed needs pydantic v2")
        self.schema = schema

    def encode(self, task_type: str, obj: Any) -> bytes:
        if not isinstance(obj, self.schema):
            raise PayloadError(task_type, "", f"expected a {self.schema.__name__}, got {type(obj).__name__}")
        model: Any = obj
        encoded: bytes = model.model_dump_json().encode()
        return encoded

    def decode(self, task_type: str, data: bytes) -> Any:
        from pydantic import ValidationError

        try:
            return self.schema.model_validate_json(data)
        except ValidationError as exc:
            path, reason = _pydantic_error(exc)
            raise PayloadError(task_type, path, reason) from None


def _codec_for(schema: Any) -> Any:
    if isinstance(schema, type):
        if dataclasses.is_dataclass(schema):
            return _cached_codec(schema, _DataclassCodec)
        if _is_pydantic_model(schema):
            return _cached_codec(schema, _PydanticCodec)
    hint = "" if _pydantic_base() is not None else " (pydantic is not installed)"
    raise TypeError(f"a payload schema must be a dataclass or a pydantic model class{hint}, not {schema!r}")


@functools.lru_cache(maxsize=None)
def _cached_codec(schema: type, kind: type) -> Any:
    return kind(schema)


# ------------------------------------------------------------------ public API

class TaskType(Generic[P]):
    """A task type name bound to a payload schema.

    ``TaskType(name, Schema)(obj)`` builds a ``fastq.Task`` with ``obj`` as JSON;
    ``.handle(mux)`` registers a handler that receives the decoded object.
    """

    def __init__(self, type: str, schema: type[P]) -> None:
        if not isinstance(type, str) or not type.strip():
            raise ValueError(f"task type must be a non-blank str, got {type!r}")
        self.type = type
        self.schema = schema
        self._codec = _codec_for(schema)

    def __repr__(self) -> str:
        return f"TaskType({self.type!r}, {self.schema.__name__})"

    def encode(self, payload: P) -> bytes:
        """The JSON bytes of ``payload``; ``PayloadError`` names a field that does not fit."""
        encoded: bytes = self._codec.encode(self.type, payload)
        return encoded

    def decode(self, data: bytes) -> P:
        """The schema object in ``data``; ``PayloadError`` names what does not match."""
        decoded: P = self._codec.decode(self.type, data)
        return decoded

    def __call__(self, payload: P, *, headers: Optional[Mapping[str, str]] = None) -> Task:
        """A ``fastq.Task`` of this type carrying ``payload`` (enqueue it with any client)."""
        return Task(self.type, self.encode(payload), headers)

    def handler(self, fn: Callable[[P], Any]) -> Callable[[Task], Any]:
        """Wrap ``fn(payload)`` as a task handler (``def`` stays sync, ``async def`` async).

        A payload that does not match the schema raises ``SkipRetry`` naming the
        field, so the worker archives the task instead of retrying it.
        """
        if not callable(fn):
            raise TypeError(f"handler is not callable: {fn!r}")
        decode = self._decode_or_skip
        if is_async_handler(fn):
            @functools.wraps(fn)
            async def typed_async(task: Task) -> Any:
                return await fn(decode(task))
            return typed_async

        @functools.wraps(fn)
        def typed(task: Task) -> Any:
            return fn(decode(task))
        return typed

    def handle(self, mux: ServeMux) -> Callable[[Callable[[P], Any]], Callable[[P], Any]]:
        """Decorator: register ``fn(payload)`` on ``mux`` for this type; returns ``fn`` unchanged."""
        if not isinstance(mux, ServeMux):
            raise TypeError(f"handle() needs a fastq.ServeMux, not {type(mux).__name__}")

        def register(fn: Callable[[P], Any]) -> Callable[[P], Any]:
            mux.handle(self.type, self.handler(fn))
            return fn
        return register

    def _decode_or_skip(self, task: Task) -> P:
        try:
            return self.decode(task.payload)
        except PayloadError as exc:
            raise SkipRetry(str(exc)) from exc


def typed_task(mux: ServeMux, task_type: Any,
               schema: Optional[type] = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``@typed_task(mux, "email:deliver", EmailPayload)`` (or ``typed_task(mux, EmailTask)``)
    registers a handler that receives the decoded payload; the function is returned unchanged."""
    if isinstance(task_type, TaskType):
        if schema is not None and schema is not task_type.schema:
            raise TypeError(f"{task_type!r} already has a schema; do not pass another")
        return task_type.handle(mux)
    if schema is None:
        raise TypeError("typed_task() needs a schema: typed_task(mux, 'type', SchemaClass)")
    return TaskType(task_type, schema).handle(mux)


def make_task(type: str, payload: Any, *, headers: Optional[Mapping[str, str]] = None) -> Task:
    """A ``fastq.Task`` whose payload is ``payload`` (a dataclass or pydantic model instance) as JSON."""
    if isinstance(payload, (bytes, bytearray, memoryview, str, dict, list)) or payload is None:
        raise TypeError(f"make_task() needs a dataclass or pydantic model instance, not "
                        f"{builtins.type(payload).__name__} (for raw bytes use fastq.Task(type, payload))")
    return TaskType(type, builtins.type(payload))(payload, headers=headers)


def encode_payload(obj: Any, task_type: str = "") -> bytes:
    """The JSON bytes of a dataclass or pydantic model instance (checked against its class)."""
    encoded: bytes = _codec_for(builtins.type(obj)).encode(task_type or "task", obj)
    return encoded


def decode_payload(schema: type[P], data: bytes, task_type: str = "") -> P:
    """Decode JSON ``data`` into ``schema``; ``PayloadError`` names what does not match."""
    decoded: P = _codec_for(schema).decode(task_type or "task", data)
    return decoded


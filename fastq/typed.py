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

import builtins
import dataclasses
import functools
from typing import Any, Callable, Generic, Mapping, Optional, TypeVar

from fastq import _gojson
from fastq._schema import (
    _Bad,
    _check_annotation,
    _dump,
    _is_pydantic_model,
    _load_dataclass,
    _loads,
    _pydantic_base,
    _pydantic_error,
)
from fastq.errors import PayloadError, SkipRetry
from fastq.mux import ServeMux, is_async_handler
from fastq.task import Task

__all__ = ["TaskType", "typed_task", "make_task", "encode_payload", "decode_payload"]

P = TypeVar("P")


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


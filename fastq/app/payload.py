"""An App task's arguments <-> its JSON payload, and its return value <-> the stored result.

The payload is a JSON object with the parameters' names as keys, in the parameters' order,
byte for byte as Go's ``encoding/json`` writes a struct with those fields (``fastq._gojson``:
floats, HTML-safe string escapes, RFC 3339 times, base64 bytes, sorted map keys):
``send_email("a@b.c", subject="hi")`` is ``{"to":"a@b.c","subject":"hi"}``. Values are checked
against the parameters' type hints with ``fastq.typed``'s machinery (dataclasses, pydantic
models, ``datetime``, ``UUID``, enums, ``list``/``dict``/``tuple``, unions, ...; an unannotated
parameter takes any JSON value).
Only the arguments given are written: a parameter left out takes its default when the task
runs. Unknown keys and missing required parameters are refused on both sides.

The return value is JSON too (by the return annotation), except ``bytes``, stored as they are.
"""
from __future__ import annotations

import base64
import inspect
import math
import typing
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Mapping, Optional, Sequence

from fastq import _gojson
from fastq._schema import _at, _Bad, _check_annotation, _dump, _dump_any, _is_union, _load, _loads
from fastq.errors import PayloadError, SkipRetry, TaskArgumentError

__all__ = ["ArchivedError", "Signature", "JSONResult", "NO_ANNOTATION"]

NO_ANNOTATION: Any = inspect.Parameter.empty

# Seconds a task that returns something is kept after it succeeds, with its result (Asynq keeps
# none by default: a task deleted at once has no result to read). Workflow steps too.
DEFAULT_RESULT_RETENTION = 3600
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class ArchivedError(SkipRetry):
    """Raised by an App task's handler for a failure that is not retried (an exception outside
    ``retry_on``, a payload or a return value that does not fit): the task is archived at once
    with this text. The original exception is its ``__cause__``."""


class JSONResult(bytes):
    """The JSON bytes of a task's return value, marked as such (a plain ``bytes`` return value
    is stored raw). The worker stores it like any bytes."""


@dataclass(frozen=True)
class _Param:
    name: str
    annotation: Any
    required: bool
    positional_only: bool
    # '"name":' and the function that writes a value of the annotation as Go's JSON text
    # (before _gojson.go_escape), raising _Bad as fastq.typed's _dump does
    prefix: str
    encode: Callable[[Any], str]


def _dumps(value: Any) -> bytes:
    return _gojson.dumps(value)


# ----------------------------------------------------------- one encoder per parameter
# A parameter of a JSON scalar type (or unannotated, or Optional of one) gets a function that
# checks the value and writes its JSON text directly; any other annotation goes through
# fastq.typed's _dump and _gojson.text. Both give the same text and the same errors
# (tests/test_app_gojson.py compares them).

_go_string = _gojson.go_string
_go_float = _gojson.go_float


def _encode_str(value: Any) -> str:
    if isinstance(value, str):
        return _go_string(value)
    raise _Bad(f"expected str, got {type(value).__name__}")


def _encode_int(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return int.__repr__(value)
    raise _Bad(f"expected int, got {type(value).__name__}")


def _encode_bool(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    raise _Bad(f"expected bool, got {type(value).__name__}")


def _encode_float(value: Any) -> str:
    if isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool)):
        if not math.isfinite(value):
            raise _Bad(f"{value!r} cannot be written as JSON")
        return _go_float(float(value))
    raise _Bad(f"expected float, got {type(value).__name__}")


def _encode_none(value: Any) -> str:
    if value is None:
        return "null"
    raise _Bad(f"expected None, got {type(value).__name__}")


def _encode_bytes(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return '"' + base64.b64encode(value).decode("ascii") + '"'
    raise _Bad(f"expected bytes, got {type(value).__name__}")


def _encode_datetime(value: Any) -> str:
    if isinstance(value, datetime):
        return '"' + _gojson.go_time(value) + '"'
    raise _Bad(f"expected datetime, got {type(value).__name__}")


def _encode_any(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return _go_string(value)
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is float:
        if not math.isfinite(value):
            raise _Bad(f"{value!r} cannot be written as JSON")
        return _go_float(value)
    return _gojson.text(_dump_any(value))


_SCALAR_ENCODERS: dict[Any, Callable[[Any], str]] = {
    str: _encode_str, int: _encode_int, float: _encode_float, bool: _encode_bool, type(None): _encode_none,
    Any: _encode_any, object: _encode_any, bytes: _encode_bytes, datetime: _encode_datetime,
}


def _encoder(annotation: Any) -> Callable[[Any], str]:
    """The function that writes a value of ``annotation`` as JSON text, checking it."""
    try:
        direct = _SCALAR_ENCODERS.get(annotation)
    except TypeError:  # an unhashable annotation (Annotated metadata, ...)
        direct = None
    if direct is not None:
        return direct
    args = typing.get_args(annotation)
    if _is_union(typing.get_origin(annotation)) and len(args) == 2 and type(None) in args:
        inner = _encoder(args[0] if args[1] is type(None) else args[1])

        def optional(value: Any) -> str:
            return "null" if value is None else inner(value)
        return optional

    def general(value: Any) -> str:
        return _gojson.text(_dump(value, annotation))
    return general


class Signature:
    """The parameters and return annotation of a task function, and the JSON mapping of both."""

    def __init__(self, fn: Callable[..., Any], task_type: str) -> None:
        self.task_type = task_type
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"task {task_type!r}: cannot read the signature of {fn!r}: {exc}") from None
        try:
            hints = typing.get_type_hints(fn)
        except Exception as exc:  # NameError for an annotation that does not resolve
            raise TypeError(f"task {task_type!r}: cannot resolve the annotations of "
                            f"{getattr(fn, '__qualname__', fn)!r}: {exc}") from None
        params: list[_Param] = []
        for p in sig.parameters.values():
            if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                raise TypeError(f"task {task_type!r}: parameter {p.name!r} is *args or **kwargs; a task's "
                                f"parameters must have names (they are the keys of its JSON payload)")
            annotation = hints.get(p.name, Any)
            try:
                _check_annotation(annotation, p.name, set())
            except TypeError as exc:
                raise TypeError(f"task {task_type!r}: parameter {p.name!r}: {exc}") from None
            params.append(_Param(p.name, annotation, p.default is inspect.Parameter.empty,
                                 p.kind is inspect.Parameter.POSITIONAL_ONLY, _gojson.go_string(p.name) + ":",
                                 _encoder(annotation)))
        self.params = tuple(params)
        self.by_name = {p.name: p for p in params}
        self.positional = tuple(p for p, raw in zip(params, sig.parameters.values(), strict=True)
                                if raw.kind in _POSITIONAL)
        self.required = tuple(p.name for p in params if p.required)
        # A call with positional arguments only takes the fast path of dump_args when it gives at
        # least this many (every required parameter is then given): None when a required
        # parameter is keyword-only.
        positional_names = [p.name for p in self.positional]
        self._min_positional: Optional[int] = None
        if all(name in positional_names for name in self.required):
            self._min_positional = max((positional_names.index(n) + 1 for n in self.required), default=0)
        self.returns: Any = hints.get("return", NO_ANNOTATION)
        if self.returns is not NO_ANNOTATION and self.returns is not type(None):
            try:
                _check_annotation(self.returns, "return", set())
            except TypeError as exc:
                raise TypeError(f"task {task_type!r}: return annotation: {exc}") from None

    @property
    def returns_value(self) -> bool:
        """Whether the function is annotated to return something (not ``None``, not unannotated)."""
        return self.returns is not NO_ANNOTATION and self.returns is not type(None) and \
            self.returns is not typing.NoReturn

    # ----------------------------------------------------------- enqueue side

    def bind(self, args: Sequence[Any], kwargs: Mapping[str, Any], index: Optional[int] = None) -> dict[str, Any]:
        """``{name: value}`` of the arguments given, as a call would bind them (no defaults added)."""
        if len(args) > len(self.positional):
            raise self._arg_error("", f"takes {len(self.positional)} positional argument(s) but "
                                      f"{len(args)} were given", index)
        bound = {p.name: value for p, value in zip(self.positional, args, strict=False)}
        for name, value in kwargs.items():
            param = self.by_name.get(name)
            if param is None:
                known = ", ".join(self.by_name) or "no parameters"
                raise self._arg_error(name, f"unexpected keyword argument (the task has: {known})", index)
            if name in bound:
                raise self._arg_error(name, "got multiple values", index)
            if param.positional_only:
                raise self._arg_error(name, "is positional-only; pass it by position", index)
            bound[name] = value
        if len(bound) < len(self.required):
            missing = [name for name in self.required if name not in bound]
            if missing:
                raise self._arg_error(missing[0], "missing required argument", index)
        return bound

    def dump_args(self, args: Sequence[Any], kwargs: Mapping[str, Any], index: Optional[int] = None) -> bytes:
        """The JSON payload of a call, keys in parameter order (a Go struct's field order);
        ``TaskArgumentError`` names the parameter that does not fit."""
        least = self._min_positional
        if not kwargs and least is not None and least <= len(args) <= len(self.positional):
            params: Sequence[_Param] = self.positional  # the call binds by position: no bind() needed
            values: Sequence[Any] = args
        else:
            bound = self.bind(args, kwargs, index)
            params = [p for p in self.params if p.name in bound]
            values = [bound[p.name] for p in params]
        try:
            body = ",".join([p.prefix + p.encode(v) for p, v in zip(params, values, strict=False)])
        except (_Bad, ValueError):
            self._raise_arg_error(params, values, index)
            raise  # not reached: the second pass raises
        return _gojson.go_escape("{" + body + "}").encode()

    def dump_args_around_first(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[bytes, bytes]:
        """The payload of a call whose first parameter is filled later (a workflow step that
        receives the previous step's result), as the bytes before and after that value:
        ``{"x":`` and ``,"y":10}`` for ``add(x, y)`` given ``y=10``. ``TaskArgumentError`` names
        a parameter that does not fit; ``TypeError`` when the task has no positional parameter."""
        if not self.positional:
            raise TypeError(f"task {self.task_type!r} takes no positional parameter to receive the previous "
                            f"step's result")
        first = self.positional[0]
        if first.name in kwargs:
            raise self._arg_error(first.name, "is filled by the previous step's result; do not give it", None)
        bound = self.bind((None, *args), kwargs)
        params = [p for p in self.params if p.name in bound and p is not first]
        values = [bound[p.name] for p in params]
        try:
            body = "".join(["," + p.prefix + p.encode(v) for p, v in zip(params, values, strict=False)])
        except (_Bad, ValueError):
            self._raise_arg_error(params, values, None)
            raise  # not reached
        return _gojson.go_escape("{" + first.prefix).encode(), _gojson.go_escape(body + "}").encode()

    def _raise_arg_error(self, params: Sequence[_Param], values: Sequence[Any], index: Optional[int]) -> None:
        """Encode the values again one by one, to name the parameter that does not fit."""
        for param, value in zip(params, values, strict=False):
            name = param.name
            try:
                param.encode(value)
            except _Bad as bad:
                raise self._arg_error(f"{name}.{bad.path}" if bad.path and not bad.path.startswith("[")
                                      else name + bad.path, bad.reason, index) from None
            except ValueError as exc:  # e.g. an int over Python's digit limit
                raise self._arg_error(name, str(exc), index) from None

    def _arg_error(self, field: str, reason: str, index: Optional[int]) -> TaskArgumentError:
        return TaskArgumentError(self.task_type, field, reason, index)

    # ----------------------------------------------------------- worker side

    def load_args(self, data: bytes) -> tuple[list[Any], dict[str, Any]]:
        """Positional and keyword arguments from a payload; ``PayloadError`` names what does not fit.

        An empty payload is an empty object (a Go producer may send none for a task without
        parameters)."""
        task_type = self.task_type
        if not data:
            value: Any = {}
        else:
            try:
                value = _loads(data)
            except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
                raise PayloadError(task_type, "", f"not valid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise PayloadError(task_type, "", f"expected a JSON object of the task's arguments by parameter name, "
                                              f"got {type(value).__name__}")
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        by_name = self.by_name
        for name, raw in value.items():
            param = by_name.get(name)
            if param is None:
                known = ", ".join(by_name) or "no parameters"
                raise PayloadError(task_type, name, f"unknown parameter (the task has: {known})")
            try:
                loaded = _at(name, _load, raw, param.annotation)
            except _Bad as bad:
                raise PayloadError(task_type, bad.path, bad.reason) from None
            kwargs[name] = loaded
        for name in self.required:
            if name not in kwargs:
                raise PayloadError(task_type, name, "missing")
        for param in self.positional:
            if not param.positional_only:
                break
            if param.name in kwargs:
                args.append(kwargs.pop(param.name))
            else:  # a positional-only parameter with a default, left out: so are the ones after it
                break
        return args, kwargs

    # ----------------------------------------------------------- the return value

    def dump_result(self, value: Any) -> Optional[bytes]:
        """What the worker stores for a return value: ``None`` for ``None``, bytes as they are,
        anything else as JSON checked against the return annotation (``TypeError`` if it does not fit)."""
        if value is None:
            return None
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        annotation = Any if self.returns in (NO_ANNOTATION, type(None)) else self.returns
        try:
            return JSONResult(_dumps(_dump(value, annotation)))
        except _Bad as bad:
            where = f" at {bad.path!r}" if bad.path else ""
            raise TypeError(f"task {self.task_type!r} returned a value that cannot be stored as JSON "
                            f"by its return annotation{where}: {bad.reason}") from None
        except ValueError as exc:
            raise TypeError(f"task {self.task_type!r} returned a value that cannot be stored as JSON: "
                            f"{exc}") from None

    def load_result(self, data: bytes) -> Any:
        """The return value from stored result bytes: raw for a ``-> bytes`` task, else JSON
        loaded by the return annotation (``PayloadError`` if it does not fit)."""
        if self.returns is bytes:
            return data
        annotation = Any if self.returns in (NO_ANNOTATION, type(None)) else self.returns
        try:
            return _load(_loads(data), annotation)
        except ValueError as exc:
            raise PayloadError(self.task_type, "", f"result is not valid JSON ({exc})") from None
        except _Bad as bad:
            raise PayloadError(self.task_type, bad.path, f"result: {bad.reason}") from None

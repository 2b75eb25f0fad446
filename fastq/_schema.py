"""The JSON schema machinery behind typed payloads and App task arguments: checking annotations,
loading JSON values into dataclasses, pydantic models and the other supported types, and dumping
them back as Go's ``encoding/json`` writes them (``fastq._gojson``). Public use goes through
``fastq.typed`` and ``fastq.App``."""
from __future__ import annotations

import base64
import binascii
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
from typing import Any, Callable, Mapping, Optional

from fastq import _gojson

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

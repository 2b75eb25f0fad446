"""JSON text as Go's ``encoding/json`` ``Marshal`` writes it, so Go and Python payloads match byte for byte.

Python's ``json.dumps(..., separators=(",", ":"), ensure_ascii=False)`` already writes what Go
writes for ``null``, booleans, integers, and most of a string (``\\"``, ``\\\\``, ``\\b``,
``\\f``, ``\\n``, ``\\r``, ``\\t``, other control characters as lowercase ``\\u00XX``; DEL and
non-ASCII as they are). The differences, each following Go's ``encoding/json/encode.go``
(``Marshal`` escapes HTML by default) and ``time.Time.MarshalJSON``:

* strings: ``<``, ``>``, ``&`` are written ``\\u003c``, ``\\u003e``, ``\\u0026``, and U+2028 /
  U+2029 ``\\u2028`` / ``\\u2029``; a byte sequence that is not valid UTF-8 becomes
  ``\\ufffd`` (here: a lone surrogate, what such bytes decode to with ``surrogateescape``).
  These characters only occur inside strings in JSON text, so ``go_escape`` fixes a whole
  document in one pass, and costs one regex scan when there is nothing to fix.
* numbers: a float64 is written by ``strconv`` with the shortest digits that read back the
  same (Python's ``repr`` finds the same digits), in ``'f'`` format (``1``, ``0.1``,
  ``100000000000000000000``, ``0.000001``, ``-0``) when ``1e-6 <= |x| < 1e21`` or ``x`` is
  zero, else in ``'e'`` format with at least two exponent digits (``1e+21``, ``1.5e-300``),
  after which a two-digit negative exponent loses its leading zero (``1e-07`` becomes ``1e-7``).
* ``time.Time``: RFC 3339 with the nanoseconds' trailing zeros dropped (no dot when there is
  no fraction), ``Z`` for a zero UTC offset, else ``+hh:mm`` / ``-hh:mm`` (the offset's
  seconds truncated). Go has no time without a zone: a naive ``datetime`` is written the
  same way without one.
* ``[]byte`` is standard base64 with padding, as ``fastq.typed`` writes ``bytes`` already.

Map keys are written sorted in Go; ``fastq.typed`` sorts a ``dict`` field's keys when it
dumps it, and keeps a struct's (a dataclass's, an App task's parameters') field order.
"""
from __future__ import annotations

import re
from datetime import datetime
from json.encoder import encode_basestring  # the C version when available; escapes as Go does, but see above
from typing import Any, Callable

__all__ = ["dumps", "text", "go_escape", "go_float", "go_time", "go_string"]

go_string: Callable[[str], str] = encode_basestring  # before go_escape

_SPECIAL = re.compile("[<>&\u2028\u2029\ud800-\udfff]")
_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _escape(match: re.Match[str]) -> str:
    return _ESCAPES.get(match.group(), "\\ufffd")  # else a lone surrogate: Go's replacement rune


def go_escape(json_text: str) -> str:
    """JSON text written by ``text`` / ``go_string`` with Go's HTML-safe and UTF-8 escapes applied."""
    if _SPECIAL.search(json_text) is None:
        return json_text
    return _SPECIAL.sub(_escape, json_text)


def go_float(value: float) -> str:
    """A finite float as Go's ``encoding/json`` writes a float64 (``ValueError`` for nan and infinities)."""
    r = float.__repr__(value)
    if "e" not in r:
        if r.endswith(".0"):
            return r[:-2]  # an integral value: Go's 'f' format has no fraction
        if r in ("inf", "-inf", "nan"):
            raise ValueError(f"Out of range float values are not JSON compliant: {r}")
        return r  # 1e-4 <= |x| < 1e16: repr's fixed notation is Go's 'f' format
    magnitude = abs(value)
    if 1e-6 <= magnitude < 1e21:  # Go's 'f' range, where repr uses an exponent
        from decimal import Decimal  # rare: imported when first needed

        return format(Decimal(r), "f")
    mantissa, _, exponent = r.partition("e")  # repr's 'e' form: Go's, before Go's exponent clean-up
    if len(exponent) == 3 and exponent[0] == "-" and exponent[1] == "0":
        exponent = "-" + exponent[2]
    return f"{mantissa}e{exponent}"


def go_time(value: datetime) -> str:
    """A ``datetime`` as ``time.Time.MarshalJSON`` writes it (without the quotes)."""
    out = (f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
           f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}")
    if value.microsecond:
        out += "." + f"{value.microsecond:06d}".rstrip("0")
    offset = value.utcoffset()
    if offset is None:
        return out
    seconds = int(offset.total_seconds())
    if seconds == 0:
        return out + "Z"
    minutes = -(-seconds // 60) if seconds < 0 else seconds // 60  # Go divides toward zero
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return f"{out}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def text(value: Any) -> str:
    """JSON text of a JSON value (``None``, ``bool``, ``int``, ``float``, ``str``, lists, tuples and
    dicts with ``str`` keys, in their order) as Go writes it, before ``go_escape``."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return encode_basestring(value)
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join([text(v) for v in value]) + "]"
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"keys must be str, not {type(k).__name__}")
            items.append(encode_basestring(k) + ":" + text(v))
        return "{" + ",".join(items) + "}"
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    """The UTF-8 JSON bytes Go's ``json.Marshal`` gives for ``value`` (a JSON value, see ``text``)."""
    return go_escape(text(value)).encode()

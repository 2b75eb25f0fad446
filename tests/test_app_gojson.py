"""App payloads are the bytes Go's ``json.Marshal`` writes for the same struct.

There is no Go toolchain on the machine these tests were written on, so the expected bytes are
written out by hand from Go's documented rules (``encoding/json``'s ``Marshal``, which escapes
HTML by default, its float64 encoder, and ``time.Time.MarshalJSON``), as ``fastq/_gojson.py``
describes them: ``<`` ``>`` ``&`` U+2028 U+2029 escaped, invalid UTF-8 as ``\\ufffd``, floats in
``'f'`` format for 1e-6 <= |x| < 1e21 and ``'e'`` format (exponent ``e-7``, ``e+21``) outside,
integral floats without a fraction, RFC 3339 times with the fraction's trailing zeros dropped and
``Z`` for UTC, ``[]byte`` as standard base64, map keys sorted, struct fields in their order.
"""
from __future__ import annotations

import math
import sys
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any, Optional

import pytest

import fastq
from fastq import _gojson
from fastq._schema import _Bad, _dump
from fastq.app.payload import Signature, _encoder
from fastq.typed import encode_payload

UTC = timezone.utc

# (Python value, the JSON text Go writes for the same Go value)
SCALARS = [
    ("plain", b'"plain"'),
    ("<a href='x'>Tom & Jerry</a>", b'"\\u003ca href=\'x\'\\u003eTom \\u0026 Jerry\\u003c/a\\u003e"'),
    ("line\u2028para\u2029end", b'"line\\u2028para\\u2029end"'),
    ("\u00fcn\u00ef \u65e5\u672c \U0001f389", '"\u00fcn\u00ef \u65e5\u672c \U0001f389"'.encode()),  # UTF-8 as is
    ('q"b\\s/', b'"q\\"b\\\\s/"'),
    ("\x00\x01\x1f\b\f\n\r\t\x7f", b'"\\u0000\\u0001\\u001f\\b\\f\\n\\r\\t\x7f"'),  # DEL is not escaped
    ("bad\udc80byte", b'"bad\\ufffdbyte"'),  # an undecodable byte (surrogateescape): Go's U+FFFD
    (0.1, b"0.1"),
    (1e20, b"100000000000000000000"),
    (1e21, b"1e+21"),
    (-1e21, b"-1e+21"),
    (1.5e300, b"1.5e+300"),
    (1e-6, b"0.000001"),
    (1e-7, b"1e-7"),
    (2.5e-10, b"2.5e-10"),
    (1e-100, b"1e-100"),
    (5e-324, b"5e-324"),
    (1e-5, b"0.00001"),
    (1e16, b"10000000000000000"),
    (12345678901234567890.0, b"12345678901234567000"),
    (123456789.0, b"123456789"),
    (1.0, b"1"),
    (0.0, b"0"),
    (-0.0, b"-0"),
    (1 / 3, b"0.3333333333333333"),
    (2**63 - 1, b"9223372036854775807"),
    (-(2**63), b"-9223372036854775808"),
    (10**30, b"1000000000000000000000000000000"),
    (True, b"true"),
    (False, b"false"),
    (None, b"null"),
]


@pytest.mark.parametrize("value, go", SCALARS, ids=[repr(v)[:30] for v, _ in SCALARS])
def test_json_values_are_written_as_go_writes_them(value, go):
    assert _gojson.dumps(value) == go
    assert _gojson.dumps([value, {"k": value}]) == b"[" + go + b',{"k":' + go + b"}]"


TIMES = [
    (datetime(2024, 5, 1, 10, 0, tzinfo=UTC), "2024-05-01T10:00:00Z"),
    (datetime(2024, 5, 1, 10, 0, 0, 123450, tzinfo=UTC), "2024-05-01T10:00:00.12345Z"),
    (datetime(2024, 5, 1, 10, 0, 0, 1, tzinfo=UTC), "2024-05-01T10:00:00.000001Z"),
    (datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=timezone(timedelta(hours=5, minutes=30))),
     "2024-05-01T10:00:00.5+05:30"),
    (datetime(2024, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-3))), "2024-12-31T23:59:59-03:00"),
    (datetime(999, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(0))), "0999-01-02T03:04:05Z"),
    (datetime(2024, 5, 1, 10, 0, 0, 250000), "2024-05-01T10:00:00.25"),  # naive: no zone (Go has none)
]


@pytest.mark.parametrize("value, go", TIMES, ids=[t for _, t in TIMES])
def test_datetimes_are_rfc3339_as_time_time_marshals_them_and_read_back(value, go):
    assert _gojson.go_time(value) == go

    def f(at: datetime) -> None: ...

    sig = Signature(f, "t")
    payload = sig.dump_args((value,), {})
    assert payload == b'{"at":"' + go.encode() + b'"}'
    assert sig.load_args(payload) == ([], {"at": value})


def test_go_times_with_any_fraction_length_read_back():
    def f(at: datetime) -> None: ...

    sig = Signature(f, "t")
    for text, micro in (("2024-05-01T10:00:00.5Z", 500000), ("2024-05-01T10:00:00.123456789Z", 123456),
                        ("2024-05-01T10:00:00.1234+02:00", 123400)):
        _, kwargs = sig.load_args(b'{"at":"' + text.encode() + b'"}')
        assert kwargs["at"].microsecond == micro and kwargs["at"].utcoffset() is not None


def test_a_payload_is_a_go_struct_in_parameter_order():
    def everything(s: str, i: int, f: float, ok: bool, nothing: None, floats: list[float], counts: dict[str, int],
                   at: datetime, day: date, raw: bytes, ref: uuid.UUID, anything: Any, maybe: Optional[str] = None,
                   later: Optional[float] = None) -> None: ...

    sig = Signature(everything, "go:everything")
    args = ("<b>&", 2**40, 1e21, True, None, [0.5, 1.0, 1e-7, -0.0], {"zeta": 1, "alpha": 2, "<m>": 3},
            datetime(2024, 5, 1, 10, 0, 0, 120000, tzinfo=UTC), date(2024, 5, 6), b"\x00\xff<\xfb\xff",
            uuid.UUID(int=1), {"b": [1, {"z": 1.5, "a": [True, None]}], "a": "x\u2028"})
    expected = (b'{"s":"\\u003cb\\u003e\\u0026","i":1099511627776,"f":1e+21,"ok":true,"nothing":null,'
                b'"floats":[0.5,1,1e-7,-0],"counts":{"\\u003cm\\u003e":3,"alpha":2,"zeta":1},'
                b'"at":"2024-05-01T10:00:00.12Z","day":"2024-05-06","raw":"AP88+/8=",'
                b'"ref":"00000000-0000-0000-0000-000000000001",'
                b'"anything":{"a":"x\\u2028","b":[1,{"a":[true,null],"z":1.5}]}}')
    assert sig.dump_args(args, {}) == expected  # positional: the fast path
    by_name = dict(zip([p.name for p in sig.params], args, strict=False))
    assert sig.dump_args((), dict(reversed(by_name.items()))) == expected  # keywords in any order: same bytes
    assert sig.dump_args(args[:2], dict(list(by_name.items())[2:])) == expected
    with_optional = sig.dump_args(args, {"later": 100.0, "maybe": "&"})
    assert with_optional == expected[:-1] + b',"maybe":"\\u0026","later":100}'
    # and back: what a worker gives the function
    _, kwargs = sig.load_args(expected)
    assert kwargs["f"] == 1e21 and kwargs["floats"] == [0.5, 1.0, 1e-7, 0.0] and kwargs["i"] == 2**40
    assert kwargs["raw"] == b"\x00\xff<\xfb\xff" and kwargs["s"] == "<b>&"
    assert list(kwargs["counts"]) == ["<m>", "alpha", "zeta"] and kwargs["anything"] == args[-1]


def test_results_are_go_json_too():
    def f() -> dict[str, Any]: ...

    sig = Signature(f, "t")
    assert sig.dump_result({"b": 1.0, "a": "<&>", "c": [1e-7]}) == b'{"a":"\\u003c\\u0026\\u003e","b":1,"c":[1e-7]}'


def test_typed_payloads_are_go_json_too():
    from dataclasses import dataclass

    @dataclass
    class Mail:
        to: str
        score: float
        at: datetime

    assert encode_payload(Mail("<a>", 1e20, datetime(2024, 5, 1, tzinfo=UTC))) == \
        b'{"to":"\\u003ca\\u003e","score":100000000000000000000,"at":"2024-05-01T00:00:00Z"}'


# ------------------------------------------------------------------ the fast encoders agree with fastq.typed

class Num(int):
    def __repr__(self) -> str:
        return "Num!"


ANNOTATIONS = [str, int, float, bool, type(None), Any, object, bytes, datetime, Optional[int], Optional[float],
               Optional[str], Optional[datetime], Optional[bytes]]
VALUES = ["s", "<&>", "\udc80", "", 0, -7, 2**70, Num(5), True, False, None, 0.1, 1e21, 1e-7, -0.0, 3.0,
          math.nan, math.inf, -math.inf, [1, "a"], (1.5, None), {"b": 1, "a": [2.0]}, {1: 2}, b"x", b"\xfb\xff",
          bytearray(b"<>"), memoryview(b"ab"), datetime(2024, 5, 1, 0, 0, 0, 10, tzinfo=UTC), datetime(2024, 5, 1),
          date(2024, 5, 1), object()]


@pytest.mark.parametrize("annotation", ANNOTATIONS, ids=str)
def test_fast_encoders_write_and_refuse_exactly_as_the_general_path(annotation):
    fast = _encoder(annotation)
    for value in VALUES:
        try:
            general: Any = _gojson.text(_dump(value, annotation))
        except _Bad as bad:
            general = ("bad", bad.reason, bad.path)
        try:
            got: Any = fast(value)
        except _Bad as bad:
            got = ("bad", bad.reason, bad.path)
        assert got == general, (annotation, value)


@pytest.mark.parametrize("call, field, reason", [
    (("a", 1, math.nan), "f", "nan cannot be written as JSON"),
    (("a", True, 1.0), "i", "expected int, got bool"),
    (("a", 1, "1.0"), "f", "expected float, got str"),
    ((b"a", 1, 1.0), "s", "expected str, got bytes"),
])
def test_a_bad_argument_on_the_fast_path_names_its_parameter(call, field, reason):
    def f(s: str, i: int, f: float, extra: Optional[list[int]] = None) -> None: ...

    sig = Signature(f, "t")
    for args, kwargs in ((call, {}), ((), dict(zip("sif", call, strict=True)))):
        with pytest.raises(fastq.TaskArgumentError) as info:
            sig.dump_args(args, kwargs, 3)
        assert info.value.field == field and reason in str(info.value) and info.value.index == 3
    with pytest.raises(fastq.TaskArgumentError) as info:
        sig.dump_args(("a", 1, 1.0, [1, "x"]), {})
    assert info.value.field == "extra[1]"
    if hasattr(sys, "get_int_max_str_digits"):  # an int Python will not write in decimal
        with pytest.raises(fastq.TaskArgumentError) as info:
            sig.dump_args(("a", 10 ** (sys.get_int_max_str_digits() + 1), 1.0), {})
        assert info.value.field == "i" and "digits" in str(info.value)

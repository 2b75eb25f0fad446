"""TaskMessage codec: golden bytes from Go Asynq v0.26.0, malformed input, round trips.

Every test takes the ``codec`` fixture and so runs against both the compiled
``fastq._speedups`` and the pure-Python ``fastq._speedups_py``.
"""
from __future__ import annotations

import os

import pytest
from helpers import golden
from hypothesis import given, settings
from hypothesis import strategies as st

from fastq.errors import DecodeError

CASES = golden("task_messages.json")["cases"]
FIELDS = ["type", "payload", "id", "queue", "retry", "retried", "error_msg", "timeout", "deadline",
          "unique_key", "last_failed_at", "retention", "completed_at", "group_key", "headers"]
SPEC_HEX = ("0a0d656d61696c3a64656c69766572120e7b22757365725f6964223a34327d1a0d6f7261636c652d7461736b2d31"
            "220764656661756c74280340880e60901c")


def as_fields(msg) -> dict:
    return {name: getattr(msg, name) for name in FIELDS}


def golden_fields(case: dict) -> dict:
    fields = dict(case["fields"])
    fields["payload"] = bytes.fromhex(fields.pop("payload_hex"))
    return fields


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_decode_golden(codec, case):
    msg = codec.decode_message(bytes.fromhex(case["hex"]))
    assert as_fields(msg) == golden_fields(case)
    assert msg.unknown == b""


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_encode_golden(codec, case):
    msg = codec.TaskMessage(**golden_fields(case))
    data = codec.encode_message(msg)
    if case["byte_exact"]:
        assert data.hex() == case["hex"]
    else:  # several headers: Go writes map entries in random order
        assert len(data) == case["length"]
        assert as_fields(codec.decode_message(data)) == golden_fields(case)


def test_spec_section_20_bytes(codec):
    msg = codec.TaskMessage(type="email:deliver", payload=b'{"user_id":42}', id="oracle-task-1",
                            queue="default", retry=3, timeout=1800, retention=3600)
    assert codec.encode_message(msg).hex() == SPEC_HEX
    assert codec.decode_message(bytes.fromhex(SPEC_HEX)) == msg


def test_client_builds_golden_messages(codec):
    """Messages built by fastq's option handling equal Go's for the same options."""
    from datetime import datetime, timezone

    from fastq.options import plan_enqueue
    from fastq.task import Task

    checked = 0
    for case in CASES:
        opts = case["options"]
        if "run_dependent" in case or case["name"] == "unique_nil_payload":
            continue
        kwargs = {"task_id": opts["id"], "queue": opts["queue"]}
        for src, dst in (("max_retry", "max_retry"), ("timeout_s", "timeout"), ("unique_ttl_s", "unique"),
                         ("retention_s", "retention"), ("group_key", "group")):
            if src in opts:
                kwargs[dst] = opts[src]
        for src, dst in (("deadline_unix", "deadline"), ("process_at_unix", "process_at")):
            if src in opts:
                kwargs[dst] = datetime.fromtimestamp(opts[src], timezone.utc)
        task = Task(opts["type"], bytes.fromhex(opts["payload_hex"]), opts.get("headers"))
        plan = plan_enqueue(task, kwargs)
        data = codec.encode_message(codec.TaskMessage(**{n: getattr(plan.msg, n) for n in FIELDS}))
        if case["byte_exact"]:
            assert data.hex() == case["hex"], case["name"]
        checked += 1
    assert checked >= 15


def test_unknown_fields_are_skipped_and_kept(codec):
    base = bytes.fromhex(SPEC_HEX)
    # field 16 (varint 7), field 20 (bytes "xyz"), field 21 (fixed32), field 22 (fixed64)
    extra = (bytes([0x80, 0x01, 0x07]) + bytes([0xA2, 0x01, 0x03]) + b"xyz"
             + bytes([0xAD, 0x01]) + b"\x01\x02\x03\x04" + bytes([0xB1, 0x01]) + b"\x00" * 8)
    msg = codec.decode_message(base + extra)
    assert msg.id == "oracle-task-1" and msg.retry == 3
    assert msg.unknown == extra
    msg.retried = 1
    again = codec.decode_message(codec.encode_message(msg))
    assert again.unknown == extra and again.retried == 1


def test_known_field_with_wrong_wire_type_is_unknown(codec):
    data = bytes([0x0A, 0x01]) + b"t" + bytes([0x2A, 0x01]) + b"x"  # field 5 (retry) sent as bytes
    msg = codec.decode_message(data)
    assert msg.type == "t" and msg.retry == 0
    assert msg.unknown == bytes([0x2A, 0x01]) + b"x"


def test_negative_and_large_integers(codec):
    msg = codec.TaskMessage(type="t", retry=-1, retried=2**31 - 1, deadline=-62135596800,
                            timeout=2**63 - 1, last_failed_at=-(2**63))
    data = codec.encode_message(msg)
    assert codec.decode_message(data) == msg
    # a negative int32 is sign-extended to a 10-byte varint, as protobuf requires
    assert bytes([0x28]) + b"\xff" * 9 + b"\x01" in data


def test_int32_field_takes_low_32_bits(codec):
    data = bytes([0x28]) + bytes([0x80, 0x80, 0x80, 0x80, 0x10])  # 2**32 + 0 -> 0 as int32
    assert codec.decode_message(data).retry == 0


@pytest.mark.parametrize("data, what", [
    (b"\x0a", "truncated length"),
    (b"\x0a\x05abc", "string longer than the data"),
    (b"\x12\xff\xff\xff\xff\x0f", "huge length"),
    (b"\x28" + b"\xff" * 10 + b"\x01", "varint over 10 bytes"),
    (b"\x28" + b"\xff" * 9 + b"\x02", "varint over 64 bits"),
    (b"\x00\x01", "field number 0"),
    (b"\x0b", "group wire type"),
    (b"\x0f", "wire type 7"),
    (b"\x0a\x02\xff\xfe", "invalid UTF-8 in type"),
    (b"\x7a\x04\x0a\x02\xc3\x28", "invalid UTF-8 in header"),
    (b"\x7a\x05\x0a\x09abc", "truncated header entry"),
    (b"\x0d\x01\x02", "truncated fixed32"),
    (b"\x09\x01\x02\x03", "truncated fixed64"),
    (b"\x28\x80", "truncated varint"),
])
def test_malformed_bytes_raise_decode_error(codec, data, what):
    with pytest.raises(DecodeError):
        codec.decode_message(data)


def test_decode_error_is_a_value_error(codec):
    with pytest.raises(ValueError):
        codec.decode_message(b"\x0a\x05abc")


def test_decode_rejects_non_bytes(codec):
    with pytest.raises(TypeError):
        codec.decode_message("not bytes")


def test_decode_accepts_bytearray_and_memoryview(codec):
    data = bytes.fromhex(SPEC_HEX)
    assert codec.decode_message(bytearray(data)) == codec.decode_message(memoryview(data))


@pytest.mark.parametrize("field, value, error", [
    ("retry", 2**31, OverflowError),
    ("timeout", 2**63, OverflowError),
    ("payload", "text", TypeError),
    ("type", b"bytes", TypeError),
])
def test_encode_rejects_bad_values(codec, field, value, error):
    with pytest.raises(error):
        msg = codec.TaskMessage(type="t")
        setattr(msg, field, value)
        codec.encode_message(msg)


def test_headers_sorted_and_nonstr_rejected(codec):
    msg = codec.TaskMessage(type="t", headers={"b": "2", "a": "1"})
    data = codec.encode_message(msg)
    assert data.index(b"a") < data.index(b"b")
    with pytest.raises(TypeError):
        codec.encode_message(codec.TaskMessage(type="t", headers={"a": 1}))


def test_copy_is_independent(codec):
    msg = codec.decode_message(bytes.fromhex(CASES[-1]["hex"]))
    dup = msg.copy()
    assert dup == msg
    dup.headers["new"] = "x"
    dup.retried = 9
    assert "new" not in msg.headers and msg.retried == 0


def test_equality_across_implementations():
    if os.environ.get("FASTQ_NO_EXTENSIONS"):
        pytest.skip("extension disabled")
    from fastq import _speedups, _speedups_py

    data = bytes.fromhex(SPEC_HEX)
    assert _speedups.decode_message(data) == _speedups_py.decode_message(data)


text = st.text(max_size=40)
int32 = st.integers(-(2**31), 2**31 - 1)
int64 = st.integers(-(2**63), 2**63 - 1)
messages = st.fixed_dictionaries({
    "type": text, "payload": st.binary(max_size=300), "id": text, "queue": text,
    "retry": int32, "retried": int32, "error_msg": text, "timeout": int64, "deadline": int64,
    "unique_key": text, "last_failed_at": int64, "retention": int64, "completed_at": int64,
    "group_key": text, "headers": st.dictionaries(text, text, max_size=4),
})


@settings(max_examples=300, deadline=None)
@given(fields=messages)
def test_roundtrip_property(codec, fields):
    msg = codec.TaskMessage(**fields)
    data = codec.encode_message(msg)
    assert as_fields(codec.decode_message(data)) == fields


@settings(max_examples=300, deadline=None)
@given(fields=messages)
def test_implementations_agree_byte_for_byte(fields):
    if os.environ.get("FASTQ_NO_EXTENSIONS"):
        pytest.skip("extension disabled")
    from fastq import _speedups, _speedups_py

    data = _speedups_py.encode_message(_speedups_py.TaskMessage(**fields))
    assert _speedups.encode_message(_speedups.TaskMessage(**fields)) == data


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=200))
def test_garbage_never_crashes(codec, data):
    """Arbitrary bytes either decode or raise DecodeError, never anything else."""
    try:
        msg = codec.decode_message(data)
    except DecodeError:
        return
    codec.encode_message(msg)  # whatever decoded can be written back


@pytest.mark.c_extension
def test_compiled_codec_is_loaded():
    """In a normal install the selector must pick the compiled module (not a silent fallback)."""
    if os.environ.get("FASTQ_NO_EXTENSIONS"):
        pytest.skip("FASTQ_NO_EXTENSIONS is set")
    import fastq

    assert fastq.USING_SPEEDUPS
    from fastq._codec import IMPLEMENTATION, decode_message

    assert IMPLEMENTATION == "cython"
    assert type(decode_message).__name__ in ("cython_function_or_method", "builtin_function_or_method")


def test_no_extensions_env_selects_pure_python(tmp_path):
    import subprocess
    import sys

    env = dict(os.environ, FASTQ_NO_EXTENSIONS="1")
    out = subprocess.run([sys.executable, "-c", "import fastq._codec as c; print(c.IMPLEMENTATION, c.USING_SPEEDUPS)"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["python", "False"]


def test_new_task_ids_are_uuid4_strings(codec):
    import uuid

    ids = codec.new_task_ids(2000)
    assert len(set(ids)) == 2000
    for tid in ids[:200]:
        u = uuid.UUID(tid)
        assert str(u) == tid and u.version == 4 and u.variant == uuid.RFC_4122
    assert codec.new_task_ids(0) == []

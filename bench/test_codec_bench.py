"""Codec throughput: TaskMessage encode and decode, compiled vs pure Python (100-byte payload).

Run: .venv/bin/pytest bench/test_codec_bench.py --benchmark-columns=mean,ops
"""
from __future__ import annotations

import pytest

from fastq import _speedups_py

IMPLS = [pytest.param(_speedups_py, id="pure-python")]
try:
    from fastq import _speedups

    IMPLS.insert(0, pytest.param(_speedups, id="cython"))
except ImportError:  # pragma: no cover
    pass

FIELDS = dict(type="email:deliver", payload=b"x" * 100, id="383e066f-03a4-421d-a8cd-b1de2db3de38",
              queue="default", retry=25, timeout=1800)


@pytest.mark.benchmark(group="codec-encode")
@pytest.mark.parametrize("codec", IMPLS)
def test_encode(benchmark, codec):
    msg = codec.TaskMessage(**FIELDS)
    benchmark(codec.encode_message, msg)


@pytest.mark.benchmark(group="codec-decode")
@pytest.mark.parametrize("codec", IMPLS)
def test_decode(benchmark, codec):
    data = codec.encode_message(codec.TaskMessage(**FIELDS))
    benchmark(codec.decode_message, data)


@pytest.mark.benchmark(group="codec-roundtrip")
@pytest.mark.parametrize("codec", IMPLS)
def test_encode_decode(benchmark, codec):
    msg = codec.TaskMessage(**FIELDS)
    encode, decode = codec.encode_message, codec.decode_message

    def roundtrip():
        return decode(encode(msg))

    assert benchmark(roundtrip) == msg

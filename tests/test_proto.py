"""ServerInfo / WorkerInfo / scheduler messages against Go Asynq v0.26.0 bytes."""
from __future__ import annotations

import pytest
from helpers import golden

from fastq._proto import SchedulerEnqueueEvent, SchedulerEntry, ServerInfo, Timestamp, WorkerInfo, decode, encode
from fastq.errors import DecodeError

INFO = golden("server_info.json")


def _ts(d: dict) -> Timestamp:
    return Timestamp(d["seconds"], d["nanos"])


def _server(d: dict) -> ServerInfo:
    return ServerInfo(**{**d, "start_time": _ts(d["start_time"])})


def _worker(d: dict) -> WorkerInfo:
    d = dict(d)
    d["task_payload"] = bytes.fromhex(d.pop("task_payload_hex"))
    return WorkerInfo(**{**d, "start_time": _ts(d["start_time"]), "deadline": _ts(d["deadline"])})


@pytest.mark.parametrize("sample", ["sample_active", "sample_multi_queue_strict"])
def test_server_info_golden(sample):
    s = INFO[sample]
    expected = _server(s["server_info_decoded"])
    assert decode(ServerInfo, bytes.fromhex(s["server_info_hex"])) == expected
    assert decode(ServerInfo, encode(expected)) == expected


def test_single_queue_server_info_is_byte_exact():
    s = INFO["sample_active"]
    assert encode(_server(s["server_info_decoded"])).hex() == s["server_info_hex"]


def test_worker_info_golden():
    s = INFO["sample_active"]
    expected = _worker(s["worker_info_decoded"])
    assert decode(WorkerInfo, bytes.fromhex(s["worker_info_hex"])) == expected
    assert encode(expected).hex() == s["worker_info_hex"]


def test_scheduler_messages_roundtrip():
    entry = SchedulerEntry(id="e1", spec="@every 30s", task_type="t", task_payload=b"p",
                           enqueue_options=['Queue("q")', "MaxRetry(5)"],
                           next_enqueue_time=Timestamp(1795627452, 5), prev_enqueue_time=Timestamp(-62135596800, 0))
    assert decode(SchedulerEntry, encode(entry)) == entry
    event = SchedulerEnqueueEvent(task_id="x", enqueue_time=Timestamp(1, 2))
    assert decode(SchedulerEnqueueEvent, encode(event)) == event


@pytest.mark.parametrize("data", [b"\x0a\x05ab", b"\x10", b"\x00\x00", b"\x2a\x03\x0a\x05x"])
def test_malformed_server_info(data):
    with pytest.raises(DecodeError):
        decode(ServerInfo, data)


def test_timestamp_helpers():
    ts = Timestamp.from_unix(1.5)
    assert ts == Timestamp(1, 500_000_000)
    assert ts.to_datetime().timestamp() == 1.5

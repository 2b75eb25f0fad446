"""The heartbeat (fastq.server.heartbeat) against an in-memory fake of its Redis seam.

What the worker writes through ``Broker.heartbeat`` (its ServerInfo, one WorkerInfo per running
task), what it makes of the ``INFO`` reply the seam returns (restart, failover, clock skew, nothing
when INFO is denied), how ``run`` reports failures, and ``clear``. The writes themselves are tested
on a real redis-server (tests/rdb/test_worker_rdb.py).
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from fakes import FakeBroker, HealthRecorder, until
from redis.exceptions import ConnectionError

from fastq import keys
from fastq._codec import TaskMessage
from fastq._proto import ServerInfo, Timestamp, WorkerInfo, decode
from fastq.context import TaskContext
from fastq.server.config import WorkerConfig
from fastq.server.heartbeat import Heartbeater
from fastq.server.processor import Processor, _Running


def setup(**config: Any) -> tuple[FakeBroker, Processor, Heartbeater]:
    config.setdefault("queues", {"q": 3, "r": 1})
    config.setdefault("host", "box")
    broker = FakeBroker()
    cfg = WorkerConfig(**config)
    p = Processor(broker, lambda task: None, cfg, "srv")
    return broker, p, Heartbeater(broker, p, cfg, "srv")


def hold(p: Processor, tid: str, queue: str = "q", payload: bytes = b"", started: float = 1_700_000_000.5,
         deadline: float = 1_700_000_060.0) -> _Running:
    """Book ``tid`` as running in ``p``, as the fetch loop would."""
    ctx = TaskContext(tid, 0, 3, queue, "email:send", deadline)
    run = _Running(tid, queue, TaskMessage(type="email:send", id=tid, queue=queue, payload=payload), ctx, started,
                   deadline, "srv:1", time.monotonic() + 5, lambda task: None)
    p.running[tid] = run
    return run


def beat(hb: Heartbeater) -> None:
    asyncio.run(hb.beat())


def test_writes_its_server_info_under_its_keys_with_twice_the_interval_as_ttl():
    broker, p, hb = setup(heartbeat_interval=2.5, concurrency=7, strict_priority=True)
    hold(p, "a")
    beat(hb)
    ((server_key, workers_key, ttl, info, _),) = broker.heartbeats
    assert server_key == keys.server_info_key("box", os.getpid(), "srv") == hb.server_key
    assert workers_key == keys.workers_key("box", os.getpid(), "srv") == hb.workers_key
    assert ttl == 5
    server = decode(ServerInfo, info)
    assert (server.host, server.pid, server.server_id) == ("box", os.getpid(), "srv")
    assert (server.concurrency, server.queues, server.strict_priority) == (7, {"q": 3, "r": 1}, True)
    assert server.status == "active" and server.active_worker_count == 1
    assert server.start_time == hb.started

    del p.running["a"]
    hb.status = "closed"  # what the worker sets when it shuts down
    beat(hb)
    server = decode(ServerInfo, broker.heartbeats[-1][3])
    assert server.status == "closed" and server.active_worker_count == 0
    assert broker.heartbeats[-1][4] == []  # no running task, no WorkerInfo


def test_the_ttl_is_at_least_one_second():
    broker, _, hb = setup(heartbeat_interval=0.2)
    beat(hb)
    assert broker.heartbeats[0][2] == 1


def test_writes_one_worker_info_per_running_task():
    broker, p, hb = setup()
    hold(p, "a", payload=b"\x00to:ann", started=1_700_000_000.25, deadline=1_700_000_030.0)
    hold(p, "b", queue="r")
    beat(hb)
    workers = dict(broker.heartbeats[0][4])
    assert sorted(workers) == ["a", "b"]
    a = decode(WorkerInfo, workers["a"])
    assert (a.host, a.pid, a.server_id, a.task_id, a.queue) == ("box", os.getpid(), "srv", "a", "q")
    assert (a.task_type, a.task_payload) == ("email:send", b"\x00to:ann")
    assert a.start_time == Timestamp.from_unix(1_700_000_000.25) and a.deadline == Timestamp(1_700_000_030, 0)
    assert decode(WorkerInfo, workers["b"]).queue == "r"


def test_notices_a_redis_restart_from_the_info_reply(caplog):
    broker, _, hb = setup()
    lines: list[tuple[int, str]] = []

    def beat_with(info: dict[str, Any]) -> None:
        caplog.clear()
        broker.info = info
        beat(hb)
        lines.extend((r.levelno, r.getMessage()) for r in caplog.records)

    with caplog.at_level(logging.INFO, logger="fastq.heartbeat"):
        beat_with({"run_id": "r1"})  # the first reply: nothing to compare with
        beat_with({"run_id": "r1"})
        assert lines == []
        beat_with({"run_id": "r2", "aof_enabled": "1"})
        beat_with({"run_id": "r3", "aof_enabled": "0", "rdb_last_load_keys_loaded": "12"})
        beat_with({"run_id": "r4", "aof_enabled": "0", "rdb_last_load_keys_loaded": "0"})
    assert lines == [
        (logging.WARNING, "Redis restarted (run_id r1 -> r2) and reloaded its data (append-only file)"),
        (logging.WARNING, "Redis restarted (run_id r2 -> r3) and reloaded its data (12 keys from its RDB snapshot)"),
        (logging.ERROR, "Redis restarted (run_id r3 -> r4) with no persisted data to reload: the tasks it held "
                        "are lost; workers carry on with whatever it has now."),
    ]
    assert hb.run_id == "r4"


def test_tells_a_failover_from_a_restart_by_the_replication_id(caplog):
    broker, _, hb = setup()
    broker.info = {"run_id": "m", "master_replid": "old-master"}
    beat(hb)
    broker.info = {"run_id": "replica", "master_replid": "new", "master_replid2": "old-master"}
    with caplog.at_level(logging.INFO, logger="fastq.heartbeat"):
        beat(hb)
    assert [r.getMessage() for r in caplog.records] == [
        "Redis failover: now served by a promoted replica (run_id m -> replica)"]
    assert hb.replid == "new"


def test_info_denied_changes_nothing_and_is_not_a_restart(caplog):
    broker, _, hb = setup()
    broker.info = None  # a least-privilege user: INFO is refused, the seam answers None
    with caplog.at_level(logging.DEBUG, logger="fastq.heartbeat"):
        beat(hb)
        assert hb.run_id is None and len(broker.heartbeats) == 1  # the state was written all the same
        broker.info = {"run_id": "r1"}
        beat(hb)
        broker.info = None
        beat(hb)
        broker.info = {"run_id": "r1"}
        beat(hb)
    assert hb.run_id == "r1"
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_warns_once_about_a_far_clock_and_not_after_a_slow_reply(caplog, monkeypatch):
    broker, _, hb = setup()
    skewed = {"run_id": "r1", "server_time_usec": str(int((time.time() - 60) * 1e6))}
    with caplog.at_level(logging.WARNING, logger="fastq.heartbeat"):
        broker.info = {"run_id": "r1", "server_time_usec": str(int(time.time() * 1e6))}
        beat(hb)
        assert caplog.records == []
        hb.rtt = 2.0  # a slow round trip says nothing about the clocks
        hb._check_clock(skewed)
        assert caplog.records == []
        broker.info = skewed
        beat(hb)
        beat(hb)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("this host's clock is +60.") and "off the Redis server's" in line


def test_run_beats_every_interval_reports_failures_once_and_stops():
    broker, p, hb = setup(heartbeat_interval=0.02)
    recorder = HealthRecorder()
    seen = recorder.seen

    p.hooks.append(recorder)

    async def main() -> None:
        p.bind()
        stop = asyncio.Event()
        loop = asyncio.create_task(hb.run(stop))
        await until(lambda: len(broker.heartbeats) >= 2, what="two beats")
        broker.fail_heartbeat = ConnectionError("Connection refused")
        await until(lambda: len(broker.heartbeats) >= 5, what="failing beats")
        assert p.health.down
        broker.fail_heartbeat = None
        await until(lambda: not p.health.down, what="a beat after the outage")
        stop.set()
        await asyncio.wait_for(loop, 1.0)  # returns once stop is set (no sleep left to finish)

    started = time.monotonic()
    asyncio.run(main())
    beats = len(broker.heartbeats)
    assert beats <= (time.monotonic() - started) / 0.02 + 2  # one per interval, failing or not
    *errors, restored = seen  # hooks get every failure, and one restore
    assert len(errors) >= 3 and set(errors) == {("error", "heartbeat")} and restored == ("restored", "heartbeat")


def test_clear_deregisters_its_own_keys():
    broker, _, hb = setup()
    asyncio.run(hb.clear())
    assert broker.cleared == [(hb.server_key, hb.workers_key)]
    assert broker.heartbeats == []

"""The forwarder loop (fastq.server.forwarder) against an in-memory fake of its Redis seam.

Which queues it forwards, how often, and what it does with Redis errors. The move itself (due
scheduled and retry tasks to pending, the wake-up it publishes) is ``Broker.forward``'s FORWARD
script, tested on a real redis-server (tests/rdb/test_worker_rdb.py).
"""
from __future__ import annotations

import asyncio
import logging
import time
from itertools import pairwise
from typing import Any

import pytest
from fakes import FakeBroker, HealthRecorder, until
from redis.exceptions import ConnectionError

from fastq.server.config import WorkerConfig
from fastq.server.forwarder import forward_loop
from fastq.server.health import RedisHealth
from fastq.server.hooks import Hooks


def run(broker: FakeBroker, body: Any, health: Any = None, **config: Any) -> None:
    """``await body(stop)`` with ``forward_loop`` running; then stop it, which must end it at once."""
    config.setdefault("queues", {"high": 6, "low": 1})
    config.setdefault("forward_interval", 0.02)
    cfg = WorkerConfig(**config)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.create_task(forward_loop(broker, cfg, stop, health))
        try:
            await body(stop)
        finally:
            stop.set()
            await asyncio.wait_for(loop, 0.5)

    asyncio.run(main())


def test_forwards_every_served_queue_each_interval_until_stopped(caplog):
    broker = FakeBroker()
    broker.moved = [3, 0, 1]

    async def body(stop: asyncio.Event) -> None:
        await until(lambda: len(broker.forwards) >= 5, what="five rounds")

    with caplog.at_level(logging.DEBUG, logger="fastq.maintenance"):
        run(broker, body)
    assert all(queues == ["high", "low"] for queues, _ in broker.forwards)
    times = [t for _, t in broker.forwards]
    assert min(b - a for a, b in pairwise(times)) >= 0.018  # one call per interval, not a busy loop
    assert [r.getMessage() for r in caplog.records] == ["forwarded 3 due task(s)", "forwarded 1 due task(s)"]


def test_a_set_stop_ends_the_wait_at_once():
    broker = FakeBroker()

    async def body(stop: asyncio.Event) -> None:
        await until(lambda: broker.forwards, what="the first round")

    started = time.monotonic()
    run(broker, body, forward_interval=30.0)
    assert time.monotonic() - started < 1.0 and len(broker.forwards) == 1


def test_redis_errors_are_reported_once_per_outage_and_the_loop_goes_on(caplog):
    broker = FakeBroker()
    recorder = HealthRecorder()
    seen = recorder.seen

    health = RedisHealth(Hooks([recorder]).call)

    async def body(stop: asyncio.Event) -> None:
        broker.fail_forward = ConnectionError("Connection refused")
        await until(lambda: len(broker.forwards) >= 4, what="failing rounds")
        assert health.down
        broker.fail_forward = None
        await until(lambda: not health.down, what="a round after the outage")

    with caplog.at_level(logging.WARNING, logger="fastq.worker"):
        run(broker, body, health)
    *errors, restored = seen
    assert len(errors) >= 4 and set(errors) == {("error", "forward")} and restored == ("restored", "forward")
    assert caplog.text.count("Redis unreachable (forward failed: Connection refused)") == 1
    assert caplog.text.count("Redis reachable again") == 1
    times = [t for _, t in broker.forwards]
    assert min(b - a for a, b in pairwise(times)) >= 0.018  # failures wait the interval too


def test_errors_other_than_redis_errors_end_the_loop_for_its_supervisor():
    broker = FakeBroker()
    broker.fail_forward = ValueError("a bug")

    async def main() -> None:
        loop = forward_loop(broker, WorkerConfig(queues={"q": 1}, forward_interval=0.02), asyncio.Event())
        await asyncio.wait_for(loop, 1.0)  # raises at once: a loop that swallowed it would time out

    with pytest.raises(ValueError, match="a bug"):
        asyncio.run(main())
    assert len(broker.forwards) == 1

"""The outcome buffer (fastq.server.acks) against an in-memory fake of its Redis seam."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from fakes import FakeBroker, until
from redis.exceptions import ConnectionError

from fastq._rdb.outcome import Done, Outcome, Requeue
from fastq.server.acks import Acks
from fastq.server.health import RedisHealth
from fastq.server.hooks import Hooks


def run(broker: FakeBroker, body: Any, hooks: Any = ()) -> Acks:
    """``await body(acks)`` with ``acks.loop()`` running; then close the buffer."""
    async def main() -> Acks:
        acks = Acks(broker, RedisHealth(Hooks(hooks).call))
        acks.bind()
        loop = asyncio.create_task(acks.loop())
        try:
            await body(acks)
        finally:
            await acks.close(flush_timeout=0.5)
            await asyncio.wait_for(loop, 1.0)  # close() ends the loop
        return acks

    return asyncio.run(main())


def done(i: int) -> Outcome:
    return Done("q", f"t{i}", "srv:1")


def test_outcomes_buffered_while_redis_is_down_are_written_once_it_is_back(caplog):
    broker = FakeBroker()
    broker.fail_settle = ConnectionError("Connection refused")
    seen: list[tuple[str, ...]] = []

    class Hook:
        def redis_error(self, operation: str, exc: BaseException) -> None:
            seen.append(("error", operation))

        def redis_restored(self, operation: str, seconds: float) -> None:
            seen.append(("restored", operation))

    async def body(acks: Acks) -> None:
        broker.gate = asyncio.Event()
        for i in range(3):
            acks.add(done(i))
        await until(lambda: broker.settle_attempts == 1, what="the first write")
        acks.add(done(3))  # while that write is in flight: goes after the others
        broker.gate.set()
        await until(lambda: broker.settle_attempts >= 3, what="failing writes")
        acks.add(done(4))  # while down
        assert all(acks.holds(f"t{i}") for i in range(5)) and len(acks) >= 1
        assert broker.settled == []
        broker.fail_settle = None
        await until(lambda: len(broker.settled) == 5, what="the outcomes written")
        assert not acks.unacked and len(acks) == 0

    with caplog.at_level(logging.WARNING, logger="fastq.worker"):
        run(broker, body, hooks=[Hook()])
    assert broker.settled == [done(i) for i in range(5)]  # each once, in order
    assert seen[0] == ("error", "ack") and seen[-1] == ("restored", "ack") and ("restored", "ack") not in seen[:-1]
    assert caplog.text.count("Redis unreachable") == 1 and "Redis reachable again" in caplog.text


def test_an_outcome_that_was_not_written_is_logged_with_its_id(caplog):
    broker = FakeBroker()
    broker.missing = {"t2"}

    async def body(acks: Acks) -> None:
        for i in range(3):
            acks.add(done(i))
        await until(lambda: len(broker.settled) == 3, what="the outcomes written")

    with caplog.at_level(logging.WARNING, logger="fastq.processor"):
        run(broker, body)
    (line,) = [r.getMessage() for r in caplog.records if "not written" in r.getMessage()]
    assert line.startswith("1 outcome(s) not written") and "['t2']" in line


def test_outcomes_added_during_a_write_go_together_in_the_next_one():
    broker = FakeBroker()
    broker.gate = asyncio.Event()

    async def body(acks: Acks) -> None:
        acks.add(done(0))
        await until(lambda: broker.settle_attempts == 1, what="the first write")
        for i in range(1, 5):
            acks.add(done(i))
        broker.gate.set()
        await until(lambda: len(broker.settled) == 5, what="all written")

    run(broker, body)
    assert broker.settles == [[done(0)], [done(i) for i in range(1, 5)]]


def test_close_writes_what_is_buffered_and_gives_up_after_its_timeout(caplog):
    broker = FakeBroker()

    async def flushed() -> None:
        acks = Acks(broker, RedisHealth())
        acks.bind()
        acks.add(Requeue("q", "r1", "srv:1"))  # no loop running: close() writes it
        await acks.close(flush_timeout=1.0)
        assert broker.settled == [Requeue("q", "r1", "srv:1")] and not acks.unacked

    asyncio.run(flushed())

    broker.fail_settle = ConnectionError("down for good")

    async def stuck() -> None:
        acks = Acks(broker, RedisHealth())
        acks.bind()
        acks.add(done(9))
        await acks.close(flush_timeout=0.3)
        assert len(acks) == 1 and acks.holds("t9")

    with caplog.at_level(logging.ERROR, logger="fastq.processor"):
        asyncio.run(stuck())
    assert "1 task outcome(s) not written" in caplog.text and broker.settle_attempts >= 2

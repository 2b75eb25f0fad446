"""The processor (fetch + dispatch) against an in-memory fake of its Redis seam (``fakes.FakeBroker``).

What the outcomes do in Redis is tested on a real redis-server (tests/rdb, tests/test_scripts.py);
here: which outcome each claim and each handler result becomes.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from fakes import FakeBroker, until
from redis.exceptions import ResponseError

import fastq
from fastq._codec import TaskMessage, decode_message, encode_message
from fastq._rdb.outcome import Archive, Complete, Done, Requeue, Retry
from fastq.server.config import WorkerConfig
from fastq.server.processor import Processor
from fastq.server.unusable import UNDECODABLE_TYPE


def message(tid: str, queue: str = "q", **kw: Any) -> bytes:
    kw.setdefault("retry", 5)
    return encode_message(TaskMessage(type="t", id=tid, queue=queue, **kw))


def serve(broker: FakeBroker, handler: Any, done: Callable[[Processor], bool], check: Any = None,
          **config: Any) -> Processor:
    """Run a processor's loops until ``done(processor)``, then ``await check(processor)`` if given,
    then shut it down (drain at once, write the outcomes)."""
    config.setdefault("queues", {"q": 1})
    config.setdefault("poll_interval", 0.01)
    cfg = WorkerConfig(**config)

    async def main() -> Processor:
        p = Processor(broker, handler, cfg, "srv")
        p.bind()
        loops = [asyncio.create_task(p.fetch_loop()), asyncio.create_task(p.ack_loop()),
                 asyncio.create_task(p.deadline_loop())]
        try:
            await until(lambda: done(p), what="the expected outcomes")
            if check is not None:
                await check(p)
        finally:
            await p.drain(0)
            await p.close(flush_timeout=1.0)
            for task in loops:
                task.cancel()
            await asyncio.wait(loops, timeout=1.0)
        return p

    return asyncio.run(main())


def settled(n: int) -> Callable[[Processor], bool]:
    return lambda p: len(p.broker.settled) >= n and not p.acks.unacked


def test_claims_whose_bytes_cannot_be_used_are_archived_with_the_reason_and_the_batch_goes_on():
    broker = FakeBroker()
    broker.put("q", b"garbage", b"\xff\x00not a message")
    broker.put("q", b"\xff\xfe", message("x"))
    broker.put("q", b"nohash", None)
    broker.put("q", b"other", message("someone-else"))
    broker.put("q", b"ok", message("ok"))
    ran: list[str] = []

    async def handler(task: fastq.Task) -> None:
        ran.append(fastq.get_task_id())

    serve(broker, handler, settled(5))
    assert ran == ["ok"]
    by_id = {o.id: o for o in broker.settled}
    assert isinstance(by_id["ok"], Done)
    reasons = {}
    for tid in ("garbage", b"\xff\xfe", "nohash", "other"):
        o = by_id[tid]
        assert isinstance(o, Archive) and o.queue == "q" and o.token == "srv:1"
        stored = decode_message(o.msg)  # the raw bytes kept as the payload, the reason as the error
        assert stored.type == UNDECODABLE_TYPE and stored.queue == "q"
        reasons[tid] = stored.error_msg
        if tid == "garbage":
            assert stored.payload == b"\xff\x00not a message" and stored.id == "garbage"
        if tid == b"\xff\xfe":
            assert stored.id == "\\xff\\xfe"  # the ID escaped in the message, raw in Redis
    assert reasons["garbage"].startswith("cannot decode task message")
    assert reasons[b"\xff\xfe"] == "task ID is not valid UTF-8"
    assert reasons["nohash"] == "task hash has no message"
    assert reasons["other"] == "invalid task message: message id 'someone-else' does not match"


def test_a_failed_task_is_retried_after_the_delay_with_its_retried_count():
    broker = FakeBroker()
    broker.put("q", b"f", message("f", retried=2, retry=5))
    delays: list[tuple[int, str]] = []

    def retry_delay(n: int, exc: BaseException, task: fastq.Task) -> float:
        delays.append((n, str(exc)))
        return 42

    async def handler(task: fastq.Task) -> None:
        raise ValueError("boom")

    before = time.time()
    serve(broker, handler, settled(1), retry_delay=retry_delay)
    after = time.time()
    (o,) = broker.settled
    assert isinstance(o, Retry) and o.id == "f" and o.token == "srv:1" and o.is_failure
    assert int(before + 42) <= o.retry_at <= int(after + 42)
    assert delays == [(2, "boom")]  # the delay is asked with the count before this failure
    assert o.msg.retried == 3 and o.msg.error_msg == "ValueError: boom"
    assert int(before) <= o.msg.last_failed_at <= int(after)


def test_an_error_that_is_not_a_failure_retries_without_counting():
    broker = FakeBroker()
    broker.put("q", b"n", message("n", retried=2, retry=5))

    async def handler(task: fastq.Task) -> None:
        raise ConnectionRefusedError("later")

    serve(broker, handler, settled(1), is_failure=lambda exc: not isinstance(exc, ConnectionRefusedError),
          retry_delay=lambda n, e, t: 5)
    (o,) = broker.settled
    assert isinstance(o, Retry) and not o.is_failure and o.msg.retried == 2


def test_exhausted_retries_and_skip_retry_archive_the_task():
    broker = FakeBroker()
    broker.put("q", b"last", message("last", retried=5, retry=5))
    broker.put("q", b"skip", message("skip", retried=0, retry=5))

    async def handler(task: fastq.Task) -> None:
        if fastq.get_task_id() == "skip":
            raise fastq.SkipRetry("no point")
        raise RuntimeError("again")

    serve(broker, handler, settled(2))
    by_id = {o.id: o for o in broker.settled}
    assert isinstance(by_id["last"], Archive) and by_id["last"].msg.error_msg == "RuntimeError: again"
    assert isinstance(by_id["skip"], Archive) and by_id["skip"].msg.error_msg.startswith("no point")


def test_success_is_done_or_complete_with_the_result_when_kept():
    broker = FakeBroker()
    broker.put("q", b"kept", message("kept", retention=60, unique_key="u:kept"))
    broker.put("q", b"gone", message("gone", unique_key="u:gone"))

    async def handler(task: fastq.Task) -> bytes:
        return b"out"

    before = int(time.time())
    serve(broker, handler, settled(2))
    by_id = {o.id: o for o in broker.settled}
    kept, gone = by_id["kept"], by_id["gone"]
    assert isinstance(kept, Complete) and kept.result == b"out" and kept.unique_key == "u:kept"
    assert before + 60 <= kept.expiry <= int(time.time()) + 60 and kept.msg.completed_at == kept.expiry - 60
    assert gone == Done("q", "gone", "srv:1", "u:gone")


def test_hooks_see_each_start_and_finish_with_the_outcome_kind_and_a_raising_hook_breaks_nothing(caplog):
    broker = FakeBroker()
    broker.put("q", b"a", message("a"))
    broker.put("q", b"b", message("b"))
    events: list[tuple[str, ...]] = []

    class Hook:
        def task_started(self, ctx: fastq.TaskContext) -> None:
            events.append(("started", ctx.task_id))

        def task_finished(self, ctx: fastq.TaskContext, outcome: str, exc: Any, seconds: float) -> None:
            assert seconds >= 0
            events.append(("finished", ctx.task_id, outcome, type(exc).__name__))

    class Broken:
        def task_started(self, ctx: fastq.TaskContext) -> None:
            raise RuntimeError("observer bug")

    async def handler(task: fastq.Task) -> None:
        if fastq.get_task_id() == "b":
            raise ValueError("x")

    with caplog.at_level(logging.ERROR, logger="fastq.processor"):
        serve(broker, handler, settled(2), hooks=[Broken(), Hook()])
    assert sorted(events) == [("finished", "a", "done", "NoneType"), ("finished", "b", "retry", "ValueError"),
                              ("started", "a"), ("started", "b")]
    assert "task_started raised" in caplog.text


def test_wrongtype_leaves_the_broken_queue_out_of_dequeues():
    broker = FakeBroker()
    broker.fail_dequeue = ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
    broker.wrong = {"bad": [("asynq:{bad}:pending", "string", "list")]}
    broker.put("good", b"g", message("g", queue="good"))

    async def handler(task: fastq.Task) -> None:
        pass

    p = serve(broker, handler, settled(1), queues={"bad": 2, "good": 1}, strict_priority=True)
    assert broker.dequeues[0][0] == ["bad", "good"]
    assert all(names == ["good"] for names, *_ in broker.dequeues[1:])
    assert p.selector.next() == ["good"]


def test_tasks_running_at_shutdown_are_requeued_with_their_token():
    broker = FakeBroker()
    broker.put("q", b"slow", message("slow"))
    started = []

    async def handler(task: fastq.Task) -> None:
        started.append(1)
        await asyncio.sleep(60)

    async def check(p: Processor) -> None:
        assert p.holds("slow") and list(p.running_snapshot()) == ["slow"]
        assert p.leased_ids() == {"q": ["slow"]}

    p = serve(broker, handler, lambda p: bool(started), check)
    assert broker.settled == [Requeue("q", "slow", "srv:1")]
    assert not p.holds("slow") and p.leased_ids() == {}


def test_a_claimed_batch_never_exceeds_the_free_slots():
    broker = FakeBroker()
    for i in range(10):
        broker.put("q", f"t{i}".encode(), message(f"t{i}"))
    release = []

    async def handler(task: fastq.Task) -> None:
        while not release:
            await asyncio.sleep(0.005)

    async def check(p: Processor) -> None:
        await asyncio.sleep(0.05)
        assert len(p.running_snapshot()) == 3 and len(broker.claims) == 7
        release.append(1)
        await until(lambda: len(broker.settled) == 10, what="all ten")

    serve(broker, handler, lambda p: len(p.running) == 3, check, concurrency=3, batch_size=2)
    assert all(count <= 2 for _, count, _, _ in broker.dequeues)

"""Lease recovery (fastq.server.recoverer) against an in-memory fake of its Redis seam.

Which outcome each expired lease listed through the seam becomes (Asynq's rules: a failed
attempt, retried at once while retries remain, archived when they are used up), what cannot be
decoded, what this process still holds, and the loop. Listing and settling with the cutoff are
tested on a real redis-server (tests/rdb/test_worker_rdb.py).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fakes import FakeBroker, until
from redis.exceptions import ConnectionError

from fastq._codec import TaskMessage, decode_message, encode_message
from fastq._rdb.outcome import Archive, Claim, Retry
from fastq.server.config import WorkerConfig
from fastq.server.processor import Processor
from fastq.server.recoverer import LEASE_EXPIRED, RECOVER_BATCH, recover_loop, recover_once
from fastq.server.unusable import UNDECODABLE_TYPE


def message(tid: str, queue: str = "q", **kw: Any) -> bytes:
    return encode_message(TaskMessage(type="t", id=tid, queue=queue, payload=b"p:" + tid.encode(), **kw))


def setup(**config: Any) -> tuple[FakeBroker, Processor]:
    config.setdefault("queues", {"q": 1})
    broker = FakeBroker()
    return broker, Processor(broker, lambda task: None, WorkerConfig(**config), "srv")


def expire(broker: FakeBroker, queue: str, raw_id: bytes, raw: Any) -> None:
    """A task of ``queue`` whose lease expired (as ``list_lease_expired`` will list it)."""
    broker.expired.setdefault(queue, []).append(Claim(queue, raw_id, raw, "someone-else:7"))


def recover(broker: FakeBroker, p: Processor) -> tuple[int, float, float]:
    before = time.time()
    n = asyncio.run(recover_once(broker, p, p.cfg))
    return n, before, time.time()


def test_a_task_with_retries_left_is_retried_at_once_as_a_counted_failure():
    broker, p = setup()
    broker.cutoff = "1700000123"
    expire(broker, "q", b"a", message("a", retried=1, retry=3))
    n, before, after = recover(broker, p)
    assert n == 1
    ((now, cutoff),) = broker.settle_args
    assert cutoff == "1700000123" and before <= now <= after  # settled only if still expired at the cutoff
    (o,) = broker.settled
    assert isinstance(o, Retry) and (o.queue, o.id, o.token, o.is_failure) == ("q", "a", "", True)
    assert o.retry_at == int(now)  # recover_retry_delay defaults to 0: at once
    assert o.msg.retried == 2 and o.msg.error_msg == LEASE_EXPIRED == "asynq: task lease expired"
    assert o.msg.last_failed_at == int(now) and o.msg.payload == b"p:a" and o.msg.type == "t"


def test_the_retry_waits_recover_retry_delay():
    broker, p = setup(recover_retry_delay=30)
    expire(broker, "q", b"a", message("a", retried=0, retry=1))
    recover(broker, p)
    ((now, _),) = broker.settle_args
    (o,) = broker.settled
    assert isinstance(o, Retry) and o.retry_at == int(now + 30)


def test_a_task_whose_retries_are_used_up_is_archived():
    broker, p = setup()
    expire(broker, "q", b"last", message("last", retried=3, retry=3))
    expire(broker, "q", b"none", message("none", retried=0, retry=0))
    n, _, _ = recover(broker, p)
    assert n == 2
    last, none = broker.settled
    for o, retried in ((last, 3), (none, 0)):
        assert isinstance(o, Archive) and o.token == ""
        assert isinstance(o.msg, TaskMessage) and o.msg.retried == retried and o.msg.error_msg == LEASE_EXPIRED
    assert (last.id, none.id) == ("last", "none")


def test_claims_whose_bytes_cannot_be_used_are_archived_with_the_reason(caplog):
    broker, p = setup()
    expire(broker, "q", b"garbage", b"\xff\x00not a message")
    expire(broker, "q", b"nohash", None)
    expire(broker, "q", b"\xff\xfe", message("x"))
    with caplog.at_level(logging.ERROR, logger="fastq.processor"):
        n, _, _ = recover(broker, p)
    assert n == 3
    by_id = {o.id: o for o in broker.settled}
    reasons = {}
    for tid in ("garbage", "nohash", b"\xff\xfe"):
        o = by_id[tid]
        assert isinstance(o, Archive) and o.queue == "q" and isinstance(o.msg, bytes)
        stored = decode_message(o.msg)
        assert stored.type == UNDECODABLE_TYPE
        reasons[tid] = stored.error_msg
    assert reasons["garbage"].startswith("cannot decode task message")
    assert decode_message(by_id["garbage"].msg).payload == b"\xff\x00not a message"  # the bytes are kept
    assert reasons["nohash"] == "task hash has no message"
    assert reasons[b"\xff\xfe"] == "task ID is not valid UTF-8"  # archived under its raw ID
    assert "task \\xff\\xfe in queue q archived: task ID is not valid UTF-8" in caplog.text


def test_tasks_this_process_holds_are_not_recovered():
    broker, p = setup()
    p.running["mine"] = object()  # type: ignore[assignment]  # running here: only holds() reads it
    p.acks.unacked["written-soon"] = "q"  # outcome known, not yet written
    p.acks.unacked[b"\xff"] = "q"  # an undecodable claim this process is archiving already
    for tid in (b"mine", b"written-soon", b"\xff", b"theirs"):
        expire(broker, "q", tid, message(tid.decode("utf-8", "replace")))
    n, _, _ = recover(broker, p)
    assert n == 1 and [o.id for o in broker.settled] == ["theirs"]


def test_nothing_to_settle_writes_nothing():
    broker, p = setup()
    p.acks.unacked["mine"] = "q"
    expire(broker, "q", b"mine", message("mine"))
    n, _, _ = recover(broker, p)
    assert n == 0 and broker.settle_attempts == 0


def test_every_served_queue_is_listed_and_only_what_was_settled_is_counted(caplog):
    broker, p = setup(queues={"a": 1, "b": 1, "c": 1}, recover_grace=2.5)
    expire(broker, "a", b"a1", message("a1", queue="a"))
    expire(broker, "c", b"c1", message("c1", queue="c"))
    expire(broker, "c", b"c2", message("c2", queue="c"))
    broker.missing = {"c2"}  # settled by another recoverer meanwhile (or its lease extended)
    with caplog.at_level(logging.WARNING, logger="fastq.maintenance"):
        n, _, _ = recover(broker, p)
    assert broker.listed == [("a", 2.5, RECOVER_BATCH), ("b", 2.5, RECOVER_BATCH), ("c", 2.5, RECOVER_BATCH)]
    assert [[o.id for o in batch] for batch in broker.settles] == [["a1"], ["c1", "c2"]]  # one settle per queue
    assert n == 2
    assert [r.getMessage() for r in caplog.records] == ["recovered 2 task(s) whose lease expired"]


def test_the_loop_reports_redis_errors_and_goes_on_until_stopped():
    broker, p = setup(recover_interval=0.02)
    calls = 0
    real = broker.list_lease_expired

    async def flaky(queue: str, grace: float, limit: int) -> Any:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ConnectionError("Connection refused")
        return await real(queue, grace, limit)

    broker.list_lease_expired = flaky  # type: ignore[method-assign]
    expire(broker, "q", b"a", message("a", retry=3))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.create_task(recover_loop(broker, p, p.cfg, stop))
        await until(lambda: p.health.down, what="the outage reported")
        await until(lambda: broker.settled and not p.health.down, what="a recovery after the outage")
        stop.set()
        await asyncio.wait_for(loop, 0.5)

    asyncio.run(main())
    assert calls >= 3 and p.health.failures == 2
    assert isinstance(broker.settled[0], Retry) and broker.settled[0].id == "a"

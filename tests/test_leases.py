"""The lease thread (fastq.server.leases.LeaseKeeper) and the blocked-event-loop watch, against a real Redis."""
from __future__ import annotations

import asyncio
import logging
import time

import pytest
import redis
from helpers import RedisServer, RunningWorker, async_wait_for

import fastq
from fastq import keys
from fastq._codec import TaskMessage
from fastq._rdb.worker import Broker
from fastq.context import TaskContext
from fastq.redis.facade import async_client
from fastq.server.config import WorkerConfig
from fastq.server.leases import LeaseKeeper
from fastq.server.processor import Processor, _Running


def _uvloop_run(coro):
    import uvloop

    return uvloop.run(coro)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    return asyncio.run if request.param == "asyncio" else _uvloop_run


def processor(url: str, **config) -> Processor:
    """A real Processor whose loops do not run: the tests put tasks in its books by hand."""
    config.setdefault("lease_duration", 3)
    cfg = WorkerConfig(redis_url=url, queues={"default": 1, "other": 1}, **config)
    return Processor(Broker(async_client(url)), lambda task: None, cfg)


def hold(p: Processor, tid: str, queue: str = "default", deadline_in: float = 60.0) -> _Running:
    """Book ``tid`` as running in ``p`` (claimed now, lease valid for 0.5 s by its own account)."""
    now = time.time()
    ctx = TaskContext(tid, 0, 3, queue, "t", now + deadline_in)
    run = _Running(tid, queue, TaskMessage(type="t", id=tid, queue=queue), ctx, now, now + deadline_in,
                   "token", time.monotonic() + 0.5, lambda task: None)
    p.running[tid] = run
    return run


def score(r: redis.Redis, tid: str, queue: str = "default") -> float:
    return r.zscore(keys.lease_key(queue), tid)


def test_extends_the_leases_of_held_tasks_only(redis_url, r, run):
    async def main():
        p = processor(redis_url)
        a, b = hold(p, "a"), hold(p, "b", "other")
        p.acks.unacked["c"] = "default"  # outcome known, not yet written: still ours
        soon = int(time.time()) + 1
        r.zadd(keys.lease_key("default"), {"a": soon, "c": soon, "stranger": soon})
        r.zadd(keys.lease_key("other"), {"b": soon})
        keeper = LeaseKeeper(p, p.cfg).start()
        try:
            await async_wait_for(lambda: keeper.rounds >= 2, what="two extension rounds")
            later = int(time.time()) + 2
            assert score(r, "a") >= later and score(r, "c") >= later and score(r, "b", "other") >= later
            assert score(r, "stranger") == soon  # not held here: left alone
            assert r.zscore(keys.lease_key("default"), "b") is None  # never creates a lease (XX)
            assert a.lease_until > time.monotonic() + 1.5 and b.lease_until > time.monotonic() + 1.5
        finally:
            await keeper.stop()
            await p.broker.redis.aclose()

    run(main())


def test_stops_at_deadline_plus_grace_and_when_the_loop_hangs(redis_url, r, run, caplog):
    async def main():
        p = processor(redis_url, hard_timeout_grace=0.5)
        hold(p, "late", deadline_in=-0.6)  # deadline + grace already passed
        hold(p, "due", deadline_in=0.5)  # passes it in 1 s
        p.acks.unacked["written-soon"] = "default"
        base = int(time.time()) + 1
        r.zadd(keys.lease_key("default"), {"late": base, "due": base, "written-soon": base})
        keeper = LeaseKeeper(p, p.cfg).start()
        try:
            await async_wait_for(lambda: score(r, "due") > base, what="first extension")
            await asyncio.sleep(1.5)  # "due" is past deadline + grace now
            frozen = score(r, "due")
            await asyncio.sleep(1.6)  # two more rounds (tick: lease / 4 = 0.75 s)
            assert score(r, "due") == frozen
            assert score(r, "late") == base  # never extended
            assert score(r, "written-soon") > time.time() + 1  # the loop runs: the outcome will be written
            # The loop hangs (here: this test blocks it) with no running task within its bound: after
            # max(grace, lease) = 3 s the unwritten outcome's lease is no longer kept either. Kept, it
            # would now end >= 1.25 s from now (extended every 0.75 s to Redis time + 3 s).
            time.sleep(6)
            assert score(r, "written-soon") <= time.time() + 0.5
        finally:
            await keeper.stop()
            await p.broker.redis.aclose()

    with caplog.at_level(logging.WARNING, logger="fastq"):
        run(main())
    blocked = [rec for rec in caplog.records if "blocked" in rec.getMessage()]
    assert len(blocked) == 1, [rec.getMessage() for rec in caplog.records]
    assert "not inside a task handler" in blocked[0].getMessage()
    assert "test_leases.py" in blocked[0].getMessage()  # where the loop was stuck


def test_survives_connection_kills_and_an_outage(tmp_path, run, caplog):
    server = RedisServer(tmp_path)
    server.start()
    r = redis.Redis.from_url(server.url)
    try:
        async def main():
            p = processor(server.url)
            hold(p, "a")
            keeper = LeaseKeeper(p, p.cfg).start()
            try:
                for _ in range(3):
                    r.zadd(keys.lease_key("default"), {"a": 1})
                    r.client_kill_filter(_type="normal", skipme=True)
                    await async_wait_for(lambda: score(r, "a") > time.time(), what="extension after CLIENT KILL")
                server.stop()  # an outage: rounds fail, with back-off
                await asyncio.sleep(1.5)
                assert keeper.alive
                server.start()
                r.zadd(keys.lease_key("default"), {"a": 1})
                await async_wait_for(lambda: score(r, "a") > time.time(), what="extension after the outage")
                await asyncio.sleep(0.1)  # the "reachable again" line is written on the loop
            finally:
                await keeper.stop()
                await p.broker.redis.aclose()

        with caplog.at_level(logging.INFO, logger="fastq"):
            run(main())
        messages = [rec.getMessage() for rec in caplog.records]
        assert sum("Redis unreachable (lease failed" in m for m in messages) == 1, messages
        assert sum("Redis reachable again" in m for m in messages) == 1, messages
        assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR and "unreachable" not in
                    rec.getMessage()], messages  # no unexpected-error traceback
    finally:
        r.close()
        server.stop()


def test_stops_and_closes_its_connection(redis_url, r, run):
    async def main():
        p = processor(redis_url)
        before = len(r.client_list())
        hold(p, "a")
        r.zadd(keys.lease_key("default"), {"a": int(time.time()) + 1})
        keeper = LeaseKeeper(p, p.cfg).start()
        await async_wait_for(lambda: keeper.rounds >= 1, what="a round")
        assert len(r.client_list()) == before + 1  # its own connection
        await keeper.stop()
        assert not keeper.alive
        await async_wait_for(lambda: len(r.client_list()) == before, what="its connection closed")
        r.zadd(keys.lease_key("default"), {"a": 1})
        await asyncio.sleep(1.0)
        assert score(r, "a") == 1  # nothing extends it any more
        await p.broker.redis.aclose()

    run(main())


def test_idle_worker_sends_no_lease_traffic(redis_url, r, run):
    async def main():
        p = processor(redis_url)
        keeper = LeaseKeeper(p, p.cfg).start()
        await asyncio.sleep(1.0)
        await keeper.stop()
        assert keeper.rounds == 0
        await p.broker.redis.aclose()

    run(main())


class BlockedHook:
    def __init__(self) -> None:
        self.calls: list = []

    def loop_blocked(self, ctx, seconds) -> None:
        self.calls.append((ctx.task_id if ctx is not None else None, ctx.type if ctx is not None else None, seconds))


def test_a_blocking_async_handler_is_named_once_and_keeps_its_lease(redis_url, r, run, caplog):
    hook = BlockedHook()

    async def handler(task):
        time.sleep(4.2)  # the beginner's mistake; the lease is 3 s

    async def main():
        client = fastq.AsyncClient(redis_url)
        info = await client.enqueue(fastq.Task("report:build", b""))
        await client.close()
        async with RunningWorker(handler, redis_url, lease_duration=3, hooks=[hook]) as w:
            await async_wait_for(lambda: w.worker.processor.processed == 1, what="the task done")
            await async_wait_for(lambda: hook.calls, what="the loop_blocked hook")
        return info.id

    with caplog.at_level(logging.INFO, logger="fastq"):
        tid = run(main())
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    blocked = [m for m in warnings if "blocked" in m]
    assert len(blocked) == 1, warnings
    assert tid in blocked[0] and "(report:build)" in blocked[0] and "await" in blocked[0]
    assert "test_leases.py" in blocked[0] and "in handler()" in blocked[0]
    assert not [m for m in warnings if "lease lost" in m or "not written" in m], warnings
    assert r.get(keys.processed_total_key("default")) == b"1" and not r.get(keys.failed_total_key("default"))
    (called_id, called_type, seconds), = hook.calls
    assert (called_id, called_type) == (tid, "report:build") and 4.0 <= seconds <= 5.0


def test_an_unexpected_error_is_logged_once_and_the_thread_carries_on(redis_url, r, run, caplog):
    async def main():
        p = processor(redis_url)
        hold(p, "a")
        r.zadd(keys.lease_key("default"), {"a": 1})
        real, failures = p.leased_ids, []

        def broken():
            if len(failures) < 4:
                failures.append(1)
                raise ValueError("a bug")
            return real()

        p.leased_ids = broken
        keeper = LeaseKeeper(p, p.cfg).start()
        try:
            await async_wait_for(lambda: score(r, "a") > time.time(), what="extension after the errors")
            assert keeper.alive and len(failures) == 4
        finally:
            await keeper.stop()
            await p.broker.redis.aclose()

    with caplog.at_level(logging.WARNING, logger="fastq"):
        run(main())
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None, [rec.getMessage() for rec in errors]
    assert "unexpected error extending leases" in errors[0].getMessage()

"""Plain ``def`` handlers in a worker against a real Redis, with both pools (fastq.server.sync_pool)."""
from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from helpers import RunningWorker, async_wait_for, task_log_records

import fastq
from fastq._codec import decode_message
from fastq.errors import InvalidOptionError


def test_a_blocking_sync_handler_stalls_neither_async_handlers_nor_other_sync_ones(redis_url, r):
    """threads: one handler blocks in the thread that took the batch; the tasks claimed with it and
    after it still run (other threads, the event loop), heartbeats go on, it is settled last."""
    release = threading.Event()
    done: list[str] = []

    def blocker(task):
        assert release.wait(30)
        done.append("blocker")

    def quick_sync(task):
        done.append(fastq.get_task_id())

    async def quick_async(task):
        done.append(fastq.get_task_id())

    mux = fastq.ServeMux()
    mux.handle("block", blocker)
    mux.handle("sync", quick_sync)
    mux.handle("async", quick_async)
    client = fastq.Client(redis_url)
    client.enqueue(fastq.Task("block"), task_id="blocker")
    quick = client.enqueue_many([fastq.Task("sync" if i % 2 else "async") for i in range(60)])

    async def main():
        async with RunningWorker(mux, redis_url, concurrency=100, heartbeat_interval=0.1) as w:
            server_key = w.worker.heartbeater.server_key
            await async_wait_for(lambda: len(done) == 60, timeout=20, what="the 60 quick tasks")
            beat = r.zscore("asynq:servers", server_key)
            await async_wait_for(lambda: r.zscore("asynq:servers", server_key) != beat, what="a heartbeat")
            assert "blocker" not in done and "blocker" in w.worker.processor.running
            release.set()
            await async_wait_for(lambda: "blocker" in done and not w.worker.processor.running, what="blocker")

    asyncio.run(main())
    client.close()
    assert sorted(done[:-1]) == sorted(info.id for info in quick) and done[-1] == "blocker"


@pytest.mark.parametrize("pool", ["threads", "inline"])
def test_task_id_and_log_records_are_per_task(redis_url, r, pool):
    n = 300
    seen: dict[bytes, tuple] = {}
    logger = logging.getLogger("test.sync_handlers")

    def handler(task):
        logger.info("payload %s", task.payload.decode())
        seen[task.payload] = (fastq.get_task_id(), threading.current_thread() is threading.main_thread())

    infos = fastq.Client(redis_url).enqueue_many([fastq.Task("ctx", b"%d" % i) for i in range(n)])

    async def main():
        async with RunningWorker(handler, redis_url, concurrency=100, batch_size=50, pool=pool):
            await async_wait_for(lambda: len(seen) == n, what="all tasks")

    with task_log_records("test.sync_handlers") as records:
        asyncio.run(main())
    assert {k: v[0] for k, v in seen.items()} == {b"%d" % i: info.id for i, info in enumerate(infos)}
    assert {on_loop for _, on_loop in seen.values()} == {pool == "inline"}
    by_payload = {rec.getMessage().split()[1]: rec.task_id for rec in records}
    assert by_payload == {str(i): info.id for i, info in enumerate(infos)}


@pytest.mark.parametrize("pool", ["threads", "inline"])
def test_a_sync_handler_past_its_deadline_fails_with_deadline_exceeded(redis_url, r, pool):
    """threads: settled by the deadline loop while the thread runs on; inline: settled when it
    returns, since the loop could not run meanwhile. Either way it does not count as done."""
    returned = threading.Event()

    def handler(task):
        time.sleep(1.3)
        returned.set()

    fastq.Client(redis_url).enqueue(fastq.Task("slow"), timeout=1, max_retry=0, task_id="late")

    async def main():
        async with RunningWorker(handler, redis_url, pool=pool):
            await async_wait_for(lambda: r.zcard("asynq:{default}:archived"), timeout=10, what="archive")
            if pool == "threads":
                assert not returned.is_set()  # settled without waiting for the thread
            await async_wait_for(returned.is_set, what="handler return")

    asyncio.run(main())
    msg = decode_message(r.hget("asynq:{default}:t:late", "msg"))
    assert msg.error_msg == "context deadline exceeded"


def test_pool_must_be_threads_or_inline():
    with pytest.raises(InvalidOptionError, match=r"pool must be one of 'threads', 'inline', got 'process'"):
        fastq.WorkerConfig(pool="process")


def test_a_blocking_inline_handler_is_named_by_the_loop_watch_and_keeps_its_lease(redis_url, r, caplog):
    """--pool inline: a def handler that blocks stops the loop; the lease thread names the task
    (not "not inside a task handler") and keeps its lease, so it runs once."""

    def handler(task):
        time.sleep(1.6)

    async def main():
        info = fastq.Client(redis_url).enqueue(fastq.Task("inline:slow"))
        async with RunningWorker(handler, redis_url, pool="inline", lease_duration=3) as w:
            await async_wait_for(lambda: w.worker.processor.processed == 1, what="the task done")
        return info.id

    with caplog.at_level(logging.WARNING, logger="fastq"):
        tid = asyncio.run(main())
    blocked = [rec.getMessage() for rec in caplog.records if "blocked" in rec.getMessage()]
    assert len(blocked) == 1 and f"by task {tid} (inline:slow)" in blocked[0], blocked
    assert "in handler()" in blocked[0]
    assert r.get("asynq:{default}:processed") == b"1" and not r.get("asynq:{default}:failed")

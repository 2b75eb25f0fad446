"""Redis round trips: enqueue one, enqueue_many, and one batch dequeue + ack (private redis-server).

Run: .venv/bin/pytest bench/test_redis_bench.py --benchmark-columns=mean,ops
Divide a batch's ops/s by its size for tasks/s.
"""
from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aredis

import fastq
from fastq._rdb.outcome import Done
from fastq._rdb.worker import Broker

TASK = fastq.Task("noop", b"x" * 100)


@pytest.mark.benchmark(group="enqueue")
def test_enqueue_one(benchmark, bench_redis, bench_redis_url):
    client = fastq.Client(bench_redis_url)
    benchmark(client.enqueue, TASK)


@pytest.mark.benchmark(group="enqueue")
def test_enqueue_many_1000(benchmark, bench_redis, bench_redis_url):
    client = fastq.Client(bench_redis_url)
    tasks = [TASK] * 1000
    benchmark(client.enqueue_many, tasks)


@pytest.mark.benchmark(group="enqueue-100k")
@pytest.mark.parametrize("api", ["sync", "async"])
def test_enqueue_many_100k(benchmark, bench_redis, bench_redis_url, api):
    """One enqueue_many call of 100,000 tasks (100 chunks, one in flight while the next is built),
    on an empty Redis each round. Divide 100,000 by the mean for tasks/s."""
    tasks = [TASK] * 100_000
    if api == "sync":
        client = fastq.Client(bench_redis_url)
        run = lambda: client.enqueue_many(tasks)  # noqa: E731
    else:
        loop = asyncio.new_event_loop()
        aclient = fastq.AsyncClient(bench_redis_url)
        run = lambda: loop.run_until_complete(aclient.enqueue_many(tasks))  # noqa: E731
    benchmark.pedantic(run, setup=lambda: bench_redis.flushdb() and None, rounds=7, iterations=1)
    if api == "async":
        loop.run_until_complete(aclient.close())
        loop.close()


@pytest.mark.benchmark(group="dequeue-ack")
@pytest.mark.parametrize("batch", [1, 10, 100])
def test_dequeue_and_ack_batch(benchmark, bench_redis, bench_redis_url, batch):
    """One dequeue script call for `batch` tasks plus one done script call for all of them."""
    fastq.Client(bench_redis_url).enqueue_many([TASK] * 200_000)
    loop = asyncio.new_event_loop()
    client = aredis.Redis.from_url(bench_redis_url)
    broker = Broker(client)
    async def once():
        claims = await broker.dequeue(["default"], batch, 30, "bench")
        await broker.settle([Done("default", c.raw_id.decode(), "bench") for c in claims], time.time())

    benchmark.pedantic(lambda: loop.run_until_complete(once()), rounds=max(200, 20_000 // batch), iterations=1)
    loop.run_until_complete(client.aclose())
    loop.close()

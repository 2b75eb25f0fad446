"""Rate and concurrency limits on a real Redis Cluster (three masters): admission, slot release with
the acks, slot extension and the precise forward each stay within one queue's slot. The nodes'
own counters must show no CROSSSLOT and no failed command other than NOSCRIPT."""
from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from helpers import RunningWorker, async_wait_for
from test_cluster import assert_cluster_clean, spread_queues

import fastq
from fastq import keys
from fastq.server.limits import TaskLimits

pytestmark = pytest.mark.slow


def test_limits_per_queue_across_three_masters(fresh):
    cluster = fresh
    queues = spread_queues(cluster)
    client = fastq.Client(cluster.url)
    for q in queues:
        client.enqueue_many([fastq.Task("lim", q.encode())] * 12, queue=q)
        client.enqueue_many([fastq.Task("free", q.encode())] * 12, queue=q)
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    done: list[str] = []
    mux = fastq.ServeMux()

    @mux.handle("lim")
    async def limited(task: fastq.Task) -> None:
        q = task.payload.decode()
        running[q] += 1
        peak[q] = max(peak[q], running[q])
        await asyncio.sleep(0.05)
        running[q] -= 1
        done.append(q)

    @mux.handle("free")
    async def free(task: fastq.Task) -> None:
        done.append("free")

    async def main() -> None:
        async with RunningWorker(mux, cluster.url, queues={q: 1 for q in queues}, lease_duration=3,
                                 limits={"lim": TaskLimits(rate="40/s", concurrency=2)}):
            await async_wait_for(lambda: len(done) == 72, timeout=30, what="drain")

    started = time.monotonic()
    asyncio.run(main())
    elapsed = time.monotonic() - started
    assert Counter(done) == {**{q: 12 for q in queues}, "free": 36}
    assert all(peak[q] == 2 for q in queues), peak  # a limit per queue, each reached and held
    assert elapsed >= 11 / 40  # 12 per queue at 40/s each
    for q in queues:
        assert client.redis.zcard(keys.slots_key(q, "lim")) == 0
    assert_cluster_clean(cluster)
    client.close()

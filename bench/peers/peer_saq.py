"""SAQ: no-op and latency jobs; served by ``saq bench.peers.peer_saq.settings --workers 2 --quiet``.

``BENCH_CONCURRENCY`` sets the per-process concurrency (SAQ's default is 10). Jobs are enqueued
with ``ttl=-1`` (SAQ deletes the job when done instead of keeping it 600 s), as fastq keeps
nothing by default. Completion is read from SAQ's own ``saq:default:incomplete`` sorted set.
"""
from __future__ import annotations

import asyncio
import os

from saq import Queue

from bench.peers import _common

ENQUEUE_METHOD = "Queue.enqueue, 100 at a time with asyncio.gather (SAQ has no enqueue-only batch API)"
IN_FLIGHT = 100


KINDS = ("async", "sync")  # SAQ runs a plain def in its thread pool


async def noop(ctx) -> None:
    pass


def noop_sync(ctx) -> None:
    pass


async def record(ctx, *, sample: int) -> None:
    await _common.record_async(sample)


settings = {
    "queue": Queue.from_url(_common.redis_url()),
    "functions": [noop, noop_sync, record],
    "concurrency": int(os.environ.get("BENCH_CONCURRENCY", "10")),
}


async def make_client():
    queue = Queue.from_url(_common.redis_url())
    await queue.connect()
    return queue


async def enqueue_noops(queue, n: int, kind: str = "async") -> None:
    name = "noop" if kind == "async" else "noop_sync"
    for start in range(0, n, IN_FLIGHT):
        await asyncio.gather(*(queue.enqueue(name, ttl=-1) for _ in range(min(IN_FLIGHT, n - start))))


async def enqueue_record(queue, sample: int) -> None:
    await queue.enqueue("record", ttl=-1, sample=sample)

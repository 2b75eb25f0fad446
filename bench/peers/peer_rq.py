"""RQ: no-op and latency jobs; served by ``rq worker-pool -n 2 -w <worker class>``.

Jobs are enqueued with ``result_ttl=0`` (nothing kept after success), as fastq keeps nothing by
default. Completion is read from RQ's own per-worker ``successful_job_count``.
"""
from __future__ import annotations

from redis import Redis
from rq import Queue

from bench.peers import _common

ENQUEUE_METHOD = "Queue.enqueue_many (batch API: one pipeline per 1000 jobs)"
CHUNK = 1000
KINDS = ("sync", "async")  # RQ runs a coroutine job with asyncio.run, one event loop per job


def noop() -> None:
    pass


async def noop_async() -> None:
    pass


def record(sample: int) -> None:
    _common.record_sync(sample)


def make_client():
    return Queue("default", connection=Redis.from_url(_common.redis_url()))


def enqueue_noops(queue, n: int, kind: str = "sync") -> None:
    func = "bench.peers.peer_rq.noop" if kind == "sync" else "bench.peers.peer_rq.noop_async"
    for start in range(0, n, CHUNK):
        queue.enqueue_many([Queue.prepare_data(func, result_ttl=0)
                            for _ in range(min(CHUNK, n - start))])


def enqueue_record(queue, sample: int) -> None:
    queue.enqueue("bench.peers.peer_rq.record", sample, result_ttl=0)

"""fastq: the benchmark handlers (served by ``fastq-supervisor bench.peers.peer_fastq:mux``)."""
from __future__ import annotations

import fastq

from bench.peers import _common

QUEUE = "bench"
ENQUEUE_METHOD = "Client.enqueue_many (batch API: one Lua script call per chunk of 1000 tasks)"
KINDS = ("async", "sync")  # no-op handler kinds; the first is the drain every queue gets

mux = fastq.ServeMux()


@mux.handle("bench:noop")
async def noop(task: fastq.Task) -> None:
    """The benchmark task: does nothing. Completion is read from asynq:{bench}:processed."""


@mux.handle("bench:noop_sync")
def noop_sync(task: fastq.Task) -> None:
    """The same no-op as a plain ``def`` handler (run in the worker's thread pool)."""


@mux.handle("bench:record")
async def record(task: fastq.Task) -> None:
    await _common.record_async(int(task.payload))


def make_client():
    return fastq.Client(_common.redis_url())


def enqueue_noops(client, n: int, kind: str = "async") -> None:
    client.enqueue_many([fastq.Task("bench:noop" if kind == "async" else "bench:noop_sync")] * n, queue=QUEUE)


def enqueue_record(client, sample: int) -> None:
    client.enqueue(fastq.Task("bench:record", str(sample).encode()), queue=QUEUE)

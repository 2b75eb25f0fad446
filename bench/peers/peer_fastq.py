"""fastq: the benchmark handlers (served by ``fastq-supervisor bench.peers.peer_fastq:mux``)."""
from __future__ import annotations

import fastq

from bench.peers import _common

QUEUE = "bench"
ENQUEUE_METHOD = "Client.enqueue_many (batch API: one Lua script call per chunk of 1000 tasks)"

mux = fastq.ServeMux()


@mux.handle("bench:noop")
async def noop(task: fastq.Task) -> None:
    """The benchmark task: does nothing. Completion is read from asynq:{bench}:processed."""


@mux.handle("bench:record")
async def record(task: fastq.Task) -> None:
    await _common.record_async(int(task.payload))


def make_client():
    return fastq.Client(_common.redis_url())


def enqueue_noops(client, n: int) -> None:
    client.enqueue_many([fastq.Task("bench:noop")] * n, queue=QUEUE)


def enqueue_record(client, sample: int) -> None:
    client.enqueue(fastq.Task("bench:record", str(sample).encode()), queue=QUEUE)

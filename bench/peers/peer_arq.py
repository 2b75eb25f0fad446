"""arq: no-op and latency jobs; ``python -m bench.peers.run arq worker`` runs one worker process.

arq has no multi-process mode, so the driver starts two of these. ``BENCH_CONCURRENCY`` sets
``max_jobs`` (arq's default is 10) and ``BENCH_POLL_DELAY`` sets ``poll_delay`` (default 0.5 s).
Results are not kept (``keep_result=0``), as fastq keeps none by default. Completion is read
from arq's own queue sorted set, which loses a job only when it finishes.
"""
from __future__ import annotations

import asyncio
import logging
import os

from arq.connections import RedisSettings, create_pool

from bench.peers import _common

ENQUEUE_METHOD = "ArqRedis.enqueue_job, 100 at a time with asyncio.gather (arq has no batch API)"
IN_FLIGHT = 100


async def noop(ctx) -> None:
    pass


async def record(ctx, sample: int) -> None:
    await _common.record_async(sample)


class WorkerSettings:
    functions = [noop, record]
    redis_settings = RedisSettings.from_dsn(_common.redis_url())
    max_jobs = int(os.environ.get("BENCH_CONCURRENCY", "10"))
    poll_delay = float(os.environ.get("BENCH_POLL_DELAY", "0.5"))
    keep_result = 0


async def make_client():
    return await create_pool(RedisSettings.from_dsn(_common.redis_url()))


async def enqueue_noops(pool, n: int) -> None:
    for start in range(0, n, IN_FLIGHT):
        await asyncio.gather(*(pool.enqueue_job("noop") for _ in range(min(IN_FLIGHT, n - start))))


async def enqueue_record(pool, sample: int) -> None:
    await pool.enqueue_job("record", sample)


def worker() -> None:
    """arq's documented ``run_worker`` with logging at WARNING (the CLI logs every job at INFO)."""
    from arq.worker import run_worker

    logging.basicConfig(level=logging.WARNING)
    run_worker(WorkerSettings)

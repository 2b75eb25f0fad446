"""Helpers shared by the peer modules: only the standard library and redis-py (every peer has it).

The driver sets ``BENCH_REDIS_URL`` for every process it starts. Tasks that take part in the
idle-latency measurement call ``record_sync`` / ``record_async`` first thing: they push
``"<sample> <time.time()>"`` onto ``bench:lat``. Peers without a cheap built-in completion counter
``INCR bench:done`` in their no-op task.
"""
from __future__ import annotations

import os
import time

LAT_KEY = "bench:lat"
DONE_KEY = "bench:done"


def redis_url() -> str:
    return os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


_sync = None
_sync_pid = None


def sync_redis():
    """One redis-py client per process (re-created after a fork)."""
    global _sync, _sync_pid
    if _sync is None or _sync_pid != os.getpid():
        import redis

        _sync = redis.Redis.from_url(redis_url())
        _sync_pid = os.getpid()
    return _sync


_async: dict = {}


def async_redis():
    """One redis.asyncio client per process and event loop."""
    import asyncio

    key = (os.getpid(), id(asyncio.get_running_loop()))
    client = _async.get(key)
    if client is None:
        import redis.asyncio

        client = _async[key] = redis.asyncio.Redis.from_url(redis_url())
    return client


def record_sync(sample: int) -> None:
    started = time.time()
    sync_redis().rpush(LAT_KEY, f"{int(sample)} {started!r}")


async def record_async(sample: int) -> None:
    started = time.time()
    await async_redis().rpush(LAT_KEY, f"{int(sample)} {started!r}")


def count_done_sync() -> None:
    sync_redis().incr(DONE_KEY)

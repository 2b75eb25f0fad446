"""The janitor: deletes completed tasks whose retention ended (Asynq's janitor)."""
from __future__ import annotations

import asyncio
from typing import Optional

from redis.exceptions import RedisError

from fastq._rdb.worker import Broker
from fastq.server.config import WorkerConfig
from fastq.server.health import RedisHealth, noop_health
from fastq.server.maintenance import sleep_until_set


async def janitor_loop(broker: Broker, cfg: WorkerConfig, stop: asyncio.Event,
                       health: Optional[RedisHealth] = None) -> None:
    """Delete completed tasks whose retention ended, in batches, every ``janitor_interval``."""
    health = health or noop_health()
    while not stop.is_set():
        try:
            await broker.janitor(cfg.queues, cfg.janitor_batch)
            health.ok("janitor")
        except (RedisError, OSError) as exc:
            health.failed("janitor", exc)
        await sleep_until_set(stop, cfg.janitor_interval)

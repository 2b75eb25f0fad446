"""The forwarder: moves due scheduled and retry tasks to pending (Asynq's forwarder)."""
from __future__ import annotations

import asyncio
import logging
from typing import Optional

from redis.exceptions import RedisError

from fastq._rdb.worker import Broker
from fastq.server.config import WorkerConfig
from fastq.server.health import RedisHealth, noop_health
from fastq.server.maintenance import sleep_until_set

log = logging.getLogger("fastq.maintenance")


async def forward_loop(broker: Broker, cfg: WorkerConfig, stop: asyncio.Event,
                       health: Optional[RedisHealth] = None) -> None:
    """Move due scheduled and retry tasks to pending every ``forward_interval`` until ``stop`` is set."""
    health = health or noop_health()
    while not stop.is_set():
        try:
            moved = await broker.forward(cfg.queues)
            if moved:
                log.debug("forwarded %d due task(s)", moved)
            health.ok("forward")
        except (RedisError, OSError) as exc:
            health.failed("forward", exc)
        await sleep_until_set(stop, cfg.forward_interval)

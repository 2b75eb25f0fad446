"""The janitor: deletes completed tasks whose retention ended (Asynq's janitor), and ends the
workflows whose step's task is gone (``fastq._rdb.flow.sweep``)."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Optional

from redis.exceptions import RedisError

from fastq._rdb.worker import Broker
from fastq.server.config import WorkerConfig
from fastq.server.health import RedisHealth, noop_health
from fastq.server.maintenance import sleep_until_set

log = logging.getLogger("fastq.janitor")


async def janitor_loop(broker: Broker, cfg: WorkerConfig, stop: asyncio.Event,
                       health: Optional[RedisHealth] = None) -> None:
    """Delete completed tasks whose retention ended, in batches, every ``janitor_interval``; every
    ``flow_sweep_interval``, end the workflows whose step's task is gone."""
    health = health or noop_health()
    sweep_at = time.monotonic() + cfg.flow_sweep_interval
    while not stop.is_set():
        try:
            await broker.janitor(cfg.queues, cfg.janitor_batch)
            if time.monotonic() >= sweep_at:
                sweep_at = time.monotonic() + cfg.flow_sweep_interval  # a failed sweep waits for the next
                ended = await broker.flow_sweep(cfg.queues)
                if ended:
                    log.warning("ended %d workflow(s) whose step was gone (deleted, revoked, or settled by a worker "
                                "that does not follow workflow links): later chain steps dropped, chords failed",
                                ended)
            health.ok("janitor")
        except (RedisError, OSError) as exc:
            health.failed("janitor", exc)
        await sleep_until_set(stop, min(cfg.janitor_interval, max(0.0, sweep_at - time.monotonic())))

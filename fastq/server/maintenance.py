"""Periodic upkeep each worker runs: forward due tasks, recover expired leases.

Several workers doing the same upkeep never conflict: every move is one atomic
script, and a task already moved by another worker is simply not found.
"""
from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import RedisError

from fastq import _scripts, keys
from fastq._codec import decode_message
from fastq.errors import DecodeError
from fastq.server.broker import ARCHIVE, RETRY, Broker, group_by
from fastq.server.config import WorkerConfig
from fastq.server.processor import Processor
from fastq.task import Task

log = logging.getLogger("fastq.maintenance")

LEASE_EXPIRED = "asynq: task lease expired"
RECOVER_BATCH = 500


async def sleep_until_set(event: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``event`` is set, whichever comes first."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except asyncio.TimeoutError:
        pass


async def forward_loop(broker: Broker, cfg: WorkerConfig, stop: asyncio.Event) -> None:
    """Move due scheduled and retry tasks to pending every ``forward_interval`` until ``stop`` is set."""
    while not stop.is_set():
        try:
            moved = await broker.forward(cfg.queues)
            if moved:
                log.debug("forwarded %d due task(s)", moved)
        except (RedisError, OSError) as exc:
            log.warning("forwarding due tasks failed: %s", exc)
        await sleep_until_set(stop, cfg.forward_interval)


async def recover_once(broker: Broker, processor: Processor, cfg: WorkerConfig) -> int:
    """Send tasks whose lease expired to retry (or archive when retries are exhausted)."""
    now = time.time()
    items = []
    for q in cfg.queues:
        reply = await _scripts.LIST_LEASE_EXPIRED.arun(
            broker.redis, [keys.lease_key(q)], [cfg.recover_grace, keys.task_key_prefix(q), RECOVER_BATCH])
        for i in range(0, len(reply), 2):
            tid = reply[i].decode()
            if tid in processor.running or tid in processor.unacked:
                continue  # ours and alive: the next heartbeat extends it
            try:
                msg = decode_message(reply[i + 1])
            except DecodeError:
                continue  # the dequeue path archives undecodable messages
            msg.error_msg = LEASE_EXPIRED
            msg.last_failed_at = int(now)
            if msg.retried >= msg.retry:
                items.append((ARCHIVE, q, (tid, msg)))
            else:
                delay = cfg.retry_delay(msg.retried, None, Task._trusted(msg.type, msg.payload, msg.headers))
                msg.retried += 1
                items.append((RETRY, q, (tid, msg, int(now + delay), True)))
    if not items:
        return 0
    missing = await broker.write_acks(group_by(items), now)
    recovered = len(items) - len(missing)
    if recovered:
        log.warning("recovered %d task(s) whose lease expired", recovered)
    return recovered


async def recover_loop(broker: Broker, processor: Processor, cfg: WorkerConfig, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await recover_once(broker, processor, cfg)
        except (RedisError, OSError) as exc:
            log.warning("lease recovery failed: %s", exc)
        await sleep_until_set(stop, cfg.recover_interval)

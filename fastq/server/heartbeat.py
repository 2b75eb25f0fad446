"""Heartbeat: register the worker as an Asynq server.

Every ``heartbeat_interval`` (Asynq: 5 s) the worker writes its ``ServerInfo`` (TTL 2 x
heartbeat_interval) and a ``WorkerInfo`` per in-flight task, exactly as a Go server does, so
``asynq server ls`` and asynqmon list it, and reads ``INFO`` to notice a Redis restart or
failover. Leases are extended elsewhere (``fastq.server.leases``: a thread with its own
connection), so that neither a blocked event loop nor a refused server-state write (Redis full)
costs the running tasks their leases.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from typing import Any, Callable, Optional

from redis.exceptions import RedisError

from fastq import keys
from fastq._proto import ServerInfo, Timestamp, WorkerInfo, encode
from fastq._rdb.worker import Broker
from fastq.server.config import WorkerConfig
from fastq.server.processor import Processor

log = logging.getLogger("fastq.heartbeat")


class Heartbeater:
    def __init__(self, broker: Broker, processor: Processor, cfg: WorkerConfig, server_id: str | None = None) -> None:
        self.broker = broker
        self.processor = processor
        self.cfg = cfg
        self.server_id = server_id or str(uuid.uuid4())
        self.tick = cfg.heartbeat_interval
        self.run_id: str | None = None
        self.replid: str | None = None  # the server's replication ID, to tell a failover from a restart
        self.on_restart: Optional[Callable[[], None]] = None  # Redis restarted or failed over (keyspace wake-up)
        self.rtt = 0.0  # duration of the last heartbeat round trip
        self._clock_warned = False
        self.pid = os.getpid()
        self.started = Timestamp.now()
        self.status = "active"
        self.server_key = keys.server_info_key(cfg.host, self.pid, self.server_id)
        self.workers_key = keys.workers_key(cfg.host, self.pid, self.server_id)
        self.ttl = max(1, int(round(cfg.heartbeat_interval * 2)))

    def server_info(self) -> ServerInfo:
        cfg = self.cfg
        return ServerInfo(
            host=cfg.host, pid=self.pid, server_id=self.server_id, concurrency=cfg.concurrency,
            queues=dict(cfg.queues), strict_priority=cfg.strict_priority, status=self.status,
            start_time=self.started, active_worker_count=len(self.processor.running_snapshot()),
        )

    def worker_infos(self) -> list[tuple[str, bytes]]:
        out = []
        for run in self.processor.running_snapshot().values():
            msg = run.msg
            out.append((run.id, encode(WorkerInfo(
                host=self.cfg.host, pid=self.pid, server_id=self.server_id, task_id=run.id,
                task_type=msg.type, task_payload=msg.payload, queue=run.queue,
                start_time=Timestamp.from_unix(run.started), deadline=Timestamp.from_unix(run.deadline),
            ))))
        return out

    async def beat(self) -> None:
        since = time.monotonic()
        info = await self.broker.heartbeat(self.server_key, self.workers_key, self.ttl, encode(self.server_info()),
                                           self.worker_infos())
        self.rtt = time.monotonic() - since
        log.debug("heartbeat in %.3fs", self.rtt)
        if info is None:  # INFO not permitted: restarts go unnoticed, nothing else changes
            return
        self._check_clock(info)
        run_id = info.get("run_id", "")
        if self.run_id is not None and run_id != self.run_id:
            if self.on_restart is not None:
                self.on_restart()
            reloaded = _reloaded(info)
            if self.replid and info.get("master_replid2") == self.replid:
                # a promoted replica keeps its old master's replication ID as replid2: a failover
                log.warning("Redis failover: now served by a promoted replica (run_id %s -> %s)", self.run_id, run_id)
            elif reloaded:
                log.warning("Redis restarted (run_id %s -> %s) and reloaded its data (%s)", self.run_id, run_id,
                            reloaded)
            else:
                log.error("Redis restarted (run_id %s -> %s) with no persisted data to reload: the tasks it held "
                          "are lost; workers carry on with whatever it has now.", self.run_id, run_id)
        self.run_id = run_id
        self.replid = info.get("master_replid")

    def _check_clock(self, info: dict[str, Any]) -> None:
        """Warn once when this host's clock is far from Redis's. Leases and due times use Redis
        time, so skew is harmless to them; it does shift process_at times computed by clients."""
        server_us = info.get("server_time_usec")
        if server_us is None or self._clock_warned or self.rtt > 1.0:  # a slow reply (or a blocked loop) says
            return                                                     # nothing about the clocks
        offset = time.time() - int(server_us) / 1e6 - self.rtt / 2
        if abs(offset) > 5:
            self._clock_warned = True
            log.warning("this host's clock is %+.1fs off the Redis server's; fastq uses Redis time for leases "
                        "and due times, but fix NTP: timestamps in task messages come from local clocks", offset)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self.beat()
                self.processor.health.ok("heartbeat")
            except (RedisError, OSError) as exc:
                self.processor.redis_error("heartbeat", exc)
            delay = started + self.tick - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except asyncio.TimeoutError:
                    pass

    async def clear(self) -> None:
        await self.broker.clear_server_state(self.server_key, self.workers_key)


def _reloaded(info: dict[str, Any]) -> str:
    """What a restarted Redis reloaded, from ``INFO persistence`` ("" when nothing: data lost)."""
    if str(info.get("aof_enabled", "0")) == "1":
        return "append-only file"
    keys_loaded = int(info.get("rdb_last_load_keys_loaded", 0) or 0)
    return f"{keys_loaded} keys from its RDB snapshot" if keys_loaded else ""

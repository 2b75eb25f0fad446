"""The outcome buffer: what the processor decided, written to Redis in batches.

The processor ``add``s each task's outcome (``fastq._rdb.outcome``); ``loop`` writes whatever
accumulated while the previous write was in flight, in one round trip (``Broker.settle``).
While Redis fails, outcomes stay buffered, in order, and are written once it is back (back-off
0.05 s doubling up to 2 s, with jitter); the tasks' leases are extended meanwhile (the lease
thread extends every ID in ``unacked``). ``close`` writes the rest before the worker exits.

An outcome the scripts did not write (the task was no longer held with that lease token: lease
lost and reclaimed) is logged as a WARNING with the IDs.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Optional

from redis.exceptions import RedisError

from fastq._rdb.outcome import Outcome, TaskId
from fastq.server.health import RedisHealth
from fastq.server.loops import jittered_sleep
from fastq.server.unusable import printable_id

__all__ = ["Acks"]

log = logging.getLogger("fastq.processor")


class Acks:
    """Outcomes not yet written, and the loop that writes them through ``broker.settle``."""

    def __init__(self, broker: Any, health: RedisHealth) -> None:
        self.broker = broker
        self.health = health
        self.unacked: dict[TaskId, str] = {}  # task id -> queue: outcome known, not yet written
        self._buffer: list[Outcome] = []
        self._event: Optional[asyncio.Event] = None
        self._closed = False

    def bind(self) -> None:
        """Create the loop-bound event (call from the running loop)."""
        self._event = asyncio.Event()

    def __len__(self) -> int:
        """Outcomes waiting to be written."""
        return len(self._buffer)

    def add(self, outcome: Outcome) -> None:
        buffer = self._buffer
        if not buffer:  # the first since the loop took the buffer: wake it (later ones find it awake)
            self._event.set()  # type: ignore[union-attr]
        buffer.append(outcome)
        self.unacked[outcome.id] = outcome.queue

    def holds(self, tid: TaskId) -> bool:
        """True while the outcome of ``tid`` is known but not yet written."""
        return tid in self.unacked

    def snapshot(self) -> dict[TaskId, str]:
        """A copy of ``unacked`` (safe from another thread: one C-level copy under the GIL)."""
        return self.unacked.copy()

    async def loop(self) -> None:
        """Write buffered outcomes until ``close``."""
        event = self._event
        assert event is not None, "bind() first"
        error_sleep = 0.05
        while True:
            await event.wait()
            event.clear()
            if not self._buffer:
                if self._closed:
                    return
                continue
            batch, self._buffer = self._buffer, []
            try:
                await self.write(batch)
                error_sleep = 0.05
                if self.health.troubled:
                    self.health.ok("ack")
            except (RedisError, OSError) as exc:
                self.health.failed("ack", exc)
                log.debug("%d task outcome(s) wait for Redis", len(batch))
                self._buffer = batch + self._buffer
                await jittered_sleep(error_sleep)
                error_sleep = min(error_sleep * 2, 2.0)
                event.set()

    async def write(self, batch: list[Outcome]) -> None:
        """Write ``batch`` (raises Redis errors: the caller keeps the batch)."""
        missing = await self.broker.settle(batch)
        unacked = self.unacked
        for o in batch:
            unacked.pop(o.id, None)
        if missing:
            log.warning("%d outcome(s) not written: the task was no longer held by this worker "
                        "(lease lost and reclaimed?): %s", len(missing), [printable_id(m) for m in missing[:10]])

    async def close(self, flush_timeout: float = 5.0) -> None:
        """Write every buffered outcome (retrying until ``flush_timeout``), then end ``loop``."""
        end = time.monotonic() + flush_timeout
        while self._buffer and time.monotonic() < end:
            batch, self._buffer = self._buffer, []
            try:
                await self.write(batch)
            except Exception as exc:  # noqa: BLE001 - Redis errors, or anything else: keep trying until the end
                log.warning("shutdown: writing outcomes failed (%s); retrying", exc)
                self._buffer = batch + self._buffer
                await asyncio.sleep(0.1)
        if self._buffer:
            log.error("shutdown: %d task outcome(s) not written; their leases will expire and "
                      "the tasks will be recovered", len(self._buffer))
        self._closed = True
        if self._event is not None:
            self._event.set()

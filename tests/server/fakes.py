"""A small in-memory stand-in for the worker's Redis seam (``fastq._rdb.worker.Broker``).

For unit tests of the processor and the outcome buffer only: what Redis does with the calls is
tested against a real redis-server (tests/rdb/test_worker_rdb.py, tests/test_scripts.py).
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Optional

from fastq._rdb.outcome import Claim, Outcome
from fastq._rdb.worker import LEASE_MARGIN


class FakeBroker:
    """Hands out ``claims`` (in order) to dequeues; records settled outcomes.

    ``fail_dequeue``: raised by the next dequeue (once). ``fail_settle``: raised by every settle
    while set. ``missing``: IDs a settle reports as not written. ``wrong``: what
    ``wrong_key_types`` answers per queue. ``gate``: when set, a settle waits for it."""

    def __init__(self) -> None:
        self.claims: list[Claim] = []
        self.dequeues: list[tuple[list[str], int, int, str]] = []
        self.settled: list[Outcome] = []
        self.settles: list[list[Outcome]] = []  # each successful settle's batch
        self.settle_attempts = 0
        self.fail_dequeue: Optional[BaseException] = None
        self.fail_settle: Optional[BaseException] = None
        self.missing: set[Any] = set()
        self.wrong: dict[str, list[tuple[str, str, str]]] = {}
        self.gate: Optional[asyncio.Event] = None

    def put(self, queue: str, raw_id: bytes, raw: Optional[bytes]) -> None:
        self.claims.append(Claim(queue, raw_id, raw, ""))

    async def dequeue(self, queue_names: list[str], count: int, lease: int, token: str) -> list[Claim]:
        self.dequeues.append((list(queue_names), count, lease, token))
        if self.fail_dequeue is not None:
            exc, self.fail_dequeue = self.fail_dequeue, None
            raise exc
        taken = [c for c in self.claims if c.queue in queue_names][:count]
        for c in taken:
            self.claims.remove(c)
        until = time.monotonic() + lease - LEASE_MARGIN
        return [Claim(c.queue, c.raw_id, c.raw, token, until) for c in taken]

    async def settle(self, outcomes: list[Outcome], now: Optional[float] = None, cutoff: str = "") -> list[bytes]:
        self.settle_attempts += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_settle is not None:
            raise self.fail_settle
        batch = list(outcomes)
        self.settles.append(batch)
        self.settled += batch
        return [o.id.encode() if isinstance(o.id, str) else o.id for o in batch if o.id in self.missing]

    async def wrong_key_types(self, queue: str) -> list[tuple[str, str, str]]:
        return self.wrong.get(queue, [])


async def until(condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)

"""A small in-memory stand-in for the worker's Redis seam (``fastq._rdb.worker.Broker`` and the
lease thread's ``SyncBroker.extend_leases``).

For unit tests of the worker's parts (processor, outcome buffer, leases, heartbeat, forwarder,
recoverer) only: the fakes record calls and return canned or derived replies. What Redis does with
the calls is tested against a real redis-server (tests/rdb/test_worker_rdb.py, tests/test_scripts.py).
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Iterable, Optional

from fastq._rdb.outcome import Claim, Outcome
from fastq._rdb.worker import LEASE_MARGIN


class FakeBroker:
    """Hands out ``claims`` (in order) to dequeues; records settled outcomes.

    ``fail_dequeue``: raised by the next dequeue (once). ``fail_settle``: raised by every settle
    while set. ``missing``: IDs a settle reports as not written. ``wrong``: what
    ``wrong_key_types`` answers per queue. ``gate``: when set, a settle waits for it.

    Upkeep: ``forward`` answers ``moved`` (in turn, then 0) and raises ``fail_forward`` while set;
    ``heartbeat`` answers ``info`` (the parsed ``INFO`` reply, None: denied) and raises
    ``fail_heartbeat`` while set; ``list_lease_expired`` answers ``(cutoff, expired[queue])``."""

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
        self.settle_args: list[tuple[Optional[float], str]] = []  # (now, cutoff) of each settle
        # upkeep
        self.forwards: list[tuple[list[str], float]] = []  # (queues, time.monotonic()) of each call
        self.moved: list[int] = []
        self.fail_forward: Optional[BaseException] = None
        self.heartbeats: list[tuple[str, str, int, bytes, list[tuple[str, bytes]]]] = []
        self.info: Optional[dict[str, Any]] = None
        self.fail_heartbeat: Optional[BaseException] = None
        self.cleared: list[tuple[str, str]] = []
        self.expired: dict[str, list[Claim]] = {}
        self.cutoff = "0"
        self.listed: list[tuple[str, float, int]] = []

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
        self.settle_args.append((now, cutoff))
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

    async def forward(self, queues: Iterable[str], batch: int = 100) -> int:
        self.forwards.append((list(queues), time.monotonic()))
        if self.fail_forward is not None:
            raise self.fail_forward
        return self.moved.pop(0) if self.moved else 0

    async def heartbeat(self, server_key: str, workers_key: str, ttl: int, info: bytes,
                        workers: list[tuple[str, bytes]]) -> Optional[dict[str, Any]]:
        self.heartbeats.append((server_key, workers_key, ttl, info, list(workers)))
        if self.fail_heartbeat is not None:
            raise self.fail_heartbeat
        return None if self.info is None else dict(self.info)

    async def clear_server_state(self, server_key: str, workers_key: str) -> None:
        self.cleared.append((server_key, workers_key))

    async def list_lease_expired(self, queue: str, grace: float, limit: int) -> tuple[str, list[Claim]]:
        """As Redis lists them: the claims carry no token."""
        self.listed.append((queue, grace, limit))
        return self.cutoff, [Claim(c.queue, c.raw_id, c.raw, "") for c in self.expired.get(queue, [])[:limit]]


class FakeSyncBroker:
    """Stands in for ``SyncBroker.extend_leases`` (the lease thread's one call); thread-safe enough
    for one writer thread under the GIL.

    Like the real one it answers ``(extended, error)``: the IDs of the queues whose call succeeded,
    and the first error. ``fail``: the error of one queue's call (the other queues are extended).
    ``down``: errors for the next calls, one each, as a failed round trip (nothing extended)."""

    def __init__(self) -> None:
        self.extends: list[tuple[dict[str, list[str]], int]] = []  # (held, lease) of each call
        self.times: list[float] = []  # time.monotonic() of each call
        self.fail: dict[str, BaseException] = {}
        self.down: list[BaseException] = []

    def extend_leases(self, held: dict[str, list[str]], lease: int
                      ) -> tuple[dict[str, list[str]], Optional[BaseException]]:
        self.extends.append(({q: list(ids) for q, ids in held.items()}, lease))
        self.times.append(time.monotonic())
        if self.down:
            return {}, self.down.pop(0)
        extended = {q: ids for q, ids in held.items() if q not in self.fail}
        error = next((self.fail[q] for q in held if q in self.fail), None)
        return extended, error


async def until(condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


class HealthRecorder:
    """A hook that records Redis outages and their ends, as ``("error" | "restored", operation)``."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def redis_error(self, operation: str, exc: BaseException) -> None:
        self.seen.append(("error", operation))

    def redis_restored(self, operation: str, seconds: float) -> None:
        self.seen.append(("restored", operation))

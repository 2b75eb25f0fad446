"""The Redis operations of rate and concurrency limits (``fastq.server.limits`` decides).

* ``admit_call``: one ``limit_admit.lua`` call admits every limited claim of one dequeue batch
  (one queue); the claims over a limit move from active to scheduled in the same call;
* ``release_call``: one ``limit_release.lua`` call per queue frees the concurrency slots of
  settled tasks, sent in the round trip of their outcomes (``settle_with_release``);
* ``extend_calls``: the slots of running tasks, pushed with their leases (the lease thread);
* ``forward_calls``: the due scheduled tasks of the queues to pending, by the Redis clock to the
  microsecond (``forward.lua`` with its precise flag), for tasks that wait for a rate slot.

Each call stays within one queue's hash slot: every limit key carries the queue's hash tag.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence

from fastq import keys
from fastq._rdb import scripts as _s
from fastq._rdb.calls import Call, aexecute, execute, script
from fastq._rdb.outcome import Outcome
from fastq._rdb.worker import missing_ids, settle_calls

__all__ = ["Ask", "Slot", "admit_call", "admit", "admit_groups", "release_call", "extend_calls", "extend_slots",
           "forward_calls", "settle_with_release"]


@dataclass(slots=True)
class Ask:
    """One claimed task to admit: its rate key and interval (1 / rate, seconds), its slots and
    waiters keys and concurrency limit (None: no such limit)."""

    id: str
    rate_key: Optional[str] = None
    interval: float = 0.0
    slots_key: Optional[str] = None
    waiters_key: Optional[str] = None
    limit: int = 0


@dataclass(slots=True)
class Slot:
    """A concurrency slot held by a running task (``token``: its claim's lease token)."""

    queue: str
    id: str
    token: str
    slots_key: str
    waiters_key: str


class _Keys:
    """KEYS of a call: fixed ones first, then each limit key once; ``index`` is 1-based (Lua)."""

    def __init__(self, fixed: list[str]) -> None:
        self.keys = fixed
        self._at: dict[str, int] = {}

    def index(self, key: Optional[str]) -> int:
        if key is None:
            return 0
        at = self._at.get(key)
        if at is None:
            self.keys.append(key)
            at = self._at[key] = len(self.keys)
        return at


def admit_call(queue: str, token: str, groups: Sequence[tuple[Ask, Sequence[str]]], backoff: float,
               tolerance: float, grace: float, lease: int, max_wait: float) -> Call:
    """The ``limit_admit`` call for claims of ``queue`` made with ``token``: ``groups`` of task IDs
    with the same limits (an ``Ask`` whose ``id`` is not used). The reply has one character per
    ID, in order: ``1`` admitted, ``0`` deferred (now scheduled), ``-`` no longer held.
    ``backoff``: seconds the first task waiting for a concurrency slot stays scheduled unless woken
    (the n-th: ``backoff`` x (1 + n / limit), at most ``max_wait``); ``tolerance``: a task whose rate
    slot is at most that many seconds ahead runs now; ``grace``: how long after its time a reserved
    rate slot still admits its task; ``lease``: the claims' lease (a slot's life)."""
    k = _Keys([keys.active_key(queue), keys.lease_key(queue), keys.scheduled_key(queue)])
    args: list[Any] = [keys.task_key_prefix(queue), token, backoff, tolerance, grace, lease, max_wait]
    for a, ids in groups:
        args += (k.index(a.rate_key), repr(a.interval), k.index(a.slots_key), a.limit, k.index(a.waiters_key), len(ids))
        args += ids
    return script(_s.LIMIT_ADMIT, k.keys, args)


async def admit_groups(redis: Any, queue: str, token: str, groups: Sequence[tuple[Ask, Sequence[str]]],
                       backoff: float, tolerance: float, grace: float, lease: int, max_wait: float) -> bytes:
    """Run ``admit_call``; its reply (one status character per ID)."""
    (reply,) = await aexecute(redis, [admit_call(queue, token, groups, backoff, tolerance, grace, lease, max_wait)])
    return reply if isinstance(reply, bytes) else str(reply).encode()


_STATUS = {ord("1"): 1, ord("0"): 0, ord("-"): -1}


async def admit(redis: Any, queue: str, token: str, asks: Sequence[Ask], backoff: float,
                tolerance: float = 0.0, grace: float = 2.0, lease: int = 30, max_wait: float = 3600.0) -> list[int]:
    """``admit_groups`` for single asks (grouped here by their limits); the status of each, in order."""
    grouped: dict[tuple[Any, ...], tuple[Ask, list[int]]] = {}
    for n, a in enumerate(asks):
        grouped.setdefault((a.rate_key, a.interval, a.slots_key, a.limit, a.waiters_key), (a, []))[1].append(n)
    groups = [(a, [asks[n].id for n in members]) for a, members in grouped.values()]
    reply = await admit_groups(redis, queue, token, groups, backoff, tolerance, grace, lease, max_wait)
    statuses = [0] * len(asks)
    for n, c in zip([n for _, members in grouped.values() for n in members], reply, strict=True):
        statuses[n] = _STATUS[c]
    return statuses


def release_call(queue: str, slots: Iterable[Slot]) -> Call:
    """Free the slots of settled tasks of ``queue`` (fenced by token), waking one waiter per slot."""
    k = _Keys([keys.scheduled_key(queue), keys.pending_key(queue)])
    args: list[Any] = [keys.task_key_prefix(queue)]
    for s in slots:
        args += (s.id, s.token, k.index(s.slots_key), k.index(s.waiters_key))
    return script(_s.LIMIT_RELEASE, k.keys, args)


def release_calls(slots: Iterable[Slot]) -> list[Call]:
    by_queue: dict[str, list[Slot]] = {}
    for s in slots:
        by_queue.setdefault(s.queue, []).append(s)
    return [release_call(q, items) for q, items in by_queue.items()]


def extend_calls(slots: Iterable[Slot], lease: int) -> list[Call]:
    """Push the slots of running tasks to Redis time + ``lease`` (never creating one): one call per queue."""
    by_queue: dict[str, tuple[_Keys, list[Any]]] = {}
    for s in slots:
        entry = by_queue.get(s.queue)
        if entry is None:
            entry = by_queue[s.queue] = (_Keys([]), [lease])
        k, args = entry
        args += (k.index(s.slots_key), s.id)
    return [script(_s.LIMIT_EXTEND, k.keys, args) for k, args in by_queue.values()]


def extend_slots(client: Any, slots: Iterable[Slot], lease: int) -> None:
    """``extend_calls`` on a synchronous client (the lease thread), one round trip."""
    calls = extend_calls(slots, lease)
    if calls:
        execute(client, calls)


def forward_calls(queues: Iterable[str], batch: int) -> list[Call]:
    """Move scheduled tasks due by the Redis clock (to the microsecond) to pending."""
    return [script(_s.FORWARD, [keys.scheduled_key(q), keys.pending_key(q), keys.groups_key(q)],
                   [keys.task_key_prefix(q), keys.group_key_prefix(q), batch, "1"]) for q in queues]


async def settle_with_release(redis: Any, outcomes: Sequence[Outcome], slots: Sequence[Slot],
                              now: Optional[float] = None, cutoff: str = "") -> list[bytes]:
    """``Broker.settle`` plus the release of ``slots``, after the outcomes, in one round trip.
    Returns the IDs whose outcome was not written."""
    calls = settle_calls(outcomes, time.time() if now is None else now, cutoff)
    n = len(calls)
    calls += release_calls(slots)
    if not calls:
        return []
    replies = await aexecute(redis, calls)
    return missing_ids(replies[:n])

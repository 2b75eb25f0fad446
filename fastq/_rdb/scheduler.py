"""The scheduler's Redis operations (Go Asynq's scheduler keys: entries, history, tick guards).

Each is one round trip through ``fastq._rdb.calls``; the scheduler decides when to call them.
"""
from __future__ import annotations

import time
from typing import Any, Iterable, Sequence

from fastq import keys
from fastq._rdb.calls import aexecute, cmd, script
from fastq._rdb.scripts import SCRIPTS

__all__ = ["claim_tick", "record_enqueue", "write_entries", "delete_histories", "clear_scheduler"]

WRITE_SCHEDULER_ENTRIES = SCRIPTS["write_scheduler_entries"]
RECORD_SCHEDULER_EVENT = SCRIPTS["record_scheduler_event"]


async def claim_tick(redis: Any, guard_key: str, scheduler_id: str, ttl: int) -> bool:
    """Win the tick guard (SET NX EX): True for the one scheduler that enqueues this tick."""
    (won,) = await aexecute(redis, [cmd("set", guard_key, scheduler_id, nx=True, ex=ttl)])
    return bool(won)


async def record_enqueue(redis: Any, entry_id: str, enqueued_at: int, event: bytes, max_history: int) -> None:
    """Add an enqueue event to the entry's history (trimmed to ``max_history``)."""
    await aexecute(redis, [script(RECORD_SCHEDULER_EVENT, [keys.scheduler_history_key(entry_id)],
                                  [enqueued_at, event, max_history])])


async def write_entries(redis: Any, scheduler_id: str, ttl: int, entries: Sequence[bytes]) -> None:
    """The scheduler's heartbeat: its entries list, then its member of ``asynq:schedulers``. Two
    round trips, as Go: they live in different cluster slots, and the entries go first so a reader
    never finds a member of the zset without its list."""
    entries_key = keys.scheduler_entries_key(scheduler_id)
    await aexecute(redis, [script(WRITE_SCHEDULER_ENTRIES, [entries_key], [ttl, *entries])])
    await aexecute(redis, [cmd("zadd", keys.ALL_SCHEDULERS, {entries_key: int(time.time()) + ttl})])


async def delete_histories(redis: Any, entry_ids: Iterable[str]) -> None:
    await aexecute(redis, [cmd("delete", *(keys.scheduler_history_key(i) for i in entry_ids))])


async def clear_scheduler(redis: Any, scheduler_id: str, entry_ids: Iterable[str]) -> None:
    """Go's Shutdown: remove the scheduler from ``asynq:schedulers``, delete its entries and histories."""
    key = keys.scheduler_entries_key(scheduler_id)
    await aexecute(redis, [cmd("zrem", keys.ALL_SCHEDULERS, key),
                           cmd("delete", key, *(keys.scheduler_history_key(i) for i in entry_ids))])

"""The Redis operations of group aggregation (``fastq.server.aggregator`` decides when and what).

Asynq's layout: a group's tasks wait in the zset ``asynq:{q}:g:<group>`` (members: task IDs,
scores: when they joined), the group is listed in the set ``asynq:{q}:groups``, an aggregation
set is the zset ``asynq:{q}:g:<group>:<set ID>`` registered in ``asynq:{q}:aggregation_sets``
with its deadline as score. Group names are bytes throughout (a name need not be UTF-8).

Every operation runs on a ``redis.asyncio`` client (standalone or cluster); calls are built by
plain functions and sent with ``fastq._rdb.calls``.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, NamedTuple, Optional, Sequence, Union

from fastq import keys
from fastq._codec import encode_message
from fastq._rdb.calls import Call, aexecute, cmd, script
from fastq._rdb.scripts import SCRIPTS
from fastq.options import ENQUEUE, GROUP, SCHEDULE, EnqueuePlan
from fastq.redis.cluster import is_cluster

__all__ = [
    "DONE", "ID_CONFLICT", "DUPLICATE", "NOT_OURS", "GroupRules", "group_name", "group_key", "set_key",
    "list_groups", "make_ready_sets", "read_set", "finish_aggregation", "reclaim_stale_sets",
    "list_aggregation_sets", "relist_groups", "discover_groups",
]

CHECK = SCRIPTS["aggregation_check"]
READ_SET = SCRIPTS["read_aggregation_set"]
FINISH = SCRIPTS["finish_aggregation"]
RECLAIM = SCRIPTS["reclaim_aggregation_sets"]
DISCOVER = SCRIPTS["aggregation_discover"]
RELIST = SCRIPTS["aggregation_relist"]

LIST_GROUPS_COUNT = 1000  # SSCAN COUNT when listing a queue's groups
CHECK_PAGE = 100  # groups checked per round trip
READ_PAGE = 1000  # set members read per round trip
RECLAIM_BATCH = 100  # stale sets reclaimed (or vanished sets relisted) per script call
DISCOVERY_SCAN_COUNT = 1000  # keys looked at per SCAN step (one script call each)

# finish_aggregation replies
DONE, ID_CONFLICT, DUPLICATE, NOT_OURS = 1, 0, -1, -2

Member = tuple[bytes, bytes]  # (task ID, encoded message) as Redis holds them
Archived = tuple[Union[str, bytes], bytes]  # (task ID, encoded archive message)


class GroupRules(NamedTuple):
    """When a group is ready (``aggregation_check.lua``), and how long its set may live."""

    max_size: int  # 0: no limit
    max_delay: float  # seconds; 0: no limit
    grace_period: float  # seconds without a new task
    set_timeout: int  # seconds until a set may be reclaimed


# ----------------------------------------------------------------- names and keys

def group_name(group: Any) -> bytes:
    """A group name as the bytes of its keys (a str may carry surrogate escapes)."""
    return group if isinstance(group, bytes) else str(group).encode("utf-8", "surrogateescape")


def group_key(q: str, name: bytes) -> bytes:
    """``keys.group_key`` for any bytes."""
    return keys.group_key_prefix(q).encode() + name


def set_key(q: str, name: bytes, set_id: str) -> bytes:
    """``keys.aggregation_set_key`` for any bytes."""
    return group_key(q, name) + b":" + set_id.encode()


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


# ----------------------------------------------------------------- groups

async def list_groups(redis: Any, q: str) -> list[bytes]:
    """The names in ``asynq:{q}:groups``, sorted (SSCAN: no single long call on a huge set)."""
    names: set[bytes] = set()
    cursor: Any = 0
    while True:
        ((cursor, page),) = await aexecute(redis, [cmd("sscan", keys.groups_key(q), cursor,
                                                       count=LIST_GROUPS_COUNT)])
        names.update(group_name(g) for g in page)
        if int(cursor) == 0:
            return sorted(names)


def check_call(q: str, name: bytes, set_id: str, rules: GroupRules) -> Call:
    """``aggregation_check.lua``: when the group is ready, move its oldest tasks into a new set."""
    return script(CHECK, [group_key(q, name), set_key(q, name, set_id),
                          keys.all_aggregation_sets_key(q), keys.groups_key(q)],
                  [rules.max_size, rules.max_delay, rules.grace_period, rules.set_timeout, name])


async def make_ready_sets(redis: Any, q: str, groups: Sequence[bytes], rules: GroupRules) -> list[tuple[bytes, str]]:
    """Check ``groups`` (``CHECK_PAGE`` per round trip); each ready one gets a new aggregation set
    that belongs to the caller. The (group, set ID) pairs made, in the order of ``groups``."""
    made: list[tuple[bytes, str]] = []
    for i in range(0, len(groups), CHECK_PAGE):
        page = [(g, str(uuid.uuid4())) for g in groups[i:i + CHECK_PAGE]]
        replies = await aexecute(redis, [check_call(q, g, set_id, rules) for g, set_id in page])
        made.extend(pair for pair, reply in zip(page, replies, strict=True) if int(reply) == 1)
    return made


# ----------------------------------------------------------------- one set

def read_call(q: str, key: bytes, first: int, count: int = READ_PAGE) -> Call:
    """``read_aggregation_set.lua``: [registered?, members in this page, id, msg, id, msg...]."""
    return script(READ_SET, [key, keys.all_aggregation_sets_key(q)], [keys.task_key_prefix(q), first, count])


async def read_set(redis: Any, q: str, key: bytes, page: int = READ_PAGE) -> Optional[list[Member]]:
    """The set's (task ID, message) pairs, oldest first, read ``page`` per round trip; None when the
    set is no longer registered (reclaimed)."""
    members: list[Member] = []
    first = 0
    while True:
        (reply,) = await aexecute(redis, [read_call(q, key, first, page)])
        if not int(reply[0]):
            return None
        members.extend((reply[i], reply[i + 1]) for i in range(2, len(reply), 2))
        if int(reply[1]) < page:
            return members
        first += page


def finish_call(q: str, key: bytes, plan: Optional[EnqueuePlan], bad: Sequence[Archived]) -> Call:
    """``finish_aggregation.lua``: if the set is still registered, enqueue ``plan`` (if any),
    archive ``bad``, delete the set and its other tasks."""
    archived = [x for tid, msg in bad for x in (tid, msg)]
    fixed = [key, keys.all_aggregation_sets_key(q), keys.archived_key(q)]
    if plan is None:
        return script(FINISH, [*fixed, key, keys.pending_key(q), keys.groups_key(q)],
                      [keys.task_key_prefix(q), "none", "", "", "", 0, *archived])
    msg = plan.msg
    extra: Any
    if plan.kind == ENQUEUE:
        kind, container, extra = "enqueue", keys.pending_key(q), ""
    elif plan.kind == SCHEDULE:
        kind, container = "schedule", keys.scheduled_key(q)
        extra = plan.process_at if plan.process_in is None else f"+{plan.process_in!r}"
    else:
        assert plan.kind == GROUP
        kind, container, extra = "group", keys.group_key(q, msg.group_key), msg.group_key
    task_keys: list[Any] = [*fixed, keys.task_key(q, msg.id), container, keys.groups_key(q)]
    if plan.unique_ttl:
        task_keys.append(msg.unique_key)
    return script(FINISH, task_keys, [keys.task_key_prefix(q), kind, encode_message(msg), msg.id, extra,
                                      plan.unique_ttl, *archived])


async def finish_aggregation(redis: Any, q: str, key: bytes, plan: Optional[EnqueuePlan],
                             bad: Sequence[Archived] = ()) -> int:
    """Enqueue the aggregated task and delete the set, atomically, if the set is still the caller's.

    ``DONE``; ``NOT_OURS`` (reclaimed); with a task: ``ID_CONFLICT`` (its ID exists) or
    ``DUPLICATE`` (its unique key is held). Only ``DONE`` changes anything."""
    (reply,) = await aexecute(redis, [finish_call(q, key, plan, bad)])
    return int(reply)


# ----------------------------------------------------------------- stale sets

def reclaim_call(q: str, batch: int = RECLAIM_BATCH) -> Call:
    """``reclaim_aggregation_sets.lua``: up to ``batch`` sets past their deadline back into their
    groups (the groups listed again, those found empty unlisted); replies how many."""
    return script(RECLAIM, [keys.all_aggregation_sets_key(q), keys.groups_key(q)],
                  [keys.group_key_prefix(q), keys.task_key_prefix(q), batch])


async def reclaim_stale_sets(redis: Any, queues: Sequence[str], batch: int = RECLAIM_BATCH) -> int:
    """Put the tasks of every set past its deadline back into its group; the number of sets.

    One round trip for all queues while nothing is stale."""
    total = 0
    pending = list(queues)
    while pending:
        replies = await aexecute(redis, [reclaim_call(q, batch) for q in pending])
        total += sum(int(n) for n in replies)
        pending = [q for q, n in zip(pending, replies, strict=True) if int(n) >= batch]
    return total


# ----------------------------------------------------------------- groups missing from asynq:{q}:groups

async def list_aggregation_sets(redis: Any, q: str, limit: int) -> Optional[list[bytes]]:
    """The keys in ``asynq:{q}:aggregation_sets`` (earliest deadline first); None when there are
    more than ``limit``."""
    (found,) = await aexecute(redis, [cmd("zrange", keys.all_aggregation_sets_key(q), 0, limit)])
    return None if len(found) > limit else list(found)


def relist_call(q: str, set_keys: Sequence[bytes]) -> Call:
    """``aggregation_relist.lua``: list the groups of ``set_keys`` that have tasks and whose sets
    are no longer registered; replies the names added."""
    return script(RELIST, [keys.groups_key(q), keys.all_aggregation_sets_key(q)],
                  [keys.group_key_prefix(q), *set_keys])


async def relist_groups(redis: Any, q: str, set_keys: Sequence[bytes]) -> list[bytes]:
    """List again the groups of aggregation sets that left ``asynq:{q}:aggregation_sets`` (reclaimed
    by Go Asynq, which does not list the group again) when they still have tasks; the names added.
    Keys of other queues and registered sets are ignored."""
    set_keys = list(set_keys)
    if not set_keys:
        return []
    replies = await aexecute(redis, [relist_call(q, set_keys[i:i + RECLAIM_BATCH])
                                     for i in range(0, len(set_keys), RECLAIM_BATCH)])
    return [name for added in replies for name in added]


def discover_call(queues: Sequence[str], cursor: Any, count: int) -> Call:
    """One SCAN step of ``aggregation_discover.lua`` over the group keys of ``queues`` (one queue:
    its own prefix; several: every queue's, the script keeps those of ``queues``); replies
    [next cursor, queue number (1-based), name added, ...]."""
    pattern = _glob_escape(keys.group_key_prefix(queues[0])) + "*" if len(queues) == 1 else "asynq:{*}:g:*"
    return script(DISCOVER, [k for q in queues for k in (keys.groups_key(q), keys.all_aggregation_sets_key(q))],
                  [cursor, pattern, count,
                   *(a for q in queues for a in (keys.group_key_prefix(q), keys.task_key_prefix(q)))])


async def discover_groups(redis: Any, queues: Sequence[str], count: int = DISCOVERY_SCAN_COUNT,
                          duty: float = 1.0) -> dict[str, list[bytes]]:
    """Add groups that have tasks but are missing from ``asynq:{q}:groups`` back to it.

    One full SCAN cycle over ``asynq:{q}:g:*`` in steps of ``count`` keys (one short script
    call each, steps of several sweeps sent together). Standalone Redis: one sweep for all
    ``queues``. Redis Cluster: one sweep per queue, on the node owning its slot. With
    ``duty`` < 1 it waits after each step so that its steps take at most that share of the
    time. Returns ``{queue: [group names added]}`` for the queues where some were found.
    """
    queues = list(dict.fromkeys(queues))
    if not queues:
        return {}
    sweeps = [[q] for q in queues] if is_cluster(redis) or len(queues) == 1 else [queues]
    found: dict[str, set[bytes]] = {}
    cursors: dict[int, Any] = {i: 0 for i in range(len(sweeps))}
    while cursors:
        order = list(cursors)
        started = time.monotonic()
        replies = await aexecute(redis, [discover_call(sweeps[i], cursors[i], count) for i in order])
        took = time.monotonic() - started
        for i, reply in zip(order, replies, strict=True):
            for j in range(1, len(reply), 2):
                found.setdefault(sweeps[i][int(reply[j]) - 1], set()).add(reply[j + 1])
            if int(reply[0]) == 0:
                del cursors[i]
            else:
                cursors[i] = reply[0]
        if cursors and duty < 1:
            await asyncio.sleep(took * (1 - duty) / duty)
    return {q: sorted(names) for q, names in found.items()}

"""The Inspector's reads: queues, stats, tasks, groups, servers, schedulers.

Each public function here is an I/O-free steps generator (see ``fastq._rdb.calls``), run by
``fastq.inspect.Inspector`` on a sync client and by ``AsyncInspector`` on an asyncio one. Reads
check the queue (``SISMEMBER asynq:queues``) in the same round trip as the read itself.
Listing pages costs one script call of O(page size); queue stats never loop over
all groups in one script (Asynq #1160). ``check_queue``, ``queue_steps``, ``task_message`` and
``task_state`` are shared with the writes (``inspect_write``).
"""
from __future__ import annotations

import functools
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Concatenate, ParamSpec, TypeVar

from redis.crc import key_slot
from redis.exceptions import NoPermissionError, ResponseError

from fastq import _proto, keys
from fastq._codec import TaskMessage, decode_message
from fastq._rdb.calls import Call, Steps, cmd, script
from fastq._rdb.scripts import SCRIPTS
from fastq.errors import CorruptDataError, DecodeError, QueueNotFoundError, TaskNotFoundError
from fastq.inspect import _common as c
from fastq.inspect.models import (
    ChordInfo,
    DailyStats,
    GroupInfo,
    QueueInfo,
    SchedulerEnqueueEvent,
    SchedulerEntry,
    ServerInfo,
    WorkerInfo,
)
from fastq.task import TaskInfo, TaskState

log = logging.getLogger("fastq.inspect")

STATS = SCRIPTS["inspect_queue_stats"]
GROUP_SCAN = SCRIPTS["inspect_group_scan"]
TASK_INFO = SCRIPTS["inspect_task_info"]
LIST = SCRIPTS["inspect_list"]
LIST_ZSET = SCRIPTS["inspect_list_zset"]
LIVE_KEYS = SCRIPTS["inspect_live_keys"]
CHECK = SCRIPTS["inspect_check"]

GROUPS_SUMMED_IN_SCRIPT = 1000
GROUP_SCAN_COUNT = 1000
MEMORY_SAMPLE = 20        # Asynq's taskSampleSize
GROUP_MEMORY_SAMPLE = 5   # Asynq's groupSampleSize

_P = ParamSpec("_P")
_T = TypeVar("_T")


def check_queue(queue: str) -> Steps[None]:
    """One round trip: raise QueueNotFoundError unless ``queue`` is in asynq:queues."""
    (exists,) = yield [cmd("sismember", keys.ALL_QUEUES, queue)]
    if not exists:
        raise QueueNotFoundError(queue)


def queue_steps(fn: Callable[Concatenate[str, _P], Steps[_T]]) -> Callable[Concatenate[str, _P], Steps[_T]]:
    """Decorate a steps function whose first argument is a queue: a WRONGTYPE reply (a key
    of the queue holds another Redis type than Asynq's layout says) becomes a
    ``CorruptDataError`` naming the queue, instead of a bare Redis error."""

    @functools.wraps(fn)
    def wrapper(queue: str, /, *args: _P.args, **kwargs: _P.kwargs) -> Steps[_T]:
        try:
            return (yield from fn(queue, *args, **kwargs))
        except ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            raise CorruptDataError(keys.queue_prefix(queue) + "*", f"a key of queue {queue!r} holds the wrong Redis "
                                   f"type for Asynq's layout ({str(exc).split(' script:')[0]})") from None
    return wrapper


def queues() -> Steps[list[str]]:
    (members,) = yield [cmd("smembers", keys.ALL_QUEUES)]
    return sorted(c.text(m) for m in members)


# ---------------------------------------------------------------- queue stats

def _stats_call(queue: str, day: str) -> Call:
    return script(STATS, [
        keys.pending_key(queue), keys.active_key(queue), keys.scheduled_key(queue), keys.retry_key(queue),
        keys.archived_key(queue), keys.completed_key(queue), keys.processed_key(queue, day),
        keys.failed_key(queue, day), keys.processed_total_key(queue), keys.failed_total_key(queue),
        keys.paused_key(queue), keys.groups_key(queue),
    ], [keys.task_key_prefix(queue), keys.group_key_prefix(queue), GROUPS_SUMMED_IN_SCRIPT,
        MEMORY_SAMPLE, GROUP_MEMORY_SAMPLE])


def _counter(queue: str, raw: Any, what: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise CorruptDataError(keys.queue_prefix(queue) + what, f"counter is not an integer: {raw!r}") from None


def queue_infos(names: list[str]) -> Steps[list[QueueInfo]]:
    """QueueInfo of each queue, all read in one round trip (plus SSCANs for huge group sets)."""
    names = [c.name("queue", q) for q in names]
    if len(names) == 1:
        return (yield from _queue_info(names[0]))
    return (yield from queue_steps(_queue_infos)(",".join(names), names))


@queue_steps
def _queue_info(queue: str) -> Steps[list[QueueInfo]]:
    return (yield from _queue_infos(queue, [c.name("queue", queue)]))


def _queue_infos(_label: str, names: list[str]) -> Steps[list[QueueInfo]]:
    if not names:
        return []
    now = datetime.now(timezone.utc)
    day = now.strftime("%Y-%m-%d")
    calls = []
    for q in names:
        calls += [cmd("sismember", keys.ALL_QUEUES, q), _stats_call(q, day)]
    replies = yield calls
    infos = []
    for i, q in enumerate(names):
        exists, r = replies[2 * i], replies[2 * i + 1]
        if not exists:
            raise QueueNotFoundError(q)
        counts = [int(x) for x in r[:6]]
        aggregating = int(r[13])
        if aggregating < 0:  # too many groups to sum in one script: SSCAN them in batches
            sizes = yield from _group_sizes(q)
            aggregating = sum(sizes.values())
        memory = float(r[14])
        if int(r[16]) > 0:
            memory += int(r[15]) / int(r[16]) * aggregating
        oldest = _counter(q, r[11], "t:<oldest pending task> pending_since") if r[11] else 0
        infos.append(QueueInfo(
            queue=q,
            memory_usage=int(memory),
            latency=max(0.0, now.timestamp() - oldest / 1e9) if oldest else 0.0,
            size=sum(counts) + aggregating,
            groups=int(r[12]),
            pending=counts[0], active=counts[1], scheduled=counts[2], retry=counts[3],
            archived=counts[4], completed=counts[5], aggregating=aggregating,
            processed=_counter(q, r[6], f"processed:{day}"), failed=_counter(q, r[7], f"failed:{day}"),
            processed_total=_counter(q, r[8], "processed"), failed_total=_counter(q, r[9], "failed"),
            paused=bool(int(r[10])),
            timestamp=now,
        ))
    return infos


def queue_info(queue: str) -> Steps[QueueInfo]:
    (info,) = yield from _queue_info(queue)
    return info


@queue_steps
def history(queue: str, days: int) -> Steps[list[DailyStats]]:
    c.name("queue", queue)
    c.positive_int("days", days, c.MAX_HISTORY_DAYS)
    now = datetime.now(timezone.utc)
    dates = [(now - timedelta(days=i)).date() for i in range(days)]
    names = []
    for d in dates:
        iso = d.isoformat()
        names += [keys.processed_key(queue, iso), keys.failed_key(queue, iso)]
    exists, values = yield [cmd("sismember", keys.ALL_QUEUES, queue), cmd("mget", names)]
    if not exists:
        raise QueueNotFoundError(queue)
    out = []
    for i, d in enumerate(dates):
        p, f = values[2 * i], values[2 * i + 1]
        out.append(DailyStats(queue, _counter(queue, p or 0, f"processed:{d}"),
                              _counter(queue, f or 0, f"failed:{d}"), d))
    return out


def _group_sizes(queue: str) -> Steps[dict[str, int]]:
    sizes: dict[str, int] = {}
    cursor: Any = 0
    while True:
        (reply,) = yield [script(GROUP_SCAN, [keys.groups_key(queue)],
                                 [cursor, GROUP_SCAN_COUNT, keys.group_key_prefix(queue)])]
        cursor = reply[0]
        for j in range(1, len(reply), 2):
            sizes[c.text(reply[j])] = int(reply[j + 1])
        if int(cursor) == 0:
            return sizes


@queue_steps
def groups(queue: str) -> Steps[list[GroupInfo]]:
    c.name("queue", queue)
    yield from check_queue(queue)
    sizes = yield from _group_sizes(queue)
    return [GroupInfo(g, n) for g, n in sorted(sizes.items())]


# ---------------------------------------------------------------- tasks

def task_message(queue: str, task_id: str, raw: Any) -> TaskMessage:
    """The task's decoded message, or CorruptDataError naming its key."""
    where = keys.task_key(queue, task_id)
    if raw is None:
        raise CorruptDataError(where, "the task hash has no 'msg' field")
    try:
        return decode_message(raw)
    except DecodeError as exc:
        raise CorruptDataError(where, f"'msg' is not a valid TaskMessage ({exc})") from None


def task_state(queue: str, task_id: str, raw: Any) -> TaskState:
    """The task's state field as a TaskState, or CorruptDataError naming its key."""
    try:
        return TaskState(c.text(raw)) if raw is not None else TaskState("")
    except ValueError:
        raise CorruptDataError(keys.task_key(queue, task_id), f"unknown task state {raw!r}") from None


@queue_steps
def task_info(queue: str, task_id: str) -> Steps[TaskInfo]:
    c.name("queue", queue)
    c.name("task ID", task_id)
    exists, reply = yield [cmd("sismember", keys.ALL_QUEUES, queue),
                           script(TASK_INFO, [keys.task_key(queue, task_id)], [task_id, keys.queue_prefix(queue)])]
    if not exists:
        raise QueueNotFoundError(queue)
    if reply == 0:
        raise TaskNotFoundError(queue, task_id)
    raw_msg, raw_state, score, result = reply
    state = task_state(queue, task_id, raw_state)
    msg = task_message(queue, task_id, raw_msg)
    next_at = None
    if state is TaskState.PENDING:
        next_at = datetime.now(timezone.utc)
    elif score is not None:
        next_at = c.utc(int(float(score)))
    info = TaskInfo.from_message(msg, state, next_at)
    info.result = bytes(result) if result else None
    return info


def chord_info(queue: str, chord_id: str) -> Steps[ChordInfo]:
    """The chord record of ``chord_id`` (its callback's task ID) in ``queue``."""
    c.name("queue", queue)
    c.name("chord ID", chord_id)
    reply = yield [cmd("hmget", keys.chord_key(queue, chord_id), "n", "done", "state", "failed", "error")]
    n, done, state, failed, error = reply[0]
    if n is None:
        raise TaskNotFoundError(queue, chord_id)

    def text(v: Any) -> str | None:
        return None if v is None else bytes(v).decode("utf-8", "replace")

    return ChordInfo(chord_id, queue, int(n), int(done or 0), text(state) or "waiting", text(failed), text(error))


def _info_or_skip(queue: str, task_id: str, raw_msg: Any, state: TaskState,
                  next_at: datetime | None, result: Any) -> TaskInfo | None:
    """A listed task's TaskInfo; like Go, a task whose message cannot be read is left out (logged)."""
    try:
        msg = task_message(queue, task_id, raw_msg)
    except CorruptDataError as exc:
        log.warning("skipping task in listing: %s", exc)
        return None
    info = TaskInfo.from_message(msg, state, next_at)
    info.result = bytes(result) if result else None
    return info


@queue_steps
def list_tasks(queue: str, state: Any, page: int = 1, page_size: int = c.DEFAULT_PAGE_SIZE,
               group: str | None = None) -> Steps[list[TaskInfo]]:
    """One page of tasks in ``state``, in Go's order: pending/active oldest first, zsets by score."""
    c.name("queue", queue)
    st = TaskState(c.state(state, c.LIST_STATES))
    grp = c.group_for(st.value, group)
    page, page_size = c.page_args(page, page_size)
    start = page_size * (page - 1)
    stop = start + page_size - 1
    check = cmd("sismember", keys.ALL_QUEUES, queue)
    if st in (TaskState.PENDING, TaskState.ACTIVE):
        container = keys.pending_key(queue) if st is TaskState.PENDING else keys.active_key(queue)
        # Tasks are LPUSHed, so the oldest are at the right end: Go reads from the right
        # with negative offsets and reverses the page.
        exists, reply = yield [check, script(LIST, [container, keys.lease_key(queue)],
                                             [-stop - 1, -start - 1, keys.task_key_prefix(queue),
                                              "1" if st is TaskState.ACTIVE else "0"])]
        if not exists:
            raise QueueNotFoundError(queue)
        redis_now = int(reply[0])
        now = datetime.now(timezone.utc)
        out = []
        for j in range(len(reply) - 4, 0, -4):
            tid = c.text(reply[j])
            info = _info_or_skip(queue, tid, reply[j + 1], st, now if st is TaskState.PENDING else None, reply[j + 2])
            if info is not None:
                lease = reply[j + 3]
                info.is_orphaned = st is TaskState.ACTIVE and lease is not None and float(lease) <= redis_now
                out.append(info)
        return out
    zset = keys.group_key(queue, grp) if st is TaskState.AGGREGATING else f"{keys.queue_prefix(queue)}{st.value}"
    exists, reply = yield [check, script(LIST_ZSET, [zset], [start, stop, keys.task_key_prefix(queue)])]
    if not exists:
        raise QueueNotFoundError(queue)
    out = []
    for j in range(0, len(reply), 4):
        tid = c.text(reply[j])
        next_at = None
        if st in (TaskState.SCHEDULED, TaskState.RETRY):
            next_at = c.utc(int(float(reply[j + 1])))
        info = _info_or_skip(queue, tid, reply[j + 2], st, next_at, reply[j + 3])
        if info is not None:
            out.append(info)
    return out


# ---------------------------------------------------------------- servers and schedulers

def _ts(ts: _proto.Timestamp) -> datetime | None:
    """A protobuf Timestamp as a datetime; Go's zero time (year 1) and 0 become None."""
    if ts.seconds <= 0:
        return None
    return ts.to_datetime()


def _live_keys(index_keys: list[str], now: int) -> Steps[list[list[bytes]]]:
    """The live members of the index zsets, pruning stale ones as Go does; a read-only ACL user
    (no ZREMRANGEBYSCORE) gets the same answer from a plain read that prunes nothing."""
    try:
        return (yield [script(LIVE_KEYS, [k], [now]) for k in index_keys])
    except ResponseError as exc:  # Redis 7.0 words an ACL denial inside a script as a plain ERR
        if not isinstance(exc, NoPermissionError) and "can't run this command" not in str(exc):
            raise
        return (yield [cmd("zrangebyscore", k, now, "+inf") for k in index_keys])


def servers() -> Steps[list[ServerInfo]]:
    """Live servers with their running tasks, joined by server ID as Go's Inspector does."""
    now = int(time.time())
    server_keys, worker_keys = yield from _live_keys([keys.ALL_SERVERS, keys.ALL_WORKERS], now)
    if not server_keys:
        return []
    replies = yield [cmd("get", k) for k in server_keys] + [cmd("hvals", k) for k in worker_keys]
    by_id: dict[str, ServerInfo] = {}
    for key, raw in zip(server_keys, replies[:len(server_keys)], strict=False):
        if raw is None:
            continue  # expired between the two round trips
        try:
            pb = _proto.decode(_proto.ServerInfo, raw)
        except DecodeError as exc:
            log.warning("skipping server %s: not a ServerInfo (%s)", c.text(key), exc)
            continue
        by_id[pb.server_id] = ServerInfo(pb.server_id, pb.host, pb.pid, pb.concurrency, dict(pb.queues),
                                         pb.strict_priority, _ts(pb.start_time), pb.status, [])
    for key, values in zip(worker_keys, replies[len(server_keys):], strict=False):
        for raw in values:
            try:
                w = _proto.decode(_proto.WorkerInfo, raw)
            except DecodeError as exc:
                log.warning("skipping a worker entry of %s: not a WorkerInfo (%s)", c.text(key), exc)
                continue
            server = by_id.get(w.server_id)
            if server is not None:
                server.active_workers.append(WorkerInfo(w.task_id, w.task_type, w.task_payload, w.queue,
                                                        _ts(w.start_time), _ts(w.deadline)))
    out = sorted(by_id.values(), key=lambda s: (s.host, s.pid, s.id))
    for s in out:
        s.active_workers.sort(key=lambda w: (w.started or datetime.min.replace(tzinfo=timezone.utc), w.task_id))
    return out


def scheduler_entries() -> Steps[list[SchedulerEntry]]:
    (entry_keys,) = yield from _live_keys([keys.ALL_SCHEDULERS], int(time.time()))
    if not entry_keys:
        return []
    lists = yield [cmd("lrange", k, 0, -1) for k in entry_keys]
    out = []
    for key, values in zip(entry_keys, lists, strict=False):
        for raw in values:
            try:
                e = _proto.decode(_proto.SchedulerEntry, raw)
            except DecodeError as exc:
                log.warning("skipping an entry of %s: not a SchedulerEntry (%s)", c.text(key), exc)
                continue
            out.append(SchedulerEntry(e.id, e.spec, e.task_type, e.task_payload, list(e.enqueue_options),
                                      _ts(e.next_enqueue_time), _ts(e.prev_enqueue_time)))
    out.sort(key=lambda e: (e.spec, e.id))
    return out


def scheduler_events(entry_id: str, page: int = 1,
                     page_size: int = c.DEFAULT_PAGE_SIZE) -> Steps[list[SchedulerEnqueueEvent]]:
    """Enqueue events of one periodic entry, newest first (Go: ZREVRANGE)."""
    c.name("entry ID", entry_id)
    page, page_size = c.page_args(page, page_size)
    start = page_size * (page - 1)
    key = keys.scheduler_history_key(entry_id)
    (pairs,) = yield [cmd("zrevrange", key, start, start + page_size - 1, withscores=True)]
    out = []
    for raw, _score in pairs:
        try:
            ev = _proto.decode(_proto.SchedulerEnqueueEvent, raw)
        except DecodeError as exc:
            log.warning("skipping an event of %s: not a SchedulerEnqueueEvent (%s)", key, exc)
            continue
        out.append(SchedulerEnqueueEvent(ev.task_id, _ts(ev.enqueue_time)))
    return out


@queue_steps
def cluster_key_slot(queue: str) -> Steps[int]:
    """The Redis Cluster hash slot of the queue's keys (= ``CLUSTER KEYSLOT asynq:{q}:pending``)."""
    c.name("queue", queue)
    yield from check_queue(queue)
    return key_slot(keys.pending_key(queue).encode("utf-8"))


def check(queue: str | None = None) -> Steps[int]:
    """Run a real script (not only PING); return Redis time, or raise QueueNotFoundError."""
    if queue is not None:
        c.name("queue", queue)
    (reply,) = yield [script(CHECK, [keys.ALL_QUEUES], [queue or ""])]
    if not int(reply[1]):
        raise QueueNotFoundError(queue or "")
    return int(reply[0])


def redis_info() -> Steps[dict[str, Any]]:
    """The parsed ``INFO`` reply (redis-py's dict of sections' fields)."""
    (info,) = yield [cmd("info")]
    info_: dict[str, Any] = info
    return info_

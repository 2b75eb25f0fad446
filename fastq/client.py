"""Client and AsyncClient: enqueue tasks exactly as Go Asynq's client writes them.

The two classes share everything but I/O: ``plan_enqueue`` validates options,
``_single_call`` / ``_enqueue_many_steps`` / ``_windowed_batch_steps`` turn plans into script calls, and
``_single_result`` / ``_Outcome`` turn replies into ``TaskInfo`` or errors.
"""
from __future__ import annotations

import contextlib
import gc
import time
from datetime import datetime, timezone
from typing import Any, Generator, Iterable, Iterator, Optional, Sequence

from redis.exceptions import OutOfMemoryError

from fastq import keys
from fastq._codec import encode_message
from fastq._rdb import scripts as _scripts
from fastq._rdb.calls import IO, Call, arun, checked, cmd, run, steps_io
from fastq._rdb.calls import script as _call
from fastq._rdb.window import Resent, window, window_pool
from fastq.errors import BrokerFullError, DuplicateTaskError, PayloadTooLargeError, TaskIDConflictError
from fastq.options import ENQUEUE, GROUP, SCHEDULE, EnqueuePlan, plan_enqueue, plan_many
from fastq.redis.facade import async_client, sync_client
from fastq.task import Task, TaskInfo, TaskState

__all__ = ["Client", "AsyncClient"]

DEFAULT_CHUNK_SIZE = 1000
# Like SQS's limit: large payloads block Redis's single thread while they move; store big
# data elsewhere and enqueue a reference. Go Asynq has no limit; raise it if you must.
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024


@contextlib.contextmanager
def _broker_errors() -> Iterator[None]:
    try:
        yield
    except OutOfMemoryError as exc:
        raise BrokerFullError(f"Redis is out of memory (maxmemory reached with noeviction); nothing was "
                              f"enqueued: {exc}") from exc


@contextlib.contextmanager
def _gc_paused(pause: bool) -> Iterator[None]:
    """Pause the cyclic GC while a large ``enqueue_many`` builds three small objects per task
    (message, plan, TaskInfo). They form no cycles, but their number sets off full collections
    that cost more than the rest of the client's work (measured: 3.9 -> 1.5 us per task)."""
    if not pause or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _check_size(plans: Sequence[EnqueuePlan], limit: int) -> None:
    for plan in plans:
        size = len(plan.msg.payload)
        if limit and size > limit:
            raise PayloadTooLargeError(size, limit)

_STATE = {ENQUEUE: TaskState.PENDING, SCHEDULE: TaskState.SCHEDULED, GROUP: TaskState.AGGREGATING}


def _single_call(plan: EnqueuePlan, now: float) -> Call:
    msg = plan.msg
    q, tid = msg.queue, msg.id
    data = encode_message(msg)
    tkey = keys.task_key(q, tid)
    if plan.kind == ENQUEUE:
        if plan.unique_ttl:
            return _call(_scripts.ENQUEUE_UNIQUE, [msg.unique_key, tkey, keys.pending_key(q)],
                         [tid, plan.unique_ttl, data, int(now * 1e9)])
        return _call(_scripts.ENQUEUE, [tkey, keys.pending_key(q)], [data, tid, int(now * 1e9)])
    if plan.kind == SCHEDULE:
        if plan.unique_ttl:
            return _call(_scripts.SCHEDULE_UNIQUE, [msg.unique_key, tkey, keys.scheduled_key(q)],
                         [tid, plan.unique_ttl, _score(plan), data])
        return _call(_scripts.SCHEDULE, [tkey, keys.scheduled_key(q)], [data, _score(plan), tid])
    group_keys = [tkey, keys.group_key(q, msg.group_key), keys.groups_key(q)]
    args = [data, tid, int(now), msg.group_key]
    if plan.unique_ttl:
        group_keys.append(msg.unique_key)
        args.append(plan.unique_ttl)
    return _call(_scripts.ADD_TO_GROUP, group_keys, args)


def _score(plan: EnqueuePlan) -> Any:
    """The scheduled-zset score: absolute for process_at, "+delay" (added to Redis time by the
    script) for process_in, so a skewed client clock does not move the run time."""
    return plan.process_at if plan.process_in is None else f"+{plan.process_in!r}"


def _batch_call(plans: Sequence[EnqueuePlan], now: float) -> Call:
    """One script call for a chunk of plain (non-unique, non-group) tasks of one queue."""
    first = plans[0]
    q = first.msg.queue
    task_keys = []
    args: list[Any] = [int(now * 1e9) if first.kind == ENQUEUE else _score(first)]
    for plan in plans:
        msg = plan.msg
        task_keys.append(keys.task_key(q, msg.id))
        args.append(msg.id)
        args.append(encode_message(msg))
    if first.kind == ENQUEUE:
        return _call(_scripts.ENQUEUE_BATCH, [keys.pending_key(q), *task_keys], args)
    return _call(_scripts.SCHEDULE_BATCH, [keys.scheduled_key(q), *task_keys], args)


def _next_at(plan: EnqueuePlan) -> datetime | None:
    if plan.kind == SCHEDULE:
        return datetime.fromtimestamp(plan.process_at, timezone.utc)
    if plan.kind == ENQUEUE:
        return datetime.now(timezone.utc)
    return None


def _info(plan: EnqueuePlan, next_at: Any = False) -> TaskInfo:
    return TaskInfo.from_message(plan.msg, _STATE[plan.kind], _next_at(plan) if next_at is False else next_at)


def _single_result(plan: EnqueuePlan, reply: int) -> TaskInfo:
    if reply == 1:
        return _info(plan)
    if reply == -1:
        raise DuplicateTaskError(plan.msg.unique_key)
    raise TaskIDConflictError([plan.msg.id], plan.msg.queue)


def _plan_many(tasks: Iterable[Task], options: dict[str, Any]) -> list[EnqueuePlan]:
    tasks = list(tasks)
    if options.get("task_id") is not None and len(tasks) > 1:
        raise TypeError("option 'task_id' cannot be shared by several tasks in enqueue_many()")
    return plan_many(tasks, options)


def _chunks(plans: list[EnqueuePlan], size: int) -> Iterable[list[EnqueuePlan]]:
    for i in range(0, len(plans), size):
        yield plans[i:i + size]


def _batched(plan: EnqueuePlan) -> bool:
    return plan.kind in (ENQUEUE, SCHEDULE) and not plan.unique_ttl


def _windowed(plans: list[EnqueuePlan], chunk_size: int) -> bool:
    """Several chunks of plain tasks: worth overlapping (``_window``). Their IDs are fastq's own,
    as ``_plan_many`` refuses one ``task_id`` for several tasks."""
    return len(plans) > chunk_size and _batched(plans[0])


def _enqueue_many_steps(plans: list[EnqueuePlan], chunk_size: int) -> Generator[list[Call], list[Any], list[TaskInfo]]:
    """The I/O-free part of enqueue_many: yields the calls of one round trip, receives their replies."""
    outcome = _Outcome()
    for chunk in _chunks(plans, chunk_size):
        now = time.time()
        if _batched(chunk[0]):
            (skipped,) = yield [_batch_call(chunk, now)]
            outcome.add_batch(chunk, skipped)
        else:
            replies = yield [_single_call(p, now) for p in chunk]
            for plan, reply in zip(chunk, replies, strict=False):
                outcome.add_single(plan, reply)
    return outcome.result()


def _windowed_batch_steps(plans: list[EnqueuePlan], chunk_size: int) -> Generator[Optional[Call], Any, list[TaskInfo]]:
    """``_enqueue_many_steps`` for plain tasks with generated IDs, in ``fastq._rdb.window``'s protocol:
    the reply received is that of the call yielded before the last, so this builds the next
    call (and the last chunk's TaskInfos) while Redis runs the one in flight."""
    outcome = _Outcome()
    sent: Optional[list[EnqueuePlan]] = None
    for chunk in [*_chunks(plans, chunk_size), None]:
        reply = yield (_batch_call(chunk, time.time()) if chunk is not None else None)
        if sent is not None:
            # a call sent again after a lost connection may find its own first write: its IDs
            # are fresh random ones, so "already exists" means "written"
            outcome.add_batch(sent, () if isinstance(reply, Resent) else reply)
        sent = chunk
    return outcome.result()


class _Outcome:
    """Collects per-task results of enqueue_many and raises one error at the end."""

    def __init__(self) -> None:
        self.infos: list[TaskInfo] = []
        self.conflicts: list[str] = []
        self.duplicates: list[str] = []
        self.queue = ""

    def add_batch(self, plans: Sequence[EnqueuePlan], skipped: Sequence[int]) -> None:
        skip = {int(i) - 1 for i in skipped}
        next_at = _next_at(plans[0])  # the same for the whole chunk
        for i, plan in enumerate(plans):
            if i in skip:
                self.conflicts.append(plan.msg.id)
                self.queue = plan.msg.queue
            else:
                self.infos.append(_info(plan, next_at))

    def add_single(self, plan: EnqueuePlan, reply: int) -> None:
        try:
            self.infos.append(_single_result(plan, reply))
        except DuplicateTaskError:
            self.duplicates.append(plan.msg.unique_key)
        except TaskIDConflictError:
            self.conflicts.append(plan.msg.id)
            self.queue = plan.msg.queue

    def result(self) -> list[TaskInfo]:
        if self.conflicts:
            raise TaskIDConflictError(self.conflicts, self.queue, self.infos)
        if self.duplicates:
            err = DuplicateTaskError(self.duplicates[0])
            err.enqueued = self.infos  # type: ignore[attr-defined]
            err.unique_keys = self.duplicates  # type: ignore[attr-defined]
            raise err
        return self.infos


class _ClientBase:
    """What Client and AsyncClient share: options, and each operation as one I/O generator
    (``fastq._rdb.calls``) that the sync or the asyncio driver runs."""

    def __init__(self, redis: Any, chunk_size: int, max_payload_bytes: int) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        if max_payload_bytes < 0:
            raise ValueError("max_payload_bytes must be >= 0 (0 = no limit)")
        self._max_payload = max_payload_bytes
        self._redis = redis
        self._chunk_size = chunk_size
        self._published: set[str] = set()

    @property
    def redis(self) -> Any:
        return self._redis

    def _publish(self, queue: str) -> IO[None]:
        # Go's client adds the queue to asynq:queues once per process per queue.
        if queue not in self._published:
            yield from checked([cmd("sadd", keys.ALL_QUEUES, queue)])
            self._published.add(queue)

    def _enqueue(self, task: Task, options: dict[str, Any]) -> IO[TaskInfo]:
        plan = plan_enqueue(task, options)
        _check_size([plan], self._max_payload)
        call = _single_call(plan, time.time())  # encodes: whatever fails, fails before any write
        yield from self._publish(plan.msg.queue)
        (reply,) = yield from checked([call])
        return _single_result(plan, reply)

    def _enqueue_many(self, tasks: list[Task], options: dict[str, Any]) -> IO[list[TaskInfo]]:
        plans = _plan_many(tasks, options)
        if not plans:
            return []
        _check_size(plans, self._max_payload)
        yield from self._publish(plans[0].msg.queue)
        pool = window_pool(self._redis)
        if pool is not None and _windowed(plans, self._chunk_size):
            windowed: list[TaskInfo] = yield from window(pool, _windowed_batch_steps(plans, self._chunk_size))
            return windowed
        return (yield from steps_io(_enqueue_many_steps(plans, self._chunk_size)))


class Client(_ClientBase):
    """Enqueue tasks from synchronous code.

    ``Client(url_or_redis=None)`` takes a Redis URL (default ``$FASTQ_REDIS_URL``
    or ``redis://127.0.0.1:6379/0``) or an existing ``redis.Redis``.
    """

    def __init__(self, redis: Any = None, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        super().__init__(sync_client(redis), chunk_size, max_payload_bytes)

    def enqueue(self, task: Task, **options: Any) -> TaskInfo:
        """Write one task; return its TaskInfo (``.id``, ``.queue``, ``.state``)."""
        with _broker_errors():
            return run(self._redis, self._enqueue(task, options))

    def enqueue_many(self, tasks: Iterable[Task], **options: Any) -> list[TaskInfo]:
        """Write many tasks with the same options, one round trip per chunk.

        Each chunk is one atomic script call. Tasks whose ID exists are skipped
        and reported at the end by ``TaskIDConflictError`` (its ``.enqueued``
        lists what was written).

        Above one chunk, the cyclic garbage collector is paused for the call (``_gc_paused``).
        """
        tasks = list(tasks)
        with _gc_paused(len(tasks) > self._chunk_size), _broker_errors():
            return run(self._redis, self._enqueue_many(tasks, options))

    def ping(self) -> bool:
        """``True`` when Redis answers ``PING``; raises the connection error otherwise."""
        return bool(self._redis.ping())

    def close(self) -> None:
        """Close the client's connection pool (also done by ``with Client() as client:``)."""
        self._redis.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_ClientBase):
    """Enqueue tasks from asyncio code; same methods as ``Client``, awaited."""

    def __init__(self, redis: Any = None, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        super().__init__(async_client(redis), chunk_size, max_payload_bytes)

    async def enqueue(self, task: Task, **options: Any) -> TaskInfo:
        """Write one task; return its TaskInfo (``.id``, ``.queue``, ``.state``). See ``Client.enqueue``."""
        with _broker_errors():
            return await arun(self._redis, self._enqueue(task, options))

    async def enqueue_many(self, tasks: Iterable[Task], **options: Any) -> list[TaskInfo]:
        """Write many tasks with the same options, one round trip per chunk. See ``Client.enqueue_many``."""
        tasks = list(tasks)
        with _gc_paused(len(tasks) > self._chunk_size), _broker_errors():
            return await arun(self._redis, self._enqueue_many(tasks, options))

    async def ping(self) -> bool:
        """``True`` when Redis answers ``PING``; raises the connection error otherwise."""
        return bool(await self._redis.ping())

    async def close(self) -> None:
        """Close the client's connection pool (also done by ``async with AsyncClient() as client:``)."""
        await self._redis.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

"""Test helpers for code that uses fastq.

Unit tests, no Redis:

* ``run_handler(handler, task, ...)`` runs a handler (``def``, ``async def``
  or a ``ServeMux``) in-process with the task context a worker would give it,
  and returns its result or raises its exception.
* ``await arun_handler(...)`` does the same inside a running event loop.
* ``with task_context(...)`` sets the context for code that calls
  ``fastq.get_task_id()`` and friends deep inside.

Integration tests, real Redis:

* ``WorkerHarness(handler, redis_url).drain()`` runs a fastq ``Worker``
  in-process until the queues have nothing left to do now and returns a
  ``DrainResult``. The pytest plugin's ``fastq_worker`` fixture builds these.
"""
from __future__ import annotations

import asyncio
import builtins
import contextlib
import contextvars
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

from fastq import keys
from fastq.context import TaskContext, reset_current, set_current
from fastq.errors import FastqError, RevokeTask, TaskCanceledError
from fastq.mux import ServeMux, is_async_handler
from fastq.options import DEFAULT_MAX_RETRY, DEFAULT_QUEUE, DEFAULT_TIMEOUT
from fastq.task import Task

__all__ = [
    "run_handler",
    "arun_handler",
    "task_context",
    "WorkerHarness",
    "DrainResult",
    "TaskRun",
    "DrainTimeoutError",
]

Deadline = Union[datetime, timedelta, float, int, None]

DEADLINE_EXCEEDED = "context deadline exceeded"  # the error text the worker stores


# ------------------------------------------------------------------ the task context

def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")
    return value


def _non_blank(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{name} must not be empty or blank")
    return value


def _headers(value: Optional[Mapping[str, str]]) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"headers must be a mapping of str to str, not {type(value).__name__}")
    for key, val in value.items():
        if not isinstance(key, str) or not isinstance(val, str):
            raise TypeError(f"headers must map str to str; got {key!r}: {val!r}")
    return dict(value)


def _deadline(value: Deadline, now: float) -> float:
    """A ``time.time()`` value. None = the worker's default (now + 30 min)."""
    if value is None:
        return now + DEFAULT_TIMEOUT
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, timedelta):
        return now + value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 1e9:  # before 2001: surely a duration given where a time is expected
            raise ValueError(f"deadline={value!r} is a time.time() value before 2001; for a duration "
                             f"pass timedelta(seconds={value!r})")
        return float(value)
    raise TypeError(f"deadline must be a datetime, timedelta or time.time() value, not {type(value).__name__}")


def _make_context(task_id: Optional[str], type: str, retry_count: int, max_retry: int, queue: str,
                  headers: dict[str, str], deadline: Deadline) -> TaskContext:
    task_id = str(uuid.uuid4()) if task_id is None else _non_blank("task_id", task_id)
    return TaskContext(
        task_id,
        _positive_int("retry_count", retry_count),
        _positive_int("max_retry", max_retry),
        _non_blank("queue", queue),
        type,
        _deadline(deadline, time.time()),
        headers,
    )


@contextlib.contextmanager
def task_context(task_id: Optional[str] = None, *, type: str = "", retry_count: int = 0,
                 max_retry: int = DEFAULT_MAX_RETRY, queue: str = DEFAULT_QUEUE,
                 headers: Optional[Mapping[str, str]] = None, deadline: Deadline = None) -> Iterator[TaskContext]:
    """Run the ``with`` block as if inside a handler of the task described.

    ``fastq.get_task_id()`` and the other getters answer inside the block, and
    a task enqueued there records this task as its parent. The previous context
    (usually none) is restored on exit, also when the block raises. A random
    UUID is used when ``task_id`` is not given; ``deadline`` is a ``datetime``,
    a ``timedelta`` from now, or a ``time.time()`` value (default now + 30 min).
    """
    if not isinstance(type, str):
        raise TypeError(f"type must be a str, not {_tname(type)}")
    ctx = _make_context(task_id, type, retry_count, max_retry, queue, _headers(headers), deadline)
    token = set_current(ctx)
    try:
        yield ctx
    finally:
        reset_current(token)


def _tname(value: Any) -> str:
    return builtins.type(value).__name__


# ------------------------------------------------------------------ running one handler

def _resolve(handler: Any, task: Any) -> tuple[Any, bool]:
    if not isinstance(task, Task):
        raise TypeError(f"task must be a fastq.Task, not {_tname(task)}")
    if isinstance(handler, ServeMux):
        return handler.resolve(task.type)
    if not callable(handler):
        raise TypeError(f"handler must be a ServeMux or a callable, not {_tname(handler)}")
    return handler, is_async_handler(handler)


def _prepare(handler: Any, task: Task, task_id: Optional[str], retry_count: int, max_retry: int, queue: str,
             headers: Optional[Mapping[str, str]], deadline: Deadline) -> tuple[Any, bool, Task, TaskContext]:
    fn, is_async = _resolve(handler, task)
    merged = {**task.headers, **_headers(headers)}
    ctx = _make_context(task_id, task.type, retry_count, max_retry, queue, merged, deadline)
    # The handler gets a copy of the task whose headers are the context's, as from a worker.
    return fn, is_async, Task._trusted(task.type, task.payload, merged), ctx


def _mark_cancelled(ctx: TaskContext) -> None:
    ctx.cancelled = True  # what fastq.is_cancelled() reads


def _call_sync(fn: Any, task: Task, ctx: TaskContext) -> Any:
    set_current(ctx)
    # At the deadline the worker marks the task cancelled (a sync handler polls is_cancelled()).
    timer = threading.Timer(max(0.0, ctx.deadline - time.time()), _mark_cancelled, (ctx,))
    timer.daemon = True
    timer.start()
    try:
        result = fn(task)
    except BaseException as exc:
        if time.time() > ctx.deadline:  # the worker failed the task at its deadline already
            raise TaskCanceledError(DEADLINE_EXCEEDED) from exc
        raise
    finally:
        timer.cancel()
    if asyncio.iscoroutine(result):  # the worker refuses this too
        result.close()
        raise TypeError("handler returned a coroutine but was not detected as async; "
                        "declare it with 'async def' (or keep middleware async)")
    if time.time() > ctx.deadline:
        raise TaskCanceledError(DEADLINE_EXCEEDED)
    return result


async def _call_async(fn: Any, task: Task, ctx: TaskContext) -> Any:
    async def call() -> Any:
        set_current(ctx)  # this asyncio task has its own copy of the context
        return await fn(task)

    inner = asyncio.ensure_future(call())
    remaining = ctx.deadline - time.time()
    if remaining > 0:
        await asyncio.wait({inner}, timeout=remaining)
    if not inner.done():  # the worker cancels an async handler at its deadline
        _mark_cancelled(ctx)
        inner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await inner
        raise TaskCanceledError(DEADLINE_EXCEEDED)
    return inner.result()


def _running_loop() -> Optional[asyncio.AbstractEventLoop]:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def run_handler(handler: Any, task: Task, *, task_id: Optional[str] = None, retry_count: int = 0,
                max_retry: int = DEFAULT_MAX_RETRY, queue: str = DEFAULT_QUEUE,
                headers: Optional[Mapping[str, str]] = None, deadline: Deadline = None) -> Any:
    """Run ``handler`` on ``task`` in-process, as a worker would, without Redis.

    ``handler`` is a ``def`` or ``async def`` function or a ``ServeMux`` (its
    routing and middleware apply). Inside, ``fastq.get_task_id()`` returns
    ``task_id`` (a random UUID by default), ``get_retry_count()`` returns
    ``retry_count`` and so on; ``headers`` are added to the task's own. Returns
    what the handler returns and raises what it raises (``SkipRetry``,
    ``RevokeTask``, ...). A handler still running at ``deadline`` ends with
    ``fastq.errors.TaskCanceledError`` as the worker would fail it (an async one
    is cancelled). Async handlers run on a new event loop; inside a running loop
    use ``await arun_handler(...)``.
    """
    fn, is_async, task, ctx = _prepare(handler, task, task_id, retry_count, max_retry, queue, headers, deadline)
    if not is_async:
        return contextvars.copy_context().run(_call_sync, fn, task, ctx)
    if _running_loop() is not None:
        raise RuntimeError("run_handler() cannot run an async handler inside a running event loop; "
                           "use 'await fastq.testing.arun_handler(...)'")
    return asyncio.run(_call_async(fn, task, ctx))


async def arun_handler(handler: Any, task: Task, *, task_id: Optional[str] = None, retry_count: int = 0,
                       max_retry: int = DEFAULT_MAX_RETRY, queue: str = DEFAULT_QUEUE,
                       headers: Optional[Mapping[str, str]] = None, deadline: Deadline = None) -> Any:
    """``run_handler`` for async tests: async handlers run on the current loop,
    sync ones in a thread (as in a worker)."""
    fn, is_async, task, ctx = _prepare(handler, task, task_id, retry_count, max_retry, queue, headers, deadline)
    if is_async:
        return await _call_async(fn, task, ctx)
    cctx = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(None, cctx.run, _call_sync, fn, task, ctx)


# ------------------------------------------------------------------ draining queues with a real worker

@dataclass
class TaskRun:
    """One call of the handler during a drain."""

    id: str
    type: str
    queue: str
    payload: bytes
    headers: dict[str, str]
    retry_count: int
    result: Any = None
    error: Optional[BaseException] = None


@dataclass
class DrainResult:
    """What a drain did, read back from the handler calls and from Redis afterwards.

    ``succeeded``, ``retried``, ``archived`` and ``revoked`` hold task IDs by
    the state the task ended in (``retried``: waiting in ``retry`` for a later
    run; ``archived`` also lists messages the worker could not decode).
    ``stored_errors`` maps retried and archived IDs to the error text stored
    in Redis; ``runs`` lists every handler call in order.
    """

    runs: list[TaskRun] = field(default_factory=list)
    succeeded: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    archived: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    stored_errors: dict[str, str] = field(default_factory=dict)

    @property
    def processed(self) -> int:
        """Handler calls, whatever their outcome."""
        return len(self.runs)

    @property
    def errors(self) -> dict[str, BaseException]:
        """Task ID -> the exception its last run raised (``RevokeTask`` excluded)."""
        last: dict[str, TaskRun] = {}
        for run in self.runs:
            last[run.id] = run
        return {tid: run.error for tid, run in last.items()
                if run.error is not None and not isinstance(run.error, RevokeTask)}

    @property
    def failed(self) -> list[str]:
        """IDs whose last run raised an exception (retried or archived)."""
        return list(self.errors)


class DrainTimeoutError(FastqError, TimeoutError):
    """The queues still had work when the drain's timeout ran out; ``result`` has what was done."""

    def __init__(self, timeout: float, busy: dict[str, int], result: DrainResult) -> None:
        self.busy = busy
        self.result = result
        shown = ", ".join(f"{k}={v}" for k, v in busy.items() if v)
        super().__init__(f"queues not drained after {timeout:g}s: {shown or 'tasks in flight'} "
                         f"({result.processed} handler call(s) done)")


class _Recorder(ServeMux):
    """Routes like the wrapped handler and records every call (a ServeMux, so the
    worker asks it per task type whether the handler is async)."""

    def __init__(self, handler: Any) -> None:
        super().__init__()
        self.inner = handler
        self.runs: list[TaskRun] = []
        self._wrapped: dict[str, tuple[Any, bool]] = {}

    def resolve(self, task_type: str) -> tuple[Any, bool]:
        hit = self._wrapped.get(task_type)
        if hit is None:
            if isinstance(self.inner, ServeMux):
                fn, is_async = self.inner.resolve(task_type)
            else:
                fn, is_async = self.inner, is_async_handler(self.inner)
            hit = (self._wrap(fn, is_async), is_async)
            self._wrapped[task_type] = hit
        return hit

    def _start(self, task: Task) -> TaskRun:
        from fastq.context import current_task

        ctx = current_task()
        assert ctx is not None  # called inside the task's context
        run = TaskRun(ctx.task_id, task.type, ctx.queue, task.payload, dict(task.headers), ctx.retry_count)
        self.runs.append(run)
        return run

    def _wrap(self, fn: Any, is_async: bool) -> Any:
        if is_async:
            async def recorded_async(task: Task) -> Any:
                run = self._start(task)
                try:
                    run.result = await fn(task)
                except BaseException as exc:
                    run.error = exc
                    raise
                return run.result
            return recorded_async

        def recorded(task: Task) -> Any:
            run = self._start(task)
            try:
                run.result = fn(task)
            except BaseException as exc:
                run.error = exc
                raise
            return run.result
        return recorded


HARNESS_DEFAULTS = {
    "heartbeat_interval": 0.5,
    "forward_interval": 0.05,
    "recover_interval": 0.2,
    "poll_interval": 0.01,
    "shutdown_timeout": 1.0,
}


class WorkerHarness:
    """Runs a fastq ``Worker`` in-process against a real Redis, one drain at a time.

    ``config`` are ``WorkerConfig`` fields (checked now); timings default to
    fast test values (forwarding every 50 ms, polling every 10 ms).
    """

    def __init__(self, handler: Any, redis_url: str, **config: Any) -> None:
        from fastq.server.config import WorkerConfig

        if not isinstance(handler, ServeMux) and not callable(handler):
            raise TypeError(f"handler must be a ServeMux or a callable, not {_tname(handler)}")
        self.handler = handler
        self.config = {**HARNESS_DEFAULTS, **config, "redis_url": redis_url}
        self._queues = WorkerConfig(**self.config).queues  # validates every field

    def _queue_names(self, queue: Union[str, Sequence[str], None]) -> list[str]:
        if queue is None:
            return list(self._queues)
        if isinstance(queue, str):
            return [_non_blank("queue", queue)]
        names = [_non_blank("queue", q) for q in queue]
        if not names:
            raise ValueError("queue: give at least one queue name")
        return names

    def drain(self, queue: Union[str, Sequence[str], None] = None, timeout: float = 10.0) -> DrainResult:
        """Run a worker until ``queue`` (default: the configured queues) has no
        pending, active, or due scheduled/retry task; return what happened.

        Tasks the handlers enqueue into these queues are run too. Raises
        ``DrainTimeoutError`` after ``timeout`` seconds (running tasks are then
        put back to pending). Inside a running event loop use ``await adrain()``.
        """
        if _running_loop() is not None:
            raise RuntimeError("drain() cannot run inside a running event loop; use 'await harness.adrain()'")
        from fastq.server.worker import new_event_loop

        loop = new_event_loop()
        try:
            return loop.run_until_complete(self.adrain(queue, timeout))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def adrain(self, queue: Union[str, Sequence[str], None] = None, timeout: float = 10.0) -> DrainResult:
        """``drain`` for async tests (runs the worker on the current loop)."""
        from fastq._redis import async_client
        from fastq.server.config import WorkerConfig
        from fastq.server.worker import Worker

        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        queues = self._queue_names(queue)
        recorder = _Recorder(self.handler)
        worker = Worker(recorder, WorkerConfig(**{**self.config, "queues": queues}))
        redis = async_client(self.config["redis_url"])
        try:
            archived_before = await _archived_ids(redis, queues)
            runner = asyncio.ensure_future(worker.run())
            busy: dict[str, int] = {}
            try:
                await _wait_started(worker, runner)
                busy = await _wait_idle(redis, queues, timeout, runner)
            finally:
                if not runner.done():
                    worker.stop(immediate=bool(busy))
                await runner  # outcomes are written before run() returns; worker errors surface here
            result = await _collect(redis, queues, recorder.runs, archived_before)
        finally:
            await redis.aclose()
        if busy:
            raise DrainTimeoutError(timeout, busy, result)
        return result


async def _wait_started(worker: Any, runner: asyncio.Future[Any]) -> None:
    while worker.started is None or not worker.started.is_set():
        if runner.done():
            runner.result()  # raises the worker's error
            raise RuntimeError("the worker stopped before it started")
        await asyncio.sleep(0.005)


async def _busy(redis: Any, queues: list[str]) -> dict[str, int]:
    now = time.time()
    pipe = redis.pipeline(transaction=False)
    for q in queues:
        pipe.llen(keys.pending_key(q))
        pipe.llen(keys.active_key(q))
        pipe.zcount(keys.scheduled_key(q), "-inf", now)
        pipe.zcount(keys.retry_key(q), "-inf", now)
    counts = await pipe.execute()
    out: dict[str, int] = {}
    for i, q in enumerate(queues):
        pending, active, scheduled, retry = counts[4 * i:4 * i + 4]
        for name, n in (("pending", pending), ("active", active), ("scheduled_due", scheduled), ("retry_due", retry)):
            if n:
                out[f"{q}.{name}"] = n
    return out


async def _wait_idle(redis: Any, queues: list[str], timeout: float, runner: asyncio.Future[Any]) -> dict[str, int]:
    """Wait until nothing is left to do now; return {} then, or what is still busy at the timeout.

    A task moves pending -> active atomically, and leaves ``active`` only when
    its outcome is written; a task enqueued by a handler is written before its
    parent leaves ``active``. So empty lists (and nothing due) mean done.
    """
    end = time.monotonic() + timeout
    while True:
        if runner.done():
            runner.result()
            raise RuntimeError("the worker stopped while draining")
        busy = await _busy(redis, queues)
        if not busy or time.monotonic() >= end:
            return busy
        await asyncio.sleep(0.01)


async def _archived_ids(redis: Any, queues: list[str]) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for q in queues:
        archived = await redis.zrange(keys.archived_key(q), 0, -1)
        out.update((q, tid.decode("utf-8", "surrogateescape")) for tid in archived)
    return out


async def _collect(redis: Any, queues: list[str], runs: list[TaskRun],
                   archived_before: set[tuple[str, str]]) -> DrainResult:
    from fastq._codec import decode_message

    result = DrainResult(runs=list(runs))
    last: dict[tuple[str, str], TaskRun] = {}
    for run in runs:
        last.pop((run.queue, run.id), None)
        last[(run.queue, run.id)] = run  # ordered by last run
    new_archived = (await _archived_ids(redis, queues)) - archived_before
    failed: list[tuple[str, str]] = []
    for (q, tid), run in last.items():
        state = await redis.hget(keys.task_key(q, tid), "state")
        if state == b"retry":
            result.retried.append(tid)
            failed.append((q, tid))
        elif state == b"archived":
            result.archived.append(tid)
            failed.append((q, tid))
        elif state in (None, b"completed"):
            if run.error is None:
                result.succeeded.append(tid)
            elif isinstance(run.error, RevokeTask):
                result.revoked.append(tid)
    for q, tid in sorted(new_archived - set(last)):  # archived without a handler call (undecodable)
        result.archived.append(tid)
        failed.append((q, tid))
    for q, tid in failed:
        raw = await redis.hget(keys.task_key(q, tid), "msg")
        if raw is not None:
            result.stored_errors[tid] = decode_message(raw).error_msg
    return result

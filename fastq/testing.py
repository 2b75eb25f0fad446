"""Test helpers for code that uses fastq.

Unit tests, no Redis:

* ``run_handler(handler, task, ...)`` runs a handler (``def``, ``async def``
  or a ``ServeMux``) in-process with the task context a worker would give it,
  and returns its result or raises its exception.
* ``await arun_handler(...)`` does the same inside a running event loop.
* ``with task_context(...)`` sets the context for code that calls
  ``fastq.get_task_id()`` and friends deep inside.
* ``MemoryResults`` keeps what ``fastq.result_writer()`` writes in those runs.
* ``with app.eager():`` (a ``fastq.App``) runs App tasks at ``enqueue()``, in-process.

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
import dataclasses
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterator, Mapping, Optional, Sequence, Union, cast

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
    "MemoryResults",
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

def _is_app(handler: Any) -> bool:
    """A ``fastq.App`` (told apart by what it offers, as this module does not import it)."""
    return hasattr(handler, "worker_parts") and isinstance(getattr(handler, "mux", None), ServeMux)


def _handler_of(handler: Any) -> Any:
    return handler.mux if _is_app(handler) else handler


class MemoryResults:
    """Where ``fastq.result_writer()`` writes inside ``run_handler`` (a worker writes to Redis).

    ``written`` maps each task ID to the last bytes written for it; pass one as
    ``run_handler(..., results=store)`` to read them afterwards (each call gets a fresh one
    otherwise). A sync handler's ``write()`` is served by a private event loop thread, started
    on first use and stopped by ``close()`` (``run_handler`` closes the stores it made).
    """

    def __init__(self) -> None:
        self.written: dict[str, bytes] = {}
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    async def write(self, queue: str, task_id: str, data: bytes) -> bool:
        self.written[task_id] = bytes(data)
        return True

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop a sync ``write()`` hands its write to (as the worker's loop in production)."""
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="fastq-memory-results", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve sync writes from ``loop`` (an async test's loop, running the handler's thread)."""
        with self._lock:
            if self._loop is None:
                self._loop = loop

    def close(self) -> None:
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()

    def __repr__(self) -> str:
        return f"MemoryResults({self.written!r})"


def _resolve(handler: Any, task: Any) -> tuple[Any, bool]:
    if not isinstance(task, Task):
        raise TypeError(f"task must be a fastq.Task, not {_tname(task)}")
    handler = _handler_of(handler)
    if isinstance(handler, ServeMux):
        return handler.resolve(task.type)
    if not callable(handler):
        raise TypeError(f"handler must be a ServeMux or a callable, not {_tname(handler)}")
    return handler, is_async_handler(handler)


def _prepare(handler: Any, task: Task, task_id: Optional[str], retry_count: int, max_retry: int, queue: str,
             headers: Optional[Mapping[str, str]], deadline: Deadline,
             results: Optional[MemoryResults]) -> tuple[Any, bool, Task, TaskContext]:
    fn, is_async = _resolve(handler, task)
    if results is not None and not isinstance(results, MemoryResults):
        raise TypeError(f"results must be a fastq.testing.MemoryResults, not {_tname(results)}")
    merged = {**task.headers, **_headers(headers)}
    ctx = _make_context(task_id, task.type, retry_count, max_retry, queue, merged, deadline)
    ctx.results = cast(Any, results)
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
                headers: Optional[Mapping[str, str]] = None, deadline: Deadline = None,
                results: Optional[MemoryResults] = None) -> Any:
    """Run ``handler`` on ``task`` in-process, as a worker would, without Redis.

    ``handler`` is a ``def`` or ``async def`` function, a ``ServeMux`` (its
    routing and middleware apply) or a ``fastq.App`` (its mux). Inside, ``fastq.get_task_id()`` returns
    ``task_id`` (a random UUID by default), ``get_retry_count()`` returns
    ``retry_count`` and so on; ``headers`` are added to the task's own. Returns
    what the handler returns and raises what it raises (``SkipRetry``,
    ``RevokeTask``, ...). A handler still running at ``deadline`` ends with
    ``fastq.errors.TaskCanceledError`` as the worker would fail it (an async one
    is cancelled). ``fastq.result_writer()`` writes to ``results`` (a ``MemoryResults``;
    a fresh one by default). Async handlers run on a new event loop; inside a running loop
    use ``await arun_handler(...)``.
    """
    own = results is None
    store = MemoryResults() if results is None else results
    fn, is_async, task, ctx = _prepare(handler, task, task_id, retry_count, max_retry, queue, headers, deadline,
                                       store)
    try:
        if not is_async:
            return contextvars.copy_context().run(_call_sync, fn, task, ctx)
        if _running_loop() is not None:
            raise RuntimeError("run_handler() cannot run an async handler inside a running event loop; "
                               "use 'await fastq.testing.arun_handler(...)'")
        return asyncio.run(_call_async(fn, task, ctx))
    finally:
        if own:
            store.close()


async def arun_handler(handler: Any, task: Task, *, task_id: Optional[str] = None, retry_count: int = 0,
                       max_retry: int = DEFAULT_MAX_RETRY, queue: str = DEFAULT_QUEUE,
                       headers: Optional[Mapping[str, str]] = None, deadline: Deadline = None,
                       results: Optional[MemoryResults] = None) -> Any:
    """``run_handler`` for async tests: async handlers run on the current loop,
    sync ones in a thread (as in a worker)."""
    store = MemoryResults() if results is None else results
    store._bind(asyncio.get_running_loop())
    fn, is_async, task, ctx = _prepare(handler, task, task_id, retry_count, max_retry, queue, headers, deadline,
                                       store)
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
    # Seconds the worker's retry_delay asked for before the next run, when this run failed and
    # the task went to retry (the delay used is 0 under run_retries=True).
    retry_delay: Optional[float] = None


@dataclass
class DrainResult:
    """What a drain did, read back from the handler calls and from Redis afterwards.

    Task IDs by the state the task ended in: ``succeeded`` (completed or deleted after
    success), ``awaiting_retry`` (failed, now in the ``retry`` state waiting for a run the
    drain did not wait for), ``archived`` (failed for good; also messages the worker could
    not decode) and ``revoked`` (``RevokeTask``). ``stored_errors`` maps awaiting-retry and
    archived IDs to the error text stored in Redis; ``runs`` lists every handler call in
    order, ``handler_calls`` counts them, ``exceptions`` maps each ID to the exception of its
    last run. The older names ``retried``, ``processed`` and ``errors`` stay as aliases.
    """

    runs: list[TaskRun] = field(default_factory=list)
    succeeded: list[str] = field(default_factory=list)
    awaiting_retry: list[str] = field(default_factory=list)
    archived: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    stored_errors: dict[str, str] = field(default_factory=dict)

    @property
    def retried(self) -> list[str]:
        """Alias of ``awaiting_retry`` (IDs left in the ``retry`` state, not tasks retried and then done)."""
        return self.awaiting_retry

    @property
    def handler_calls(self) -> int:
        """Handler calls, whatever their outcome."""
        return len(self.runs)

    @property
    def processed(self) -> int:
        """Alias of ``handler_calls``."""
        return len(self.runs)

    @property
    def exceptions(self) -> dict[str, BaseException]:
        """Task ID -> the exception its last run raised (``RevokeTask`` excluded)."""
        last: dict[str, TaskRun] = {}
        for run in self.runs:
            last[run.id] = run
        return {tid: run.error for tid, run in last.items()
                if run.error is not None and not isinstance(run.error, RevokeTask)}

    @property
    def errors(self) -> dict[str, BaseException]:
        """Alias of ``exceptions``."""
        return self.exceptions

    @property
    def failed(self) -> list[str]:
        """IDs whose last run raised an exception (awaiting retry or archived)."""
        return list(self.exceptions)


class DrainTimeoutError(FastqError, TimeoutError):
    """The queues still had work when the drain's timeout ran out; ``result`` has what was done."""

    def __init__(self, timeout: float, busy: dict[str, int], result: DrainResult) -> None:
        self.busy = busy
        self.result = result
        shown = ", ".join(f"{k}={v}" for k, v in busy.items() if v)
        super().__init__(f"queues not drained after {timeout:g}s: {shown or 'tasks in flight'} "
                         f"({result.handler_calls} handler call(s) done)")


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


class _RecordedDelay:
    """The worker's ``retry_delay`` in a drain: asks the configured policy, records its answer on
    the run that failed (found by its exception), and returns 0 under ``run_retries``."""

    def __init__(self, policy: Any, recorder: _Recorder, run_retries: bool) -> None:
        from fastq.retry import default_retry_delay

        self.policy = policy if policy is not None else default_retry_delay
        self.recorder = recorder
        self.run_retries = run_retries

    def __call__(self, retried: int, exc: Optional[BaseException] = None, task: Any = None) -> float:
        seconds = float(self.policy(retried, exc, task))
        run = self._run_of(exc, task)
        if run is not None:
            run.retry_delay = seconds
        return 0.0 if self.run_retries else seconds

    def _run_of(self, exc: Optional[BaseException], task: Any) -> Optional[TaskRun]:
        if exc is None:
            return None
        runs = self.recorder.runs
        for run in reversed(runs):
            if run.error is exc:
                return run
        # asyncio hands a sync handler's TimeoutError over as a copy (concurrent.futures'): match it
        for run in reversed(runs):
            if run.retry_delay is None and run.error is not None and type(run.error) is type(exc) \
                    and run.error.args == exc.args and task is not None and run.type == task.type \
                    and run.payload == task.payload:
                return run
        return None


HARNESS_DEFAULTS = {
    "heartbeat_interval": 0.5,
    "forward_interval": 0.05,
    "recover_interval": 0.2,
    "poll_interval": 0.01,
    "shutdown_timeout": 1.0,
}


class WorkerHarness:
    """Runs a fastq ``Worker`` in-process against a real Redis, one drain at a time.

    ``handler`` is a ``ServeMux``, a handler callable or a ``fastq.App`` (its mux, with the
    settings of ``app.worker_config()``: queues, retry policies, hooks, ...). ``config`` are
    ``WorkerConfig`` fields (checked now); timings default to fast test values (forwarding
    every 50 ms, polling every 10 ms).

    A drain never waits out a retry delay: a failed task whose retry is not due yet ends in
    ``DrainResult.awaiting_retry``, with the delay asked for in its ``TaskRun.retry_delay``.
    ``run_retries=True`` runs retries at once instead (the worker is given a delay of 0; the
    policy's delay is still recorded), so a drain goes on until each task succeeds or is archived.
    """

    def __init__(self, handler: Any, redis_url: str, *, run_retries: bool = False, **config: Any) -> None:
        from fastq.server.config import WorkerConfig

        if _is_app(handler):
            base = handler.worker_config(redis_url=redis_url)
            app_settings = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
            app_settings.pop("host", None)
            config = {**app_settings, **config}
            handler = handler.mux
        if not isinstance(handler, ServeMux) and not callable(handler):
            raise TypeError(f"handler must be a ServeMux or a callable, not {_tname(handler)}")
        if not isinstance(run_retries, bool):
            raise TypeError(f"run_retries must be a bool, not {_tname(run_retries)}")
        self.handler = handler
        self.run_retries = run_retries
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
        delay = _RecordedDelay(self.config.get("retry_delay"), recorder, self.run_retries)
        worker = Worker(recorder, WorkerConfig(**{**self.config, "queues": queues, "retry_delay": delay}))
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
            result.awaiting_retry.append(tid)
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

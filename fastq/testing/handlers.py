"""Running one handler in-process without Redis: ``run_handler``, ``arun_handler``,
``task_context`` and ``MemoryResults`` (what ``fastq.result_writer()`` writes there).

Part of ``fastq.testing``; import the names from there.
"""
from __future__ import annotations

import asyncio
import builtins
import contextlib
import contextvars
import threading
import time
import uuid
from datetime import datetime, timedelta
from typing import Any, Iterator, Mapping, Optional, Union, cast

from fastq.context import TaskContext, reset_current, set_current
from fastq.errors import TaskCanceledError
from fastq.mux import ServeMux, is_async_handler
from fastq.options import DEFAULT_MAX_RETRY, DEFAULT_QUEUE, DEFAULT_TIMEOUT
from fastq.task import Task

__all__ = ["run_handler", "arun_handler", "task_context", "MemoryResults", "Deadline", "DEADLINE_EXCEEDED"]

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

"""Draining queues with a real worker: ``WorkerHarness``, ``DrainResult``, ``TaskRun`` and
``DrainTimeoutError`` (the pytest plugin's ``fastq_worker`` fixture builds harnesses).

Part of ``fastq.testing``; import the names from there.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

from fastq import keys
from fastq.errors import FastqError, RevokeTask
from fastq.mux import ServeMux, is_async_handler
from fastq.task import Task
from fastq.testing.handlers import _is_app, _non_blank, _running_loop, _tname

__all__ = ["WorkerHarness", "DrainResult", "TaskRun", "DrainTimeoutError", "HARNESS_DEFAULTS"]


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
        from fastq.redis.facade import async_client
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

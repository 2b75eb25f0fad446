"""The processor: batch dequeue, dispatch with per-task context, batched acks.

One processor runs in each worker process, on that process's event loop:

* ``fetch_loop`` claims up to ``min(free slots, batch_size)`` tasks per
  dequeue script call and starts each one; it waits while every slot is busy
  and backs off (1 ms doubling up to ``poll_interval``) while queues are empty.
* Async handlers run as asyncio tasks, sync handlers in a thread pool; each
  runs in its own context where ``fastq.get_task_id()`` and friends answer.
* Outcomes (done, complete, retry, archive, requeue) go to a buffer that
  ``ack_loop`` writes in one pipelined round trip per flush, whatever
  accumulated while the previous flush was in flight.
* ``deadline_loop`` fails tasks that pass their deadline (Asynq's rules:
  the earlier of now + timeout and deadline; 30 min when neither is set).
"""
from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

from redis.exceptions import RedisError

from fastq._codec import TaskMessage, decode_message
from fastq.context import TaskContext, set_current
from fastq.errors import DecodeError, RevokeTask, SkipRetry
from fastq.mux import ServeMux, is_async_handler
from fastq.server.broker import ARCHIVE, COMPLETE, DONE, REQUEUE, RETRY, Broker, group_by
from fastq.server.config import WorkerConfig
from fastq.server.queues import QueueSelector
from fastq.task import Task

log = logging.getLogger("fastq.processor")

DEFAULT_TIMEOUT = 1800.0
POLL_MIN = 0.001
UNDECODABLE_TYPE = "fastq:undecodable"

# Why a running task was stopped before its handler returned.
ABORT_SHUTDOWN, ABORT_DEADLINE, ABORT_CANCEL = "shutdown", "deadline", "cancel"
_ABORT_ERRORS = {ABORT_DEADLINE: "context deadline exceeded", ABORT_CANCEL: "context canceled"}


class _Running:
    __slots__ = ("id", "queue", "msg", "ctx", "started", "deadline", "future", "done", "abort", "handler")

    def __init__(self, tid: str, queue: str, msg: TaskMessage, ctx: TaskContext, started: float,
                 deadline: float, handler: Callable) -> None:
        self.id = tid
        self.queue = queue
        self.msg = msg
        self.ctx = ctx
        self.started = started
        self.deadline = deadline
        self.handler = handler
        self.future: Any = None
        self.done = False
        self.abort: Optional[str] = None


class Aborted(Exception):
    """Stands in for the error of a task stopped by deadline or cancellation."""


def error_text(exc: BaseException) -> str:
    """The ``error_msg`` stored for a failure.

    A plain ``Exception("x")`` (Go's ``errors.New("x")``) and ``SkipRetry`` are
    stored as their text, exactly as Go stores ``err.Error()``; any other
    exception as ``"TypeName: text"`` so the type is not lost.
    """
    text = str(exc)
    if type(exc) is Exception or isinstance(exc, SkipRetry):
        return text or type(exc).__name__
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def deadline_for(msg: TaskMessage, now: float) -> float:
    if msg.timeout and msg.deadline:
        return min(now + msg.timeout, float(msg.deadline))
    if msg.timeout:
        return now + msg.timeout
    if msg.deadline:
        return float(msg.deadline)
    return now + DEFAULT_TIMEOUT


class Processor:
    def __init__(self, broker: Broker, handler: Any, cfg: WorkerConfig) -> None:
        self.broker = broker
        self.cfg = cfg
        self.selector = QueueSelector(cfg.queues, cfg.strict_priority)
        if isinstance(handler, ServeMux):
            self._resolve = handler.resolve
        else:
            if not callable(handler):
                raise TypeError(f"handler must be a ServeMux or a callable, not {type(handler).__name__}")
            fixed = (handler, is_async_handler(handler))
            self._resolve = lambda _type: fixed
        self.running: dict[str, _Running] = {}
        self.unacked: dict[str, str] = {}  # task id -> queue, outcome known but not yet written
        self.processed = 0  # handlers finished in this process (any outcome)
        self._acks: list[tuple] = []
        self._free = cfg.concurrency
        self._stopping = False
        self._closed = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._slot_event: Optional[asyncio.Event] = None
        self._ack_event: Optional[asyncio.Event] = None
        self._idle_event: Optional[asyncio.Event] = None
        self._deadlines: list = []
        self._seq = itertools.count()
        self._pool = ThreadPoolExecutor(max_workers=cfg.concurrency, thread_name_prefix="fastq-sync")

    # ------------------------------------------------------------------ loops

    def bind(self) -> None:
        """Create the loop-bound primitives (call from the running loop)."""
        self._loop = asyncio.get_running_loop()
        self._slot_event = asyncio.Event()
        self._ack_event = asyncio.Event()
        self._idle_event = asyncio.Event()
        self._idle_event.set()

    async def fetch_loop(self) -> None:
        cfg = self.cfg
        sleep = POLL_MIN
        error_sleep = 0.05
        while not self._stopping:
            free = self._free
            if free <= 0:
                self._slot_event.clear()
                await self._slot_event.wait()
                continue
            names, dequeue_keys, prefixes = self.selector.next()
            try:
                reply = await self.broker.dequeue(dequeue_keys, prefixes, min(free, cfg.batch_size), cfg.lease_duration)
            except (RedisError, OSError) as exc:
                log.warning("dequeue failed (%s); retrying in %.2fs", exc, error_sleep)
                await asyncio.sleep(error_sleep)
                error_sleep = min(error_sleep * 2, 2.0)
                continue
            error_sleep = 0.05
            if not reply:
                await asyncio.sleep(sleep)
                sleep = min(sleep * 2, cfg.poll_interval)
                continue
            sleep = POLL_MIN
            queue = names[reply[0] - 1]
            for i in range(2, len(reply), 2):
                self._start(queue, reply[i].decode(), reply[i + 1])

    async def ack_loop(self) -> None:
        error_sleep = 0.05
        while True:
            await self._ack_event.wait()
            self._ack_event.clear()
            if not self._acks:
                if self._closed:
                    return
                continue
            batch, self._acks = self._acks, []
            try:
                await self._write(batch)
                error_sleep = 0.05
            except (RedisError, OSError) as exc:
                log.warning("writing %d task outcomes failed (%s); retrying in %.2fs", len(batch), exc, error_sleep)
                self._acks = batch + self._acks
                await asyncio.sleep(error_sleep)
                error_sleep = min(error_sleep * 2, 2.0)
                self._ack_event.set()

    async def deadline_loop(self) -> None:
        heap = self._deadlines
        while not self._closed:
            await asyncio.sleep(self.cfg.deadline_check_interval)
            now = time.time()
            while heap and heap[0][0] <= now:
                _, _, run = heapq.heappop(heap)
                if not run.done:
                    self.abort(run, ABORT_DEADLINE)
            if len(heap) > 2 * len(self.running) + 1024:  # drop entries of finished tasks
                self._deadlines = heap = [e for e in heap if not e[2].done]
                heapq.heapify(heap)

    # --------------------------------------------------------------- dispatch

    def _start(self, queue: str, tid: str, raw: Optional[bytes]) -> None:
        if raw is None:
            self._archive_raw(queue, tid, b"", "task hash has no message")
            return
        try:
            msg = decode_message(raw)
        except DecodeError as exc:
            self._archive_raw(queue, tid, raw, f"cannot decode task message: {exc}")
            return
        if not msg.type or msg.id != tid:
            reason = "message has no task type" if not msg.type else f"message id {msg.id!r} does not match"
            self._archive_raw(queue, tid, raw, f"invalid task message: {reason}")
            return
        now = time.time()
        deadline = deadline_for(msg, now)
        handler, is_async = self._resolve(msg.type)
        ctx = TaskContext(tid, msg.retried, msg.retry, queue, msg.type, deadline, msg.headers)
        run = _Running(tid, queue, msg, ctx, now, deadline, handler)
        self.running[tid] = run
        self._free -= 1
        self._idle_event.clear()
        heapq.heappush(self._deadlines, (deadline, next(self._seq), run))
        if deadline <= now:
            self.abort(run, ABORT_DEADLINE)
        elif is_async:
            run.future = self._loop.create_task(self._run_async(run))
        else:
            cctx = contextvars.copy_context()
            cctx.run(set_current, ctx)
            task = Task._trusted(msg.type, msg.payload, msg.headers)
            run.future = self._loop.run_in_executor(self._pool, cctx.run, _call_sync, handler, task)
            run.future.add_done_callback(lambda fut, run=run: self._sync_done(run, fut))

    async def _run_async(self, run: _Running) -> None:
        set_current(run.ctx)
        msg = run.msg
        try:
            await run.handler(Task._trusted(msg.type, msg.payload, msg.headers))
        except asyncio.CancelledError:
            if run.abort is None:  # cancelled from outside fastq (loop teardown): put it back
                run.abort = ABORT_SHUTDOWN
            self._finish(run, Aborted(_ABORT_ERRORS.get(run.abort, "")))
        except BaseException as exc:  # SystemExit/KeyboardInterrupt from a handler fail the task, not the worker
            self._finish(run, exc)
        else:
            self._finish(run, None)

    def _sync_done(self, run: _Running, fut: Any) -> None:
        if run.done:
            return
        if fut.cancelled():
            self._finish(run, Aborted("context canceled"))
            return
        exc = fut.exception()
        self._finish(run, exc)

    def abort(self, run: _Running, reason: str) -> None:
        """Stop a running task: an async one is cancelled, a sync one is finished now
        (its thread keeps running until the handler returns; the outcome is ignored)."""
        if run.done:
            return
        run.abort = reason
        fut = run.future
        if fut is not None and isinstance(fut, asyncio.Task) and not fut.done():
            fut.cancel()
        else:
            self._finish(run, None if reason == ABORT_SHUTDOWN else Aborted(_ABORT_ERRORS[reason]))

    # --------------------------------------------------------------- outcomes

    def _finish(self, run: _Running, exc: Optional[BaseException]) -> None:
        if run.done:
            return
        run.done = True
        tid, queue, msg = run.id, run.queue, run.msg
        del self.running[tid]
        self.processed += 1
        self._free += 1
        self._slot_event.set()
        if not self.running:
            self._idle_event.set()
        now = time.time()
        if run.abort == ABORT_SHUTDOWN:
            self._ack(REQUEUE, queue, tid, tid)
        elif exc is None or isinstance(exc, RevokeTask):
            if msg.retention > 0 and exc is None:
                done = msg.copy()
                done.completed_at = int(now)
                self._ack(COMPLETE, queue, (tid, int(now) + msg.retention, done, msg.unique_key), tid)
            else:
                self._ack(DONE, queue, (tid, msg.unique_key), tid)
        else:
            self._failed(run, exc, now)

    def _failed(self, run: _Running, exc: BaseException, now: float) -> None:
        tid, queue, msg = run.id, run.queue, run.msg
        text = str(exc) if isinstance(exc, Aborted) else error_text(exc)
        handler = self.cfg.error_handler
        if handler is not None:
            try:
                contextvars.copy_context().run(_call_error_handler, handler, run, exc)
            except Exception:  # the hook must never break the worker
                log.exception("error_handler raised for task %s", tid)
        failed = msg.copy()
        failed.error_msg = text
        failed.last_failed_at = int(now)
        if isinstance(exc, SkipRetry) or msg.retried >= msg.retry:
            log.warning("task %s (%s) failed and is archived: %s", tid, msg.type, text)
            self._ack(ARCHIVE, queue, (tid, failed), tid)
            return
        is_failure = bool(self.cfg.is_failure(exc))
        if is_failure:
            failed.retried += 1
        task = Task._trusted(msg.type, msg.payload, msg.headers)
        delay = self.cfg.retry_delay(msg.retried, exc, task)
        log.warning("task %s (%s) failed, retry %d/%d in %.0fs: %s", tid, msg.type, failed.retried, msg.retry, delay, text)
        self._ack(RETRY, queue, (tid, failed, int(now + delay), is_failure), tid)

    def _archive_raw(self, queue: str, tid: str, raw: bytes, reason: str) -> None:
        """Archive a claimed task whose message cannot be used; keep the raw bytes as payload."""
        log.error("task %s in queue %s archived: %s", tid, queue, reason)
        now = int(time.time())
        msg = TaskMessage(type=UNDECODABLE_TYPE, payload=bytes(raw), id=tid, queue=queue,
                          error_msg=reason, last_failed_at=now, timeout=int(DEFAULT_TIMEOUT))
        self._ack(ARCHIVE, queue, (tid, msg), tid)

    def _ack(self, kind: str, queue: str, item: Any, tid: str) -> None:
        self._acks.append((kind, queue, item, tid))
        self.unacked[tid] = queue
        self._ack_event.set()

    async def _write(self, batch: list[tuple]) -> None:
        missing = await self.broker.write_acks(group_by((k, q, item) for k, q, item, _ in batch))
        for entry in batch:
            self.unacked.pop(entry[3], None)
        if missing:
            log.warning("%d task(s) were no longer active when their outcome was written "
                        "(reclaimed after a lost lease?): %s", len(missing), [m.decode() for m in missing[:10]])

    # --------------------------------------------------------------- shutdown

    def stop_fetching(self) -> None:
        self._stopping = True
        self._slot_event.set()

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` for running tasks; abort (requeue) the rest."""
        self.stop_fetching()
        if self.running:
            try:
                await asyncio.wait_for(self._idle_event.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        if self.running:
            log.warning("shutdown: requeueing %d unfinished task(s)", len(self.running))
            pending = [r.future for r in self.running.values() if isinstance(r.future, asyncio.Task)]
            for run in list(self.running.values()):
                self.abort(run, ABORT_SHUTDOWN)
            if pending:
                await asyncio.wait(pending, timeout=1.0)
            for run in list(self.running.values()):  # handlers that swallowed the cancellation
                self._finish(run, None)

    async def close(self, flush_timeout: float = 5.0) -> None:
        """Write every buffered outcome (retrying until ``flush_timeout``), then stop the loops."""
        end = time.monotonic() + flush_timeout
        while self._acks and time.monotonic() < end:
            batch, self._acks = self._acks, []
            try:
                await self._write(batch)
            except (RedisError, OSError) as exc:
                log.warning("shutdown: writing outcomes failed (%s); retrying", exc)
                self._acks = batch + self._acks
                await asyncio.sleep(0.1)
        if self._acks:
            log.error("shutdown: %d task outcome(s) not written; their leases will expire and "
                      "the tasks will be recovered", len(self._acks))
        self._closed = True
        self._ack_event.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def leased_ids(self) -> dict[str, list[str]]:
        """Task IDs this process holds a lease for, by queue (running or outcome unwritten)."""
        out: dict[str, list[str]] = {}
        for run in self.running.values():
            out.setdefault(run.queue, []).append(run.id)
        for tid, queue in self.unacked.items():
            out.setdefault(queue, []).append(tid)
        return out


def _call_sync(handler: Callable, task: Task) -> None:
    result = handler(task)
    if asyncio.iscoroutine(result):
        result.close()
        raise TypeError("handler returned a coroutine but was not detected as async; "
                        "declare it with 'async def' (or keep middleware async)")


def _call_error_handler(handler: Callable, run: _Running, exc: BaseException) -> None:
    set_current(run.ctx)
    msg = run.msg
    handler(Task._trusted(msg.type, msg.payload, msg.headers), exc)

"""The processor: batch dequeue, dispatch with per-task context, batched acks.

One processor runs in each worker process, on that process's event loop. It
fetches and dispatches; every Redis call goes through ``fastq._rdb.worker``:

* ``fetch_loop`` claims up to ``min(free slots, batch_size)`` tasks per
  dequeue script call and starts each one; it waits while every slot is busy
  and backs off (1 ms doubling up to ``poll_interval``) while queues are empty.
* Async handlers run as asyncio tasks, sync handlers in a thread pool fed in batches
  (or inline on the loop: ``fastq.server.sync_pool``); each
  runs in its own context where ``fastq.get_task_id()`` and friends answer.
* Outcomes (``fastq._rdb.outcome``: done, complete, retry, archive, requeue)
  go to a buffer (``fastq.server.acks``) that ``ack_loop`` writes in one
  pipelined round trip per flush, whatever accumulated while the previous
  flush was in flight.
* ``deadline_loop`` stops tasks that pass their deadline (Asynq's rules: the
  earlier of now + timeout and deadline; 30 min when neither is set) and tasks
  whose lease this process can no longer vouch for.

Every claim carries a lease token (stored in the task hash). Outcomes are
written with it, so a worker that lost its lease (paused, partitioned) cannot
settle a task that was meanwhile reclaimed and claimed by someone else.
"""
from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import time
from typing import Any, Callable, Optional

from redis.exceptions import RedisError, ResponseError

from fastq._codec import TaskMessage, decode_message
from fastq._rdb.flow import Link, parse_link
from fastq._rdb.outcome import Advance, Archive, Claim, Complete, Done, Requeue, Retry, TaskId
from fastq._rdb.worker import LEASE_MARGIN, Broker
from fastq.context import TaskContext, set_current
from fastq.errors import DecodeError, RevokeTask, SkipRetry
from fastq.mux import ServeMux, is_async_handler
from fastq.server.acks import Acks
from fastq.server.config import WorkerConfig
from fastq.server.health import RedisHealth
from fastq.server.hooks import LOST, Hooks
from fastq.server.limits import Limits
from fastq.server.loops import jittered_sleep
from fastq.server.queues import QueueSelector
from fastq.server.sync_pool import SyncJob, make_pool
from fastq.server.unusable import UNDECODABLE_TYPE, archive_unusable, printable_id, undecodable_message
from fastq.task import Task

__all__ = ["Processor", "Aborted", "error_text", "deadline_for", "DEFAULT_TIMEOUT", "LEASE_MARGIN",
           "UNDECODABLE_TYPE", "printable_id", "undecodable_message", "archive_unusable"]

log = logging.getLogger("fastq.processor")

DEFAULT_TIMEOUT = 1800.0
POLL_MIN = 0.001
QUARANTINE = 30.0  # seconds a queue whose keys have the wrong type is left out of dequeues

# Why a running task was stopped before its handler returned.
ABORT_SHUTDOWN, ABORT_DEADLINE, ABORT_CANCEL, ABORT_LEASE = "shutdown", "deadline", "cancel", "lease"
_ABORT_ERRORS = {ABORT_DEADLINE: "context deadline exceeded", ABORT_CANCEL: "context canceled",
                 ABORT_LEASE: "asynq: task lease expired", ABORT_SHUTDOWN: "context canceled"}


class _Running:
    __slots__ = ("id", "queue", "msg", "ctx", "started", "deadline", "token", "lease_until", "future",
                 "done", "abort", "handler", "link")

    def __init__(self, tid: str, queue: str, msg: TaskMessage, ctx: TaskContext, started: float,
                 deadline: float, token: str, lease_until: float, handler: Callable[..., Any]) -> None:
        self.id = tid
        self.queue = queue
        self.msg = msg
        self.ctx = ctx
        self.started = started
        self.deadline = deadline
        self.token = token
        self.lease_until = lease_until  # time.monotonic() until which our lease is certainly valid
        self.handler = handler
        self.link: Optional[Link] = None  # a workflow step's link (fastq._rdb.flow)
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
    _loop: asyncio.AbstractEventLoop  # the running loop, from bind()

    def __init__(self, broker: Broker, handler: Any, cfg: WorkerConfig, server_id: str = "local") -> None:
        self.broker = broker
        self.cfg = cfg
        self.selector = QueueSelector(cfg.queues, cfg.strict_priority)
        self._resolve: Callable[[str], tuple[Any, bool]]
        if isinstance(handler, ServeMux):
            self._resolve = handler.resolve
        else:
            if not callable(handler):
                raise TypeError(f"handler must be a ServeMux or a callable, not {type(handler).__name__}")
            fixed = (handler, is_async_handler(handler))
            self._resolve = lambda _type: fixed
        self.running: dict[str, _Running] = {}
        self.processed = 0  # handlers finished in this process (any outcome)
        self.on_processed: Optional[Callable[[int], None]] = None  # called after each finish (recycling)
        self.on_stuck: Optional[Callable[[str], None]] = None  # a sync handler outlived its grace
        # Told the idle back-off sleep before each idle wait, and 0.0 once a dequeue after one found
        # tasks (fastq.server.keyspace subscribes only while the queues are empty).
        self.on_idle: Optional[Callable[[float], None]] = None
        self.hooks = Hooks(cfg.hooks)  # observers (fastq.server.hooks)
        self.results: Any = None  # set by the worker: what fastq.result_writer() writes through
        self.health = RedisHealth(self.hooks.call)
        self.acks = Acks(broker, self.health)  # outcomes not yet written
        self.limits: Optional[Limits] = None  # rate/concurrency limits (fastq.server.limits), if any
        if cfg.limits:
            self.limits = Limits(cfg.limits, getattr(broker, "redis", None), self.acks, self.health,
                                 cfg.lease_duration)
            self.acks.broker = self.limits  # outcomes are written with the release of their slots
        self._abandoned: list[_Running] = []  # settled sync tasks whose thread still runs
        self._free = cfg.concurrency
        self._stopping = False
        self._closed = False
        # bound to the running loop by bind()
        self._slot_event = asyncio.Event()
        self._idle_event = asyncio.Event()
        self._wake = asyncio.Event()  # set when a queue we serve stops being empty (fastq_notify)
        self._token_prefix = f"{server_id}:"
        self._claims = itertools.count(1)
        self._pool = make_pool(cfg.pool, cfg.concurrency, self._sync_done)  # fastq.server.sync_pool

    # ------------------------------------------------------------------ loops

    def bind(self) -> None:
        """Create the loop-bound primitives (call from the running loop)."""
        self._loop = asyncio.get_running_loop()
        self._slot_event = asyncio.Event()
        self._idle_event = asyncio.Event()
        self._idle_event.set()
        self._wake = asyncio.Event()
        self._pool.bind(self._loop)
        self.acks.bind()

    async def fetch_loop(self) -> None:
        cfg = self.cfg
        sleep = POLL_MIN
        idle = False  # the last dequeue found nothing
        error_sleep = 0.05
        while not self._stopping:
            free = self._free
            if free <= 0:
                self._slot_event.clear()
                await self._slot_event.wait()
                continue
            if cfg.max_tasks:  # recycling: never claim more than the worker will run
                free = min(free, cfg.max_tasks - self.processed - len(self.running))
                if free <= 0:
                    self._slot_event.clear()
                    await self._slot_event.wait()
                    continue
            names = self._next_queues()
            if not names:
                await asyncio.sleep(cfg.poll_interval)
                continue
            token = f"{self._token_prefix}{next(self._claims)}"
            self._wake.clear()  # a notification arriving from now on ends the idle wait below
            try:
                claims = await self.broker.dequeue(names, min(free, cfg.batch_size), cfg.lease_duration, token)
            except (RedisError, OSError) as exc:
                if isinstance(exc, ResponseError) and "WRONGTYPE" in str(exc):
                    await self._quarantine_broken(names)
                    continue
                self.redis_error("dequeue", exc)
                await jittered_sleep(error_sleep)
                error_sleep = min(error_sleep * 2, 2.0)
                continue
            if self.health.troubled:
                self.health.ok("dequeue")
            error_sleep = 0.05
            if not claims:
                idle = True
                if self.on_idle is not None:
                    self.on_idle(sleep)
                await self._idle_wait(sleep)
                sleep = min(sleep * 2, cfg.poll_interval)
                continue
            if idle:  # work again after an idle wait
                idle = False
                if self.on_idle is not None:
                    self.on_idle(0.0)
            sleep = POLL_MIN
            if self.limits is not None:  # claims over a limit go back to scheduled, not started
                claims = await self.limits.admit(claims)
            for claim in claims:
                self._claimed(claim)

    async def _idle_wait(self, seconds: float) -> None:
        """Sleep while every queue is empty, or until a fastq client or forwarder says one is not."""
        if self._wake.is_set():
            return
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def wake(self) -> None:
        """A queue this worker serves has pending tasks again: end an idle wait now."""
        self._wake.set()

    def _next_queues(self) -> list[str]:
        """The queues of the next dequeue, in order (less those skipped after WRONGTYPE)."""
        return self.selector.next()

    async def _quarantine_broken(self, names: list[str]) -> None:
        """A dequeue hit WRONGTYPE: find the queue whose keys have the wrong type and skip it a while."""
        for q in names:
            try:
                wrong = await self.broker.wrong_key_types(q)
            except (RedisError, OSError):
                return
            for key, got, want in wrong:
                log.error("queue %s skipped for %.0fs: key %s is a %s, expected a %s", q, QUARANTINE, key, got, want)
                self.selector.skip(q, QUARANTINE)
        await asyncio.sleep(0.05)

    async def ack_loop(self) -> None:
        """Write outcomes as they come (``fastq.server.acks``)."""
        await self.acks.loop()

    async def deadline_loop(self) -> None:
        """Scan the running tasks (at most ``concurrency`` of them) every tick: cheaper than
        keeping a per-task deadline structure up to date at tens of thousands of tasks a second."""
        while not self._closed:
            await asyncio.sleep(self.cfg.deadline_check_interval)
            now, mono = time.time(), time.monotonic()
            for run in [r for r in self.running.values() if r.deadline <= now or r.lease_until < mono]:
                if run.deadline <= now:
                    self.abort(run, ABORT_DEADLINE)
                else:
                    log.warning("task %s: lease lost (no successful lease extension); stopping it and leaving "
                                "it to lease recovery", run.id, extra=_fields(run))
                    self.abort(run, ABORT_LEASE)
            if self._abandoned:
                self._check_abandoned(now)

    def _check_abandoned(self, now: float) -> None:
        grace = self.cfg.hard_timeout_grace
        still = [r for r in self._abandoned if not r.future.done()]
        self._abandoned = still
        on_stuck = self.on_stuck
        stuck = [r for r in still if now > r.deadline + grace] if on_stuck is not None else []
        if stuck and on_stuck is not None:
            self._abandoned = [r for r in still if r not in stuck]
            on_stuck(f"sync handler of task {stuck[0].id} ({stuck[0].msg.type}) still running "
                          f"{now - stuck[0].deadline:.0f}s after its deadline")

    # --------------------------------------------------------------- dispatch

    def _claimed(self, claim: Claim) -> None:
        """Start one claimed task. Whatever its bytes hold, it ends running or archived with the
        reason, and the rest of the batch is started: nothing read from Redis stops the loop."""
        queue, raw, token = claim.queue, claim.raw, claim.token
        try:
            tid = claim.raw_id.decode()
        except UnicodeDecodeError:  # Go strings may hold any bytes; such an ID cannot be a fastq task
            self._archive_raw(queue, claim.raw_id, raw or b"", "task ID is not valid UTF-8", token)
            return
        try:  # one function for the whole start: this runs for every task
            if raw is None:
                self._archive_raw(queue, tid, b"", "task hash has no message", token)
                return
            try:
                msg = decode_message(raw)
            except DecodeError as exc:
                self._archive_raw(queue, tid, raw, f"cannot decode task message: {exc}", token)
                return
            if not msg.type or msg.id != tid:
                reason = "message has no task type" if not msg.type else f"message id {msg.id!r} does not match"
                self._archive_raw(queue, tid, raw, f"invalid task message: {reason}", token)
                return
            link = None
            if claim.link is not None:
                try:
                    link = parse_link(claim.link)
                except ValueError as exc:
                    self._archive_raw(queue, tid, raw, f"invalid task message: {exc}", token)
                    return
            now = time.time()
            deadline = deadline_for(msg, now)
            handler, is_async = self._resolve(msg.type)
            ctx = TaskContext(tid, msg.retried, msg.retry, queue, msg.type, deadline, msg.headers)
            ctx.results = self.results
            run = _Running(tid, queue, msg, ctx, now, deadline, token, claim.lease_until, handler)
            run.link = link
            if self.hooks:
                self.hooks.call("task_started", ctx)
            if not self.running:  # set while nothing ran (_finish)
                self._idle_event.clear()
            self.running[tid] = run
            self._free -= 1
            if deadline <= now:
                self.abort(run, ABORT_DEADLINE)
            elif is_async:
                run.future = self._loop.create_task(self._run_async(run))
            else:
                cctx = contextvars.copy_context()
                cctx.run(set_current, ctx)
                task = Task._trusted(msg.type, msg.payload, msg.headers)
                run.future = self._pool.submit(SyncJob(run, cctx, _call_sync, handler, task))
        except Exception as exc:  # noqa: BLE001 - a bug or a message nobody planned for
            log.exception("task %s in queue %s could not be started", tid, queue)
            if tid in self.running:
                self.abort(self.running[tid], ABORT_SHUTDOWN)  # back to pending, by the usual path
            elif not self.acks.holds(tid):
                self._archive_raw(queue, tid, raw or b"", f"task could not be started: {error_text(exc)}", token)

    async def _run_async(self, run: _Running) -> None:
        set_current(run.ctx)
        msg = run.msg
        try:
            result = await run.handler(Task._trusted(msg.type, msg.payload, msg.headers))
        except asyncio.CancelledError:
            if run.abort is None:  # cancelled from outside fastq (loop teardown): put it back
                run.abort = ABORT_SHUTDOWN
            self._finish(run, Aborted(_ABORT_ERRORS[run.abort]))
        except BaseException as exc:  # SystemExit/KeyboardInterrupt from a handler fail the task, not the worker
            self._finish(run, exc)
        else:
            self._finish(run, None, result)

    def _sync_done(self, job: SyncJob) -> None:
        """A sync handler returned (``fastq.server.sync_pool`` calls this on the loop). Past its
        deadline it fails with "context deadline exceeded", as in Asynq, even if the deadline loop
        did not catch it running (inline handlers, or between two checks)."""
        run = job.run
        if run.done:
            return
        if run.deadline <= time.time():
            self.abort(run, ABORT_DEADLINE)
            return
        self._finish(run, job.exc, job.result)

    def cancel(self, tid: str) -> bool:
        """Cancel a running task (``asynq:cancel``); it fails with "context canceled"."""
        run = self.running.get(tid)
        if run is None:
            return False
        log.info("task %s cancelled on request", tid)
        self.abort(run, ABORT_CANCEL)
        return True

    def abort(self, run: _Running, reason: str) -> None:
        """Stop a running task. The task context is marked cancelled (``fastq.is_cancelled()``);
        an async handler is cancelled; a sync one is settled now while its thread runs on (its
        eventual result is ignored)."""
        if run.done:
            return
        run.abort = reason
        run.ctx.cancelled = True
        fut = run.future
        if fut is not None and isinstance(fut, asyncio.Task) and not fut.done():
            fut.cancel()
        else:
            if fut is not None and not fut.done():
                self._abandoned.append(run)
            self._finish(run, Aborted(_ABORT_ERRORS[reason]))

    # --------------------------------------------------------------- outcomes

    def _finish(self, run: _Running, exc: Optional[BaseException], result: Any = None) -> None:
        """Settle a task. ``result``: what the handler returned; bytes are stored as the task's
        Asynq ``result`` field when the task is kept (retention > 0)."""
        if run.done:
            return
        run.done = True
        tid, queue, msg = run.id, run.queue, run.msg
        del self.running[tid]
        if self.limits is not None:
            self.limits.finished(tid, run.abort == ABORT_LEASE)
        self.processed += 1
        self._free += 1
        self._slot_event.set()
        if not self.running:
            self._idle_event.set()
        if run.abort == ABORT_LEASE:
            outcome = LOST  # nothing is written: the lease is gone and recovery owns the task (as Asynq)
        elif run.abort == ABORT_SHUTDOWN:
            outcome = Requeue.kind
            self.acks.add(Requeue(queue, tid, run.token))
        elif exc is None or isinstance(exc, RevokeTask):
            if exc is None and (msg.retention > 0 or run.link is not None):
                now = int(time.time())
                outcome = Complete.kind if msg.retention > 0 else Done.kind
                done = msg.copy()
                done.completed_at = now
                stored = bytes(result) if isinstance(result, (bytes, bytearray, memoryview)) else None
                expiry = now + msg.retention if msg.retention > 0 else 0
                if run.link is not None:  # a workflow step: settled and followed in one script
                    self.acks.add(Advance(queue, tid, run.token, expiry, done, run.link, msg.unique_key, stored))
                else:
                    self.acks.add(Complete(queue, tid, run.token, expiry, done, msg.unique_key, stored))
            else:
                outcome = Done.kind
                self.acks.add(Done(queue, tid, run.token, msg.unique_key))
        else:
            outcome = self._failed(run, exc, time.time())
        if self.hooks:
            self.hooks.call("task_finished", run.ctx, outcome, exc, time.time() - run.started)
        if self.on_processed is not None:
            self.on_processed(self.processed)

    def redis_error(self, operation: str, exc: BaseException) -> None:
        """A Redis call failed (``operation``: dequeue, ack, heartbeat, forward, ...): logged once
        per outage by ``self.health``, and passed to hooks."""
        self.health.failed(operation, exc)

    def _failed(self, run: _Running, exc: BaseException, now: float) -> str:
        tid, queue, msg = run.id, run.queue, run.msg
        text = str(exc) if isinstance(exc, Aborted) else error_text(exc)
        handler = self.cfg.error_handler
        if handler is not None:
            try:
                contextvars.copy_context().run(_call_error_handler, handler, run, exc)
            except Exception:  # the hook must never break the worker
                log.exception("error_handler raised for task %s", tid)
        failed = msg.copy()
        failed.error_msg = text[: self.cfg.max_error_length]
        failed.last_failed_at = int(now)
        if isinstance(exc, SkipRetry) or msg.retried >= msg.retry:
            log.warning("task %s (%s) failed and is archived: %s", tid, msg.type, text, extra=_fields(run))
            self.acks.add(Archive(queue, tid, run.token, failed, run.link))
            return Archive.kind
        is_failure = bool(self.cfg.is_failure(exc))
        if is_failure:
            failed.retried += 1
        task = Task._trusted(msg.type, msg.payload, msg.headers)
        delay = self.cfg.retry_delay(msg.retried, exc, task)
        log.warning("task %s (%s) failed, retry %d/%d in %.0fs: %s", tid, msg.type, failed.retried, msg.retry,
                    delay, text, extra=_fields(run))
        self.acks.add(Retry(queue, tid, run.token, failed, int(now + delay), is_failure))
        return Retry.kind

    def _archive_raw(self, queue: str, tid: TaskId, raw: bytes, reason: str, token: str) -> None:
        """Archive a claimed task whose message cannot be used; keep the raw bytes as payload."""
        self.acks.add(archive_unusable(queue, tid, token, raw, reason, time.time()))

    # ------------------------------------------------- what other parts read

    @property
    def sync_pool(self) -> Any:
        """Where sync handlers run (``fastq.server.sync_pool``); the lease thread's watch reads it."""
        return self._pool

    def holds(self, tid: TaskId) -> bool:
        """True while this process runs ``tid`` or has its outcome unwritten (its lease is ours)."""
        return tid in self.running or self.acks.holds(tid)

    def running_snapshot(self) -> dict[str, _Running]:
        """The running tasks by ID: a copy, safe to read from another thread (atomic under the GIL)."""
        return self.running.copy()

    def leased_ids(self) -> dict[str, list[str]]:
        """Task IDs this process holds a lease for, by queue (running or outcome unwritten).
        Called from the lease thread: each dict is copied first (atomic under the GIL)."""
        out: dict[str, list[str]] = {}
        for run in self.running.copy().values():
            out.setdefault(run.queue, []).append(run.id)
        for tid, queue in self.acks.snapshot().items():
            out.setdefault(queue, []).append(tid)  # type: ignore[arg-type]  # bytes IDs extend as bytes
        return out

    def leases_extended(self, by_queue: dict[str, list[str]], since: float) -> None:
        """The leases of these IDs were pushed to Redis time + lease by a call started at ``since``.
        Called from the lease thread: only dict lookups and attribute writes (thread-safe)."""
        until = since + self.cfg.lease_duration - LEASE_MARGIN
        running = self.running
        for ids in by_queue.values():
            for tid in ids:
                run = running.get(tid)
                if run is not None and until > run.lease_until:
                    run.lease_until = until

    # --------------------------------------------------------------- shutdown

    def stop_fetching(self) -> None:
        self._stopping = True
        self._slot_event.set()
        self._wake.set()  # end an idle wait now: a stop must not wait out --poll-interval

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
            log.debug("shutdown: requeued task IDs: %s", " ".join(self.running))
            pending = [r.future for r in self.running.values() if isinstance(r.future, asyncio.Task)]
            for run in list(self.running.values()):
                self.abort(run, ABORT_SHUTDOWN)
            if pending:
                await asyncio.wait(pending, timeout=1.0)
            for run in list(self.running.values()):  # handlers that swallowed the cancellation
                self._finish(run, None)

    async def close(self, flush_timeout: float = 5.0) -> None:
        """Write every buffered outcome (retrying until ``flush_timeout``), then stop the loops."""
        await self.acks.close(flush_timeout)
        self._closed = True
        self._pool.close()


def _fields(run: _Running) -> dict[str, Any]:
    """Log-record fields of a task, for lines written outside its context (sync handlers'
    outcomes are settled on the event loop, not in the handler's thread)."""
    ctx = run.ctx
    return {"task_id": ctx.task_id, "task_type": ctx.type, "queue": ctx.queue, "retry": ctx.retry_count}


def _call_sync(handler: Callable[[Task], Any], task: Task) -> Any:
    result = handler(task)
    if asyncio.iscoroutine(result):
        result.close()
        raise TypeError("handler returned a coroutine but was not detected as async; "
                        "declare it with 'async def' (or keep middleware async)")
    return result


def _call_error_handler(handler: Callable[..., Any], run: _Running, exc: BaseException) -> None:
    set_current(run.ctx)
    msg = run.msg
    handler(Task._trusted(msg.type, msg.payload, msg.headers), exc)

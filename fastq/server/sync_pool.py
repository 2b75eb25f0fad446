"""Where plain ``def`` handlers run: a thread pool fed in batches, or the event loop itself.

The processor hands each started sync task to ``pool.submit(job)`` and gets its outcome back
through ``on_done(job)`` on the event loop. Two pools, chosen per process by
``WorkerConfig.pool`` (``--pool``):

``threads`` (the default): a pool of up to ``concurrency`` threads, built for many short
handlers. ``concurrent.futures.ThreadPoolExecutor`` costs, per task, a future, a wrapping
asyncio future, a thread wake-up and a ``call_soon_threadsafe`` (a write to the loop's self-pipe),
and every woken thread fights the loop for the GIL. Here:

* jobs go to one shared deque; the threads already working take them from it without any lock
  or wake-up. Once per event-loop iteration (``_kick``) the pool wakes a thread only if none is
  working; a dequeue batch of 200 tasks costs at most one wake-up.
* handlers that block (I/O, sleeps) still run ``concurrency`` at a time, as with one thread per
  task: new jobs that find every working thread inside a handler for ``BUSY`` or longer wake a
  thread each at once, and a watchdog on the loop (every ``STALL`` seconds while jobs wait) does
  the same for jobs that have waited ``STALL`` (a handler that blocked after they were queued).
* finished jobs go to a second deque; the loop is woken (``call_soon_threadsafe``) only when
  that deque was empty and no wake-up is pending, and settles everything in it at once.

``inline``: the handler runs on the event loop thread, in the loop iteration after its dequeue
(a batch at a time, yielding to the loop every ``INLINE_SLICE`` seconds). No thread, no hand-off:
the fastest choice for handlers that finish in microseconds, but one that blocks stops the loop
(heartbeats, acks, deadlines and other tasks wait; leases are kept by their own thread), a
deadline is checked only once it returns and ``fastq.is_cancelled()`` never turns true while it
runs; ``fastq.result_writer().write()`` and ``asyncio.run()`` cannot be used in it.

Both run each handler in its own copy of the dispatching context (``job.cctx``), so
``fastq.get_task_id()`` and log records answer for that task only.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Optional

__all__ = ["SyncJob", "ThreadPool", "InlinePool", "POOLS", "make_pool", "STALL", "BUSY", "INLINE_SLICE"]

log = logging.getLogger("fastq.processor")

POOLS = ("threads", "inline")
STALL = 0.005  # a job waiting this long wakes threads for every waiting job
BUSY = 0.001  # new jobs find every working thread in a handler for this long: wake threads for them
INLINE_SLICE = 0.005  # an inline batch yields to the loop after this long


class SyncJob:
    """One sync handler call: ``fn(*args)`` in the context ``cctx``; its outcome once done."""

    __slots__ = ("run", "cctx", "fn", "args", "exc", "result", "queued", "state")

    def __init__(self, run: Any, cctx: Any, fn: Callable[..., Any], *args: Any) -> None:
        self.run = run
        self.cctx = cctx
        self.fn = fn
        self.args: Any = args
        self.exc: Optional[BaseException] = None
        self.result: Any = None
        self.queued = 0.0  # time.monotonic() when submitted
        self.state = 0  # 0 queued, 1 running, 2 done (ran or skipped)

    def release(self) -> None:
        """Once settled: drop the references, so that the task's objects (the processor's entry
        holds this job) are freed by reference counting instead of waiting for the cyclic GC."""
        self.run = self.cctx = self.args = self.result = self.exc = None

    def done(self) -> bool:
        """True once the handler returned or raised (or was skipped): its thread is free."""
        return self.state == 2

    def execute(self) -> None:
        """Run the handler (any thread); a task settled while the job waited is skipped."""
        if self.run.done:
            self.state = 2
            return
        self.state = 1
        try:
            self.result = self.cctx.run(self.fn, *self.args)
        except BaseException as exc:  # noqa: BLE001 - SystemExit etc. from a handler fail the task
            self.exc = exc
        self.state = 2


class _Slot:
    """One pool thread's state, read by the watchdog."""

    __slots__ = ("idle", "since")

    def __init__(self) -> None:
        self.idle = False
        self.since = 0.0  # time.monotonic() when its current job started; 0.0 between jobs


class ThreadPool:
    """Up to ``max_threads`` threads taking jobs from one deque (see the module docstring)."""

    def __init__(self, max_threads: int, on_done: Callable[[SyncJob], None], name: str = "fastq-sync",
                 stall: float = STALL) -> None:
        self.max_threads = max_threads
        self.on_done = on_done
        self.name = name
        self.stall = stall
        self.wakeups = 0  # threads woken or started (tests, benchmarks)
        self._jobs: deque[SyncJob] = deque()
        self._finished: deque[SyncJob] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._slots: list[_Slot] = []
        self._idle = 0  # threads waiting on _cond (under _cond)
        self._wakes = 0  # notifications not yet taken by a thread (under _cond)
        self._working = 0  # threads not waiting (under _cond)
        self._signalled = False  # a _settle call is pending on the loop
        self._kick_pending = False
        self._watch: Optional[asyncio.TimerHandle] = None
        self._closed = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    # ------------------------------------------------------------ the loop side

    def submit(self, job: SyncJob) -> SyncJob:
        job.queued = time.monotonic()
        self._jobs.append(job)
        if not self._kick_pending:
            self._kick_pending = True
            assert self._loop is not None, "bind() first"
            self._loop.call_soon(self._kick)
        return job

    def _kick(self) -> None:
        """Once per loop iteration with new jobs: make sure a thread works on them."""
        self._kick_pending = False
        if not self._jobs or self._closed:
            return
        with self._cond:
            if self._working == 0:
                self._wake(1)
            elif self._all_busy():  # every working thread is inside a handler that runs a while
                self._wake(len(self._jobs) - self._wakes)
        if self._watch is None and self._loop is not None:
            self._watch = self._loop.call_later(self.stall, self._watchdog)

    def _watchdog(self) -> None:
        """While jobs wait: once the oldest waited ``stall``, wake a thread for each waiting job."""
        self._watch = None
        jobs = self._jobs
        if not jobs or self._closed:
            return
        try:
            waited = time.monotonic() - jobs[0].queued
        except IndexError:  # taken meanwhile
            return
        if waited >= self.stall:
            with self._cond:
                self._wake(len(jobs) - self._wakes)
        assert self._loop is not None
        self._watch = self._loop.call_later(self.stall, self._watchdog)

    def _all_busy(self) -> bool:
        """True when no thread is about to take a job: every working thread has been inside its
        current handler for ``BUSY`` or longer (call with ``_cond`` held)."""
        if self._wakes:
            return False
        now = time.monotonic()
        for slot in self._slots:
            if not slot.idle and (slot.since == 0.0 or now - slot.since < BUSY):
                return False
        return True

    def _wake(self, n: int) -> None:
        """Wake (or start) up to ``n`` more threads; call with ``_cond`` held."""
        if n <= 0:
            return
        notify = min(n, self._idle - self._wakes)
        if notify > 0:
            self._wakes += notify
            self._working += notify
            self._cond.notify(notify)
            self.wakeups += notify
        for _ in range(min(n - max(notify, 0), self.max_threads - len(self._slots))):
            slot = _Slot()
            self._slots.append(slot)
            self._working += 1
            self.wakeups += 1
            threading.Thread(target=self._work, args=(slot,), name=f"{self.name}-{len(self._slots)}",
                             daemon=True).start()

    def _settle(self) -> None:
        """On the loop: hand every finished job to ``on_done``."""
        self._signalled = False
        finished = self._finished
        on_done = self.on_done
        while finished:
            job = finished.popleft()
            try:
                on_done(job)
            except Exception:  # a bug settling one task must not strand the others of the batch
                log.exception("settling the sync task %s failed", getattr(job.run, "id", "?"))
            job.release()

    def close(self) -> None:
        """Stop the threads once they are idle (running handlers are not interrupted)."""
        self._closed = True
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        self._jobs.clear()
        with self._cond:
            self._cond.notify_all()

    # ------------------------------------------------------------ the threads

    def _work(self, slot: _Slot) -> None:
        jobs, finished, cond = self._jobs, self._finished, self._cond
        pop = jobs.popleft
        monotonic = time.monotonic
        while True:
            try:
                job = pop()
            except IndexError:
                with cond:
                    if jobs:
                        continue
                    if self._closed:
                        self._working -= 1
                        return
                    self._working -= 1
                    self._idle += 1
                    slot.idle = True
                    while not self._wakes and not self._closed:
                        cond.wait()
                    slot.idle = False
                    self._idle -= 1
                    if self._wakes:
                        self._wakes -= 1
                    else:  # closing
                        return
                continue
            slot.since = monotonic()
            job.execute()
            slot.since = 0.0
            finished.append(job)
            if not self._signalled:
                self._signalled = True
                loop = self._loop
                try:
                    loop.call_soon_threadsafe(self._settle)  # type: ignore[union-attr]
                except RuntimeError:  # the loop is closed: the worker is gone
                    return


class InlinePool:
    """Runs jobs on the event loop thread, a batch per loop iteration (see the module docstring)."""

    wakeups = 0

    def __init__(self, on_done: Callable[[SyncJob], None], slice_seconds: float = INLINE_SLICE) -> None:
        self.on_done = on_done
        self.slice = slice_seconds
        self._jobs: deque[SyncJob] = deque()
        self._pending = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self.current: Optional[SyncJob] = None  # the job running on the loop now (the lease thread's watch)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def submit(self, job: SyncJob) -> SyncJob:
        self._jobs.append(job)
        if not self._pending:
            self._pending = True
            assert self._loop is not None, "bind() first"
            self._loop.call_soon(self._run)
        return job

    def _run(self) -> None:
        self._pending = False
        jobs, on_done = self._jobs, self.on_done
        end = time.monotonic() + self.slice
        while jobs:
            job = jobs.popleft()
            self.current = job
            job.execute()
            self.current = None
            try:
                on_done(job)
            except Exception:  # a bug settling one task must not strand the others of the batch
                log.exception("settling the sync task %s failed", getattr(job.run, "id", "?"))
            job.release()
            if time.monotonic() >= end and jobs:  # let the loop run (acks, heartbeats, async tasks)
                self._pending = True
                assert self._loop is not None
                self._loop.call_soon(self._run)
                return

    def close(self) -> None:
        self._jobs.clear()


def make_pool(kind: str, max_threads: int, on_done: Callable[[SyncJob], None]) -> Any:
    """The pool named by ``WorkerConfig.pool``."""
    if kind == "inline":
        return InlinePool(on_done)
    return ThreadPool(max_threads, on_done)

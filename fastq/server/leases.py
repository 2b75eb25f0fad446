"""Lease extension in a thread of its own, and the watch for a blocked event loop.

A worker holds a lease (Redis time + ``lease_duration``) on every task it claimed, and other
workers reclaim a task whose lease ran out. Extending leases from the event loop made them
depend on it: an ``async def`` handler calling ``time.sleep(12)`` (or any blocking call) stopped
the extensions, its lease expired and the task ran again elsewhere while it still ran here.
So each worker process runs one ``LeaseKeeper``: a daemon thread with its own synchronous
connection that, every tick (``min(heartbeat_interval, lease_duration / 4)``, earlier when a
lease would otherwise run out first, shorter back-off after a failure):

* extends (``SyncBroker.extend_leases``) the leases of the tasks the processor still holds
  (``processor.leased_ids()``:
  running, or outcome not yet written), one round trip for all queues (one call per queue on
  Redis Cluster), and records the result (``processor.leases_extended``), which is what the
  processor's deadline loop trusts before stopping a task as "lease lost";
* is bounded: a running task whose deadline + ``hard_timeout_grace`` has passed is no longer
  extended, and outcomes waiting to be written only while the loop has run recently or some
  running task is still within that bound. A hung loop does not hold leases forever.

A dead process loses its leases as fast as before (the thread dies with it), a SIGSTOPped one
too (the thread is stopped with it), and a partitioned one as well (the thread's connection
goes to the same address). A refused server-state write (Redis full) no longer touches lease
bookkeeping: the heartbeat (``heartbeat.py``) only writes ServerInfo/WorkerInfo.

Redis errors are reported on the event loop to the processor's ``RedisHealth`` as operation
``lease`` (one line per outage, hooks get ``redis_error``); anything else is logged once with
its traceback. The thread backs off and carries on; it never dies silently.

The watch: the loop re-arms a 0.25 s timer that stamps ``time.monotonic()``; the thread, which
wakes at least as often, notices a stamp more than 1 s old and logs one WARNING per blocked
episode naming the task that blocks the loop (the running task whose coroutine frame is on the
loop thread's stack) and the cure. When the loop runs again, hooks get
``loop_blocked(ctx or None, seconds)`` on the loop.

Limit: a sync handler (a thread) holding the GIL for seconds in C code stops this thread too.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
import threading
import time
from types import FrameType
from typing import Any, Optional

from redis.exceptions import RedisError

from fastq._rdb.worker import SyncBroker
from fastq.redis.clients import fail_fast_options
from fastq.server.config import WorkerConfig
from fastq.server.processor import Processor

log = logging.getLogger("fastq.worker")

WATCH_TICK = 0.25  # how often the event loop stamps that it runs
BLOCKED_AFTER = 1.0  # a stamp older than this: the loop is blocked
MIN_GAP = 0.05  # never two extension rounds closer than this
BACKOFF_MIN, BACKOFF_MAX = 0.1, 1.0  # retry delays after a failed round

def _client_options(cfg: WorkerConfig) -> dict[str, Any]:
    """Fail-fast options for the thread's own connection: a call must end well within a lease."""
    timeout = min(5.0, max(1.0, cfg.lease_duration / 2))
    return {**fail_fast_options(asyncio=False, socket_timeout=timeout), "durability": None}


class LeaseKeeper:
    """Extends the leases of ``processor``'s tasks from a thread; watches the event loop.

    ``start()`` from the worker's event loop; ``await stop()`` once the last outcomes are
    written. ``client``: a synchronous redis client to use (default: one of its own for
    ``cfg.redis_url``, closed by ``stop``; a given one is left open).
    """

    def __init__(self, processor: Processor, cfg: WorkerConfig, client: Any = None) -> None:
        self.processor = processor
        self.cfg = cfg
        self.lease = cfg.lease_duration
        self.tick = min(cfg.heartbeat_interval, cfg.lease_duration / 4)
        self.poll = min(WATCH_TICK, self.tick)
        self.grace = cfg.hard_timeout_grace
        self.alive_window = max(cfg.hard_timeout_grace, float(cfg.lease_duration))
        self.rtt = 0.0  # duration of the last extension round trip
        self.rounds = 0  # successful extension rounds that extended something
        self._client = client
        self._own_client = client is None
        self._broker: Optional[SyncBroker] = None  # on the thread's own client, once started
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._failing = False  # the last round failed (reported to the processor's RedisHealth)
        self._unexpected: Optional[str] = None  # repr of the unexpected error already logged
        # the watch
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_ident: Optional[int] = None
        self._timer: Optional[asyncio.TimerHandle] = None
        self._stamp = time.monotonic()  # written by the loop, read by the thread
        self._gap = (0.0, 0.0)  # (stamp before, seconds) of the loop's last gap over BLOCKED_AFTER
        self._flagged: Optional[float] = None  # stamp of the blocked episode being reported
        self._flagged_ctx: Any = None

    # ------------------------------------------------------------ life cycle

    def start(self) -> "LeaseKeeper":
        """Start the thread and the loop's timer (call on the worker's event loop)."""
        from fastq.redis.facade import sync_client

        self._loop = asyncio.get_running_loop()
        self._loop_ident = threading.get_ident()
        if self._client is None:
            self._client = sync_client(self.cfg.redis_url, **_client_options(self.cfg))
        self._broker = SyncBroker(self._client)
        self._stamp = time.monotonic()
        self._timer = self._loop.call_later(WATCH_TICK, self._tick)
        self._thread = threading.Thread(target=self._run, name="fastq-leases", daemon=True)
        self._thread.start()
        return self

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (it closes its connection) and the timer; wait up to ``timeout``."""
        self._stop.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        end = time.monotonic() + timeout
        while self._thread is not None and self._thread.is_alive() and time.monotonic() < end:
            await asyncio.sleep(0.01)
        if self._thread is not None and self._thread.is_alive():
            log.warning("lease thread did not stop in %.0fs (a Redis call hangs?); leaving it", timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        next_due = 0.0
        backoff = BACKOFF_MIN
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                try:
                    self._watch(now)
                except Exception as exc:  # noqa: BLE001 - the thread must never die
                    self._unexpected_error("watching the event loop", exc)
                if now >= next_due:
                    ok, earliest = self._round()
                    if ok:
                        backoff = BACKOFF_MIN
                        next_due = now + self.tick
                        if earliest is not None:  # a lease would run out before the next tick: extend sooner
                            next_due = max(min(next_due, earliest - max(1.0, 3 * self.rtt)), now + MIN_GAP)
                    else:
                        next_due = now + backoff * (0.5 + random.random())
                        backoff = min(backoff * 2, BACKOFF_MAX)
                self._stop.wait(max(0.0, min(self.poll, next_due - time.monotonic())))
        finally:
            if self._own_client and self._client is not None:
                try:
                    self._client.close()
                except Exception:  # noqa: BLE001 - closing must not raise out of the thread
                    log.debug("closing the lease connection failed", exc_info=True)

    def _round(self) -> tuple[bool, Optional[float]]:
        """Extend once; report failures and the end of a failure episode. (ok, soonest lease end)."""
        try:
            earliest = self._extend()
        except (RedisError, OSError) as exc:
            self._failing = True
            self._on_loop(self.processor.redis_error, "lease", exc)
            return False, None
        except Exception as exc:  # noqa: BLE001 - the thread must never die
            self._unexpected_error("extending leases", exc)
            return False, None
        self._unexpected = None
        if self._failing:
            self._failing = False
            self._on_loop(self.processor.health.ok, "lease")
        return True, earliest

    def _unexpected_error(self, what: str, exc: BaseException) -> None:
        """Log an unexpected error once with its traceback (again only once it changed)."""
        text = f"{type(exc).__name__}: {exc}"
        if self._unexpected != text:
            self._unexpected = text
            log.error("lease thread: unexpected error %s; carrying on with back-off", what, exc_info=exc)
        else:
            log.debug("lease thread: %s failed again: %s", what, text)

    def _on_loop(self, fn: Any, *args: Any) -> None:
        """Run ``fn`` on the worker's event loop (the processor's health is not thread-safe)."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the worker is gone
            pass

    def held(self) -> tuple[dict[str, list[str]], list[Any]]:
        """The task IDs to extend now, by queue (``processor.leased_ids()`` within the bounds),
        and the running entries among them."""
        leased = self.processor.leased_ids()  # atomic snapshots: the loop changes these dicts meanwhile
        running = self.processor.running_snapshot()
        now = time.time()
        grace = self.grace
        out: dict[str, list[str]] = {}
        waiting: dict[str, list[str]] = {}  # outcome known, not yet written
        runs = []
        for queue, ids in leased.items():
            for tid in ids:
                run = running.get(tid)
                if run is None:
                    waiting.setdefault(queue, []).append(tid)
                elif now < run.deadline + grace:
                    out.setdefault(queue, []).append(tid)
                    runs.append(run)
        if waiting and (runs or time.monotonic() - self._stamp < self.alive_window):
            for queue, ids in waiting.items():
                out.setdefault(queue, []).extend(ids)
        return out, runs

    def _extend(self) -> Optional[float]:
        """One round: extend every held lease. Returns the soonest local lease deadline after it."""
        held, runs = self.held()
        if not held:
            return None
        broker = self._broker
        assert broker is not None, "start() first"
        since = time.monotonic()
        extended, error = broker.extend_leases(held, self.lease)
        if extended:  # record what was extended before raising what failed
            self.processor.leases_extended(extended, since)
            limits = self.processor.limits
            if limits is not None:  # concurrency slots go with the leases (fastq.server.limits)
                limits.extend(self._client, extended, self.lease)
        if error is not None:
            raise error
        self.rtt = time.monotonic() - since
        self.rounds += 1
        log.debug("%d lease(s) extended in %.3fs", sum(map(len, held.values())), self.rtt)
        return min((r.lease_until for r in runs), default=None)

    # ------------------------------------------------------------ the watch

    def _tick(self) -> None:
        """On the loop, every WATCH_TICK: stamp that it runs."""
        now = time.monotonic()
        before = self._stamp
        if now - before > BLOCKED_AFTER:
            self._gap = (before, now - before)
        self._stamp = now
        if not self._stop.is_set() and self._loop is not None:
            self._timer = self._loop.call_later(WATCH_TICK, self._tick)

    def _watch(self, now: float) -> None:
        """In the thread: start or end a blocked episode."""
        stamp = self._stamp
        flagged = self._flagged
        if flagged is not None:
            if stamp != flagged:  # the loop runs again
                self._flagged = None
                since, seconds = self._gap
                if since != flagged:
                    seconds = stamp - flagged
                self._episode_over(self._flagged_ctx, seconds)
                self._flagged_ctx = None
            return
        if now - stamp > BLOCKED_AFTER and not self._stop.is_set():
            self._flagged = stamp
            self._flagged_ctx, where = self.blocker()
            self._warn(self._flagged_ctx, where, now - stamp)

    def blocker(self) -> tuple[Any, str]:
        """(the TaskContext of the task running on the loop thread or None, where it runs now).

        The running task is the one whose coroutine's frame is on the loop thread's stack: the
        frame of ``Processor._run_async`` for that task, below the handler's frames."""
        frame = sys._current_frames().get(self._loop_ident) if self._loop_ident is not None else None
        if frame is None:
            return None, "unknown"
        try:
            where = f"{_short_path(frame.f_code.co_filename)}:{frame.f_lineno} in {frame.f_code.co_name}()"
            stack = set()
            f: Optional[FrameType] = frame
            while f is not None:  # the frames stay alive (we hold the innermost): their ids are unique
                stack.add(id(f))
                f = f.f_back
            inline = getattr(self.processor.sync_pool, "current", None)  # a def handler run by --pool inline
            run = getattr(inline, "run", None)  # None once settled (the loop may run again meanwhile)
            if run is not None:
                return run.ctx, where
            for run in self.processor.running_snapshot().values():
                get_coro = getattr(run.future, "get_coro", None)  # an asyncio.Task for async handlers
                coro = get_coro() if get_coro is not None else None
                coro_frame = getattr(coro, "cr_frame", None)
                if coro_frame is not None and id(coro_frame) in stack:
                    return run.ctx, where
            return None, where
        finally:
            del frame

    def _warn(self, ctx: Any, where: str, seconds: float) -> None:
        cure = ("blocking calls (time.sleep, requests, sync database drivers, CPU-heavy work) must not run on "
                "the event loop (an async def handler, or a def handler under --pool inline): await their async "
                "versions (e.g. await asyncio.sleep()), or declare the handler with def so it runs in a thread "
                "(--pool threads, the default). Its lease is kept meanwhile; the other tasks of this process wait")
        if ctx is None:
            log.warning("event loop of worker %d blocked for %.1fs so far, at %s (not inside a task handler): %s",
                        os.getpid(), seconds, where, cure)
            return
        log.warning("event loop of worker %d blocked for %.1fs so far by task %s (%s), at %s: %s", os.getpid(), seconds,
                    ctx.task_id, ctx.type, where, cure,
                    extra={"task_id": ctx.task_id, "task_type": ctx.type, "queue": ctx.queue,
                           "retry": ctx.retry_count})

    def _episode_over(self, ctx: Any, seconds: float) -> None:
        log.info("event loop of worker %d ran again after %.1fs%s", os.getpid(), seconds,
                 f" (task {ctx.task_id})" if ctx is not None else "")
        if self.processor.hooks:
            self._on_loop(self.processor.hooks.call, "loop_blocked", ctx, seconds)


def _short_path(path: str) -> str:
    """``path`` relative to the working directory when it is inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if rel.startswith("..") else rel

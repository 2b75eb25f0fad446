"""Waiting for tasks to reach a final state, without polling.

The scripts that settle tasks (done, complete, archive) publish the IDs they settled on the
queue's ``fastq_done`` channel (``keys.settled_channel``), one message per call. A process that
waits for results has one ``SettledWatch`` per Redis server: a daemon thread with one pub/sub
connection (subscribed to the channels of the queues someone waits on) and one connection for
reads. Every waiter of the process shares them, sync (``wait``) and asyncio (``await_``) alike.

No notice is lost: a waiter's task is read only after its channel's subscription is confirmed,
so a task settled before that is found settled in its hash, and one settled after that is
announced. After a dropped connection every waiter's task is read again.
"""
from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import os
import queue as _queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import redis
from redis.exceptions import RedisError

from fastq import keys
from fastq._codec import decode_message
from fastq.errors import DecodeError

__all__ = ["Settled", "SettledWatch", "watch_for"]

log = logging.getLogger("fastq.results")

FINAL_STATES = ("completed", "archived")
_TICK = 0.05  # how long the thread blocks on the pub/sub socket before looking at new requests
IDLE_EXIT = 10.0  # the thread ends (closing its connections) after this long with nobody waiting


@dataclass(frozen=True)
class Settled:
    """A task's final state: ``"completed"`` (``result``: the bytes of its ``result`` field),
    ``"archived"`` (``error``: its last error text) or ``"done"`` (succeeded and deleted, as a task
    without retention is: no result kept)."""

    state: str
    result: Optional[bytes] = None
    error: str = ""


def read_settled(reply: list[Any]) -> Optional[Settled]:
    """``HMGET <task key> state result msg`` -> the final state, or None while it is not final."""
    state, result, raw = reply
    if state is None:
        return Settled("done")
    state = state.decode() if isinstance(state, bytes) else state
    if state == "completed":
        return Settled("completed", result)
    if state == "archived":
        error = ""
        if raw is not None:
            try:
                error = decode_message(raw).error_msg
            except DecodeError as exc:
                error = f"(message cannot be decoded: {exc})"
        return Settled("archived", None, error)
    return None


Deliver = Callable[[Settled], None]


class _Waiter:
    __slots__ = ("queue", "task_id", "deliver", "absent_pending")

    def __init__(self, queue: str, task_id: str, deliver: Deliver, absent_pending: bool = False) -> None:
        self.queue, self.task_id, self.deliver = queue, task_id, deliver
        # a workflow step not created yet: no hash means "not yet", not "done and deleted"
        self.absent_pending = absent_pending


class SettledWatch:
    """The process's listener for one Redis server (see the module docstring)."""

    def __init__(self, client: Any, owns_client: bool = False) -> None:
        self._client = client
        self._owns_client = owns_client
        self._closed = False  # a sync redis.Redis: its pool gives the reader and pub/sub connections
        self._requests: _queue.SimpleQueue[tuple[str, _Waiter]] = _queue.SimpleQueue()
        self._waiting: dict[str, dict[str, list[_Waiter]]] = {}  # channel -> task id -> waiters
        self._confirmed: set[str] = set()
        self._queues: dict[str, str] = {}  # channel -> queue name
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._pid = os.getpid()

    # ---------------------------------------------------------------- waiting

    def watch(self, queue: str, task_id: str, deliver: Deliver, absent_pending: bool = False) -> _Waiter:
        """Call ``deliver(Settled)`` once (from the watch's thread) when the task is final. With
        ``absent_pending`` a task with no hash is waited for (a workflow step created later)
        instead of being taken as done and deleted."""
        if self._closed:
            raise RuntimeError("this result watch is closed")
        waiter = _Waiter(queue, task_id, deliver, absent_pending)
        self._requests.put(("add", waiter))
        self._start()
        return waiter

    def forget(self, waiter: _Waiter) -> None:
        self._requests.put(("remove", waiter))

    def wait(self, queue: str, task_id: str, timeout: Optional[float], absent_pending: bool = False) -> Settled:
        """Block until the task is final; ``TimeoutError`` after ``timeout`` seconds."""
        box: list[Settled] = []
        done = threading.Event()

        def deliver(settled: Settled) -> None:
            box.append(settled)
            done.set()

        waiter = self.watch(queue, task_id, deliver, absent_pending)
        if not done.wait(timeout):
            self.forget(waiter)
            raise TimeoutError(f"task {task_id} in queue {queue!r} did not finish within {timeout}s")
        return box[0]

    async def await_(self, queue: str, task_id: str, timeout: Optional[float],
                     absent_pending: bool = False) -> Settled:
        """``wait`` for asyncio code: the event loop is never blocked."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Settled] = loop.create_future()

        def resolve(settled: Settled) -> None:
            if not future.done():
                future.set_result(settled)

        def deliver(settled: Settled) -> None:
            try:
                loop.call_soon_threadsafe(resolve, settled)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

        waiter = self.watch(queue, task_id, deliver, absent_pending)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            self.forget(waiter)
            raise TimeoutError(f"task {task_id} in queue {queue!r} did not finish within {timeout}s") from None
        except BaseException:
            self.forget(waiter)
            raise

    def wait_many(self, items: Sequence[tuple[str, str, bool]], timeout: Optional[float],
                  enough: Callable[[dict[int, Settled]], bool]) -> dict[int, Settled]:
        """Wait for several tasks at once (``(queue, task id, absent_pending)`` each): the final
        states delivered so far, by position, as soon as ``enough`` of them says so (or all are
        in); ``TimeoutError`` after ``timeout`` seconds. Every waiter is registered at once, so
        tasks that are final already cost one read each, not one wait each."""
        box: _queue.SimpleQueue[tuple[int, Settled]] = _queue.SimpleQueue()
        many = _Many(self, items, timeout, enough, lambda i, s: box.put((i, s)), time.monotonic)
        try:
            while (left := many.left()) != 0.0:
                try:
                    many.got.__setitem__(*box.get(timeout=left))
                except _queue.Empty:
                    pass
            return many.got
        finally:
            many.close()

    async def await_many(self, items: Sequence[tuple[str, str, bool]], timeout: Optional[float],
                         enough: Callable[[dict[int, Settled]], bool]) -> dict[int, Settled]:
        """``wait_many`` for asyncio code."""
        loop = asyncio.get_running_loop()
        box: asyncio.Queue[tuple[int, Settled]] = asyncio.Queue()

        def deliver(i: int, settled: Settled) -> None:
            try:
                loop.call_soon_threadsafe(box.put_nowait, (i, settled))
            except RuntimeError:  # the loop is closed
                pass

        many = _Many(self, items, timeout, enough, deliver, loop.time)
        try:
            while (left := many.left()) != 0.0:
                try:
                    many.got.__setitem__(*await asyncio.wait_for(box.get(), left))
                except asyncio.TimeoutError:
                    pass
            return many.got
        finally:
            many.close()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread and close the watch's connections (waiters left get no answer); the
        next ``watch_for`` makes a new watch."""
        self._closed = True
        with _watches_lock:
            for key, watch in list(_watches.items()):
                if watch is self:
                    del _watches[key]
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if self._owns_client:
            self._client.close()

    # ---------------------------------------------------------------- thread

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="fastq-results", daemon=True)
                self._thread.start()

    def _idle(self) -> bool:
        """Nobody waits and nothing was asked: end the thread (a new waiter starts another)."""
        with self._lock:
            if self._requests.empty() and not any(self._waiting.values()):
                self._thread = None
                self._waiting.clear()
                return True
            return False

    def _run(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=False)
            try:
                if self._listen(pubsub):
                    return
                backoff = 0.1
            except Exception as exc:  # noqa: BLE001 - the watch must outlive any failure of its connection
                if self._closed or self._idle():
                    return
                if isinstance(exc, (RedisError, OSError)):
                    log.warning("result watch: Redis connection failed (%s); reconnecting in %.1fs", exc, backoff)
                else:
                    log.warning("result watch: unexpected error; reconnecting in %.1fs", backoff, exc_info=exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self._confirmed.clear()  # notices may have been missed: every waiter is read again
                try:
                    pubsub.close()
                except (RedisError, OSError):
                    pass

    def _listen(self, pubsub: Any) -> bool:
        """Serve waiters until nobody has waited for ``IDLE_EXIT`` seconds (returns True)."""
        waiting = [channel for channel, ids in self._waiting.items() if ids]
        if waiting:
            pubsub.subscribe(*waiting)
        idle_since = time.monotonic()
        while not self._closed:
            self._take_requests(pubsub)
            if any(self._waiting.values()):
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > IDLE_EXIT and self._idle():
                return True
            if not pubsub.subscribed:
                time.sleep(_TICK)
                continue
            message = pubsub.get_message(timeout=_TICK)
            if message is None:
                continue
            channel = message["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else channel
            if message["type"] == "subscribe":
                self._confirmed.add(channel)
                self._check(channel, list(self._waiting.get(channel, {})))
            elif message["type"] == "message":
                # "<state>\n<id>\n<id>...": the IDs say whose hash to read; the hash, not the
                # message (anyone may publish), says whether the task is final
                _, _, ids = message["data"].partition(b"\n")
                by_id = self._waiting.get(channel, {})
                named = (x.decode("utf-8", "replace") for x in ids.split(b"\n"))
                self._check(channel, [i for i in named if i in by_id])
        return True  # closed

    def _take_requests(self, pubsub: Any) -> None:
        to_check: dict[str, list[str]] = {}
        try:
            self._take(pubsub, to_check)
        finally:
            for channel, ids in to_check.items():  # one read per channel for the waiters just added
                self._check(channel, [tid for tid in ids if tid in self._waiting.get(channel, {})])

    def _take(self, pubsub: Any, to_check: dict[str, list[str]]) -> None:
        while True:
            try:
                what, waiter = self._requests.get_nowait()
            except _queue.Empty:
                return
            channel = keys.settled_channel(waiter.queue)
            if what == "remove":
                ids = self._waiting.get(channel, {})
                group = ids.get(waiter.task_id, [])
                if waiter in group:
                    group.remove(waiter)
                if not group:
                    ids.pop(waiter.task_id, None)
                continue
            new_channel = channel not in self._waiting
            self._queues[channel] = waiter.queue
            self._waiting.setdefault(channel, {}).setdefault(waiter.task_id, []).append(waiter)
            if new_channel:
                pubsub.subscribe(channel)
            elif channel in self._confirmed:
                to_check.setdefault(channel, []).append(waiter.task_id)

    def _check(self, channel: str, task_ids: list[str]) -> None:
        """Read the tasks' hashes; deliver those that are final."""
        if not task_ids:
            return
        queue = self._queues[channel]
        pipe = self._client.pipeline(transaction=False)
        for tid in task_ids:
            pipe.hmget(keys.task_key(queue, tid), "state", "result", "msg")
        for tid, reply in zip(task_ids, pipe.execute(), strict=True):
            settled = read_settled(reply)
            if settled is not None:
                self._deliver(channel, tid, settled, absent=reply[0] is None)

    def _deliver(self, channel: str, task_id: str, settled: Settled, absent: bool = False) -> None:
        waiting = self._waiting.get(channel, {})
        group = waiting.pop(task_id, [])
        if absent:  # no hash: final only for those who wait for a task that exists already
            later = [w for w in group if w.absent_pending]
            if later:
                waiting[task_id] = later
                group = [w for w in group if not w.absent_pending]
        for waiter in group:
            try:
                waiter.deliver(settled)
            except Exception:  # a waiter's callback must not stop the watch
                log.exception("result watch: delivering task %s failed", task_id)


class _Many:
    """The bookkeeping of ``wait_many``/``await_many``: the waiters, what arrived, the time left."""

    def __init__(self, watch: SettledWatch, items: Sequence[tuple[str, str, bool]], timeout: Optional[float],
                 enough: Callable[[dict[int, Settled]], bool], deliver: Callable[[int, Settled], None],
                 clock: Callable[[], float]) -> None:
        self.watch, self.items, self.timeout, self.enough, self.clock = watch, items, timeout, enough, clock
        self.got: dict[int, Settled] = {}
        self.end = None if timeout is None else clock() + timeout
        self.waiters = [watch.watch(q, tid, functools.partial(deliver, i), later)
                        for i, (q, tid, later) in enumerate(items)]

    def left(self) -> Optional[float]:
        """0.0 when done waiting, else the seconds left (None: no limit); ``TimeoutError`` past the end."""
        got = self.got
        if len(got) == len(self.items) or (got and self.enough(got)):
            return 0.0
        if self.end is None:
            return None
        left = self.end - self.clock()
        if left <= 0:
            raise TimeoutError(f"{len(self.items) - len(got)} of {len(self.items)} tasks did not finish within "
                               f"{self.timeout}s")
        return left

    def close(self) -> None:
        for i, waiter in enumerate(self.waiters):
            if i not in self.got:
                self.watch.forget(waiter)


_watches: dict[tuple[Any, ...], SettledWatch] = {}
_watches_lock = threading.Lock()


def watch_for(client: Any) -> SettledWatch:
    """The process's ``SettledWatch`` for the Redis server ``client`` (a sync redis.Redis)
    talks to; one per server and process (a forked child gets its own)."""
    plain = (str, int, float, bool, bytes, type(None))
    pool = getattr(client, "connection_pool", None)
    if pool is None:  # a Cluster client: one watch per client object
        key: tuple[Any, ...] = (os.getpid(), id(client))
    else:
        key = (os.getpid(), type(pool).__name__,
               tuple(sorted((k, v) for k, v in pool.connection_kwargs.items() if isinstance(v, plain))))
    with _watches_lock:
        watch = _watches.get(key)
        if watch is None:
            private = _private(client)
            watch = _watches[key] = SettledWatch(private, owns_client=private is not client)
        return watch


def close_all() -> None:
    """Close every watch of this process (at exit; tests)."""
    with _watches_lock:
        watches = list(_watches.values())
        _watches.clear()
    for watch in watches:
        watch.close()


atexit.register(close_all)


def _private(client: Any) -> Any:
    """A client of the watch's own, on a pool of its own with ``client``'s settings, so that
    closing ``client`` (an App's, a user's) does not cut the watch's connections."""
    pool: Any = getattr(client, "connection_pool", None)
    kind: Any = type(pool)
    if kind in (redis.ConnectionPool, redis.BlockingConnectionPool):
        return redis.Redis(connection_pool=kind(connection_class=pool.connection_class, **pool.connection_kwargs))
    return client  # Sentinel and Cluster clients keep their own discovery

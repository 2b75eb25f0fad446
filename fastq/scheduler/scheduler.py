"""Periodic tasks: ``Scheduler`` enqueues registered tasks on cron schedules, as Go Asynq's does.

What it writes is Go's layout (``asynq:schedulers``, ``asynq:schedulers:{id}``, history zsets), so ``asynq cron
ls``, ``asynq cron history`` and asynqmon list fastq's entries:

* heartbeat (at start, then every ``heartbeat_interval`` s): the list
  ``asynq:schedulers:{<host>:<pid>:<uuid>}`` rebuilt with one ``SchedulerEntry``
  per entry (LPUSH, so newest-first; TTL 2 x interval), and its name in the
  zset ``asynq:schedulers`` with score now + TTL;
* each enqueue: a ``SchedulerEnqueueEvent`` in ``asynq:scheduler_history:<entryID>``
  (score = Unix s, newest 1000 kept);
* shutdown: the zset member, the list and every entry's history are deleted.

**Several instances, one enqueue per tick.** Go enqueues once per running
scheduler (asynq #371, #1013). fastq guards each tick: before enqueuing, an
instance runs ``SET asynq:scheduler_tick:<guard>:<tick> <schedulerID> NX EX 600``
where ``guard`` is a SHA-256 of what the entry does (its schedule in canonical
form with its zone, the task type, payload and headers, and the sorted option
strings) and ``tick`` the Unix second the firing was due. Only the instance that
sets the key enqueues (and runs the hooks and records history); the others skip
that tick. The guard is per tick, so a finished, retained or archived task never
blocks later runs (the trap of a fixed ``task_id``, asynq #1055). It assumes the
instances' clocks agree within the guard's 10 minutes; an instance that dies
between the SET and the enqueue loses that one tick.

Life cycle (``fastq.scheduler._service``): ``await serve(stop_event)`` inside a running event
loop; ``run()`` blocks until SIGTERM/SIGINT; ``start()``/``stop()`` run it in a background
thread. ``fastq.scheduler.app.run_scheduler`` is the entry point for a process of its own
(``fastq-scheduler``, or a child forked by ``fastq-supervisor``).
"""
from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import math
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Optional

from redis.exceptions import RedisError

from fastq import keys
from fastq._gofmt import option_strings
from fastq._proto import SchedulerEnqueueEvent, SchedulerEntry, Timestamp, encode
from fastq._rdb import scheduler as rdb
from fastq._validate import positive_seconds
from fastq.client import AsyncClient
from fastq.errors import CronSpecError, SchedulerEntryNotFoundError
from fastq.options import plan_enqueue
from fastq.redis.facade import async_client, check_bytes_client, default_url, sync_client
from fastq.scheduler._service import DEFAULT_HEARTBEAT_INTERVAL, _Service
from fastq.scheduler.cron import CronSchedule, load_zone, parse_cron
from fastq.server.loops import supervise
from fastq.task import Task, TaskInfo

__all__ = ["Scheduler", "GO_ZERO_TIME", "MAX_HISTORY", "TICK_GUARD_TTL"]

log = logging.getLogger("fastq.scheduler")

GO_ZERO_TIME = Timestamp(-62135596800, 0)  # Go's time.Time{} (year 1): "never run"
MAX_HISTORY = 1000  # events kept per entry, as Asynq
TICK_GUARD_TTL = 600  # seconds a tick guard lives: the clock skew tolerated between instances
STOP_GRACE = 10.0  # seconds shutdown waits for firings in flight


PreEnqueue = Callable[[Task, dict[str, Any]], Any]
PostEnqueue = Callable[[Optional[TaskInfo], Optional[BaseException]], Any]


def _hostname() -> str:
    import socket

    try:
        return socket.gethostname() or "unknown-host"
    except OSError:  # pragma: no cover
        return "unknown-host"


@dataclass
class _Entry:
    id: str
    schedule: CronSchedule
    task: Task
    options: dict[str, Any]
    option_strings: list[str]
    order: int
    next: Optional[float] = None
    prev: Optional[float] = None

    def guard(self, location: Any) -> str:
        """The stable identity of what this entry does, shared by every instance that registers it."""
        h = hashlib.sha256()
        for part in (self.schedule.identity(location), self.task.type):
            h.update(part.encode() + b"\0")
        h.update(self.task.payload + b"\0")
        for k in sorted(self.task.headers):
            h.update(f"{k}={self.task.headers[k]}".encode() + b"\0")
        for s in sorted(self.option_strings):
            h.update(s.encode() + b"\0")
        return h.hexdigest()

    def proto(self) -> SchedulerEntry:
        return SchedulerEntry(
            id=self.id, spec=self.schedule.spec, task_type=self.task.type, task_payload=self.task.payload,
            enqueue_options=list(self.option_strings),
            next_enqueue_time=Timestamp.from_unix(self.next) if self.next is not None else GO_ZERO_TIME,
            prev_enqueue_time=Timestamp.from_unix(self.prev) if self.prev is not None else GO_ZERO_TIME,
        )


async def _call_hook(hook: Optional[Callable[..., Any]], *args: Any) -> None:
    if hook is None:
        return
    try:
        result = hook(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:  # noqa: BLE001 - a hook's bug must not stop the scheduler
        log.exception("scheduler hook %r failed", hook)


class Scheduler(_Service):
    """Enqueue tasks on cron schedules; Go Asynq's ``Scheduler``.

    ``redis`` is a URL (default ``$FASTQ_REDIS_URL`` or ``redis://127.0.0.1:6379/0``)
    or a ``redis.asyncio.Redis`` (``decode_responses=False``); a URL's
    connection is made when ``serve()`` starts, so a Scheduler built at import
    time is safe to use in a forked child. ``location`` is the IANA zone of
    five-field specs without ``CRON_TZ=``. ``pre_enqueue(task, options)`` and
    ``post_enqueue(info, error)`` run around each enqueue (plain or async
    functions; keep them quick).
    """

    def __init__(self, redis: Any = None, *, location: Any = "UTC",
                 heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
                 pre_enqueue: Optional[PreEnqueue] = None, post_enqueue: Optional[PostEnqueue] = None) -> None:
        self._init_service()
        self._redis_arg = self._check_redis(redis)
        self.location = load_zone(location)
        self.heartbeat_interval = positive_seconds("heartbeat_interval", heartbeat_interval)
        for name, hook in (("pre_enqueue", pre_enqueue), ("post_enqueue", post_enqueue)):
            if hook is not None and not callable(hook):
                raise TypeError(f"{name} must be callable, not {type(hook).__name__}")
        self.pre_enqueue = pre_enqueue
        self.post_enqueue = post_enqueue
        self.id: Optional[str] = None  # host:pid:uuid, made when serve() starts (after any fork)
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._order = 0
        self._dirty = False  # entries changed: write a heartbeat now
        self._forgotten: list[str] = []  # unregistered entry IDs whose history is to be deleted
        self._wake: Optional[asyncio.Event] = None
        self._redis: Any = None

    @staticmethod
    def _check_redis(redis: Any) -> Any:
        if redis is None:
            return None
        if isinstance(redis, str):
            sync_client(redis).close()  # parses the URL now (ValueError naming it); connects only in serve()
            return redis
        import redis as redis_lib
        import redis.asyncio

        if isinstance(redis, redis_lib.asyncio.Redis):
            return check_bytes_client(redis)
        if isinstance(redis, redis_lib.Redis):
            raise TypeError("Scheduler needs a Redis URL or a redis.asyncio.Redis client, not a sync redis.Redis")
        raise TypeError(f"Scheduler needs a Redis URL or a redis.asyncio.Redis client, not {type(redis).__name__}")

    def configure(self, *, redis: Any = None, location: Any = None, heartbeat_interval: Any = None) -> None:
        """Override settings before ``serve()`` (``None`` keeps the current one); used by ``run_scheduler``."""
        if self._state != "new":
            raise RuntimeError("configure() must be called before the scheduler starts")
        if heartbeat_interval is not None:
            heartbeat_interval = positive_seconds("heartbeat_interval", heartbeat_interval)
        new_location = load_zone(location) if location is not None else self.location
        if redis is not None:
            self._redis_arg = self._check_redis(redis)
        self.location = new_location
        if heartbeat_interval is not None:
            self.heartbeat_interval = heartbeat_interval

    # ------------------------------------------------------------ entries

    def register(self, cronspec: str, task: Task, **options: Any) -> str:
        """Add an entry; return its ID (a UUID v4). Nothing is written to Redis here.

        Raises ``CronSpecError`` for a bad spec, ``TypeError`` for an unknown
        option or a non-Task, ``InvalidOptionError`` for a bad option value.
        """
        schedule = parse_cron(cronspec)
        if not isinstance(task, Task):
            raise TypeError(f"register() needs a fastq.Task, not {type(task).__name__}")
        plan_enqueue(task, options)  # validates the options now rather than at the first tick
        if options.get("task_id") is not None:
            log.warning("periodic task %r has a fixed task_id: a run is skipped while an earlier copy with that ID "
                        "exists in any state (asynq #1055)", task.type)
        with self._lock:
            self._order += 1
            entry = _Entry(str(uuid.uuid4()), schedule, task, dict(options), option_strings(options), self._order)
            if self._state == "running":
                entry.next = schedule.next_after(time.time(), self.location)
            self._entries[entry.id] = entry
        self._changed()
        return entry.id

    def unregister(self, entry_id: str) -> None:
        """Remove an entry; ``SchedulerEntryNotFoundError`` if there is none with this ID."""
        with self._lock:
            if self._entries.pop(entry_id, None) is None:
                raise SchedulerEntryNotFoundError(entry_id)
            self._forgotten.append(entry_id)
        self._changed()

    def entries(self) -> list[SchedulerEntry]:
        """The registered entries as Go's ``SchedulerEntry`` messages (what the heartbeat writes), by next run."""
        with self._lock:
            ordered = sorted(self._entries.values(),
                             key=lambda e: (e.next if e.next is not None else math.inf, e.order))
            return [e.proto() for e in ordered]

    def _changed(self) -> None:
        self._dirty = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # pragma: no cover - loop closed meanwhile
                pass

    # ------------------------------------------------------------ serving

    async def serve(self, stop: Optional[asyncio.Event] = None) -> None:
        """Fire entries and heartbeat until ``stop`` is set; then clear what this scheduler wrote."""
        stop = self._begin(stop)
        self._wake = asyncio.Event()
        self.id = f"{_hostname()}:{os.getpid()}:{uuid.uuid4()}"
        self._redis = self._redis_arg if not isinstance(self._redis_arg, (str, type(None))) \
            else async_client(self._redis_arg or default_url())
        client = AsyncClient(self._redis)
        firing: set[asyncio.Task[None]] = set()
        log.info("scheduler %s starting: %d entries, time zone %s", self.id, len(self._entries), self.location.key)
        try:
            with self._lock:
                now = time.time()
                for entry in self._entries.values():
                    entry.next = self._next(entry, now)
            # Redis errors are handled inside; anything else restarts the loop with back-off (as a
            # worker's loops), and after MAX_FAILURES in a row it is raised: the process ends non-zero.
            failed: list[BaseException] = []
            await supervise("scheduler", lambda: self._fire_and_beat(stop, client, firing),
                            lambda _name, exc: failed.append(exc), stop=stop, logger=log)
            if failed:
                raise failed[0]
        finally:
            self._state = "stopped"
            if firing:
                await asyncio.wait(firing, timeout=STOP_GRACE)
            await self._shutdown()
            log.info("scheduler %s stopped", self.id)

    async def _fire_and_beat(self, stop: asyncio.Event, client: AsyncClient, firing: set[asyncio.Task[None]]) -> None:
        """Fire due entries and write the heartbeat until ``stop`` is set."""
        next_beat = 0.0  # the first heartbeat is written at once (Go: after one interval)
        wake = self._wake
        assert wake is not None  # made by serve()
        while not stop.is_set():
            wake.clear()
            now = time.time()
            for entry, tick in self._take_due(now):
                task = asyncio.create_task(self._fire(client, entry, tick))
                firing.add(task)
                task.add_done_callback(firing.discard)
            if self._dirty or now >= next_beat:
                self._dirty = False
                await self._beat()
                next_beat = time.time() + self.heartbeat_interval
                self._ready.set()  # start() returns once the entries are visible in Redis
            await self._clear_forgotten()
            await self._sleep(stop, min(self._next_due(), next_beat) - time.time())

    def _next(self, entry: _Entry, now: float) -> Optional[float]:
        try:
            return entry.schedule.next_after(now, self.location)
        except CronSpecError as exc:
            log.error("entry %s will not run again: %s", entry.id, exc)
            return None

    def _take_due(self, now: float) -> list[tuple[_Entry, float]]:
        """Entries due at ``now``; each moves on to its next time after ``now`` (missed ticks are not replayed)."""
        due = []
        with self._lock:
            for entry in self._entries.values():
                if entry.next is not None and entry.next <= now:
                    due.append((entry, entry.next))
                    entry.prev = entry.next
                    entry.next = self._next(entry, now)
        return due

    def _next_due(self) -> float:
        with self._lock:
            times = [e.next for e in self._entries.values() if e.next is not None]
        return min(times, default=math.inf)

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        wake = self._wake
        assert wake is not None  # made by serve()
        if seconds <= 0 or stop.is_set() or wake.is_set():
            return
        waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())}
        try:
            await asyncio.wait(waiters, timeout=min(seconds, 3600.0), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _fire(self, client: AsyncClient, entry: _Entry, tick: float) -> None:
        """One firing: win the tick guard, then pre hook -> enqueue -> post hook -> history event."""
        guard_key = keys.scheduler_tick_key(entry.guard(self.location), int(tick))
        try:
            won = await rdb.claim_tick(self._redis, guard_key, self._sid, TICK_GUARD_TTL)
        except (RedisError, OSError) as exc:
            log.warning("entry %s (%s): cannot enqueue the tick at %d: %s", entry.id, entry.task.type, tick, exc)
            return
        if not won:
            log.debug("entry %s: tick %d was enqueued by another scheduler", entry.id, tick)
            return
        await _call_hook(self.pre_enqueue, entry.task, dict(entry.options))
        info: Optional[TaskInfo] = None
        error: Optional[BaseException] = None
        try:
            info = await client.enqueue(entry.task, **entry.options)
        except Exception as exc:  # noqa: BLE001 - reported to post_enqueue and the log
            error = exc
        await _call_hook(self.post_enqueue, info, error)
        if error is not None:
            log.warning("entry %s (%s): enqueue failed: %s", entry.id, entry.task.type, error)
            return
        assert info is not None  # enqueue returned
        log.debug("entry %s enqueued task %s", entry.id, info.id)
        event = SchedulerEnqueueEvent(task_id=info.id, enqueue_time=Timestamp.now())
        try:
            await rdb.record_enqueue(self._redis, entry.id, event.enqueue_time.seconds, encode(event), MAX_HISTORY)
        except (RedisError, OSError) as exc:
            log.warning("entry %s: could not record the enqueue of task %s: %s", entry.id, info.id, exc)

    @property
    def _sid(self) -> str:
        """The scheduler's ID while it serves."""
        assert self.id is not None  # made by serve()
        return self.id

    @property
    def ttl(self) -> int:
        """Seconds the entries list lives: 2 x heartbeat interval, rounded up to whole seconds."""
        return max(1, math.ceil(2 * self.heartbeat_interval))

    async def _beat(self) -> None:
        try:
            await rdb.write_entries(self._redis, self._sid, self.ttl, [encode(e) for e in self.entries()])
        except (RedisError, OSError) as exc:
            log.warning("scheduler heartbeat failed: %s", exc)

    async def _clear_forgotten(self) -> None:
        with self._lock:
            gone, self._forgotten = self._forgotten, []
        if gone:
            try:
                await rdb.delete_histories(self._redis, gone)
            except (RedisError, OSError) as exc:
                log.warning("could not delete the history of unregistered entries: %s", exc)

    async def _shutdown(self) -> None:
        """Go's Shutdown: remove this scheduler from ``asynq:schedulers`` and delete its keys."""
        with self._lock:
            ids = list(self._entries) + self._forgotten
            self._forgotten = []
        try:
            await rdb.clear_scheduler(self._redis, self._sid, ids)
        except (RedisError, OSError) as exc:
            log.error("could not clear the scheduler's entries: %s", exc)
        finally:
            if self._redis is not self._redis_arg:
                await self._redis.aclose()

"""Opt-in keyspace-notification wake-up (``WorkerConfig.keyspace_wakeup``, ``--keyspace-wakeup``).

fastq's own enqueue scripts publish ``asynq:{q}:fastq_notify`` when a pending list stops being
empty, so an idle worker starts a fastq-enqueued task within a millisecond. Go's client (or any
other) does not; its tasks are found by the idle back-off poll, up to ``poll_interval`` later.

With the flag, each worker also subscribes to Redis's keyspace channel of every served pending
list (``keys.keyspace_channel``: ``__keyspace@<db>__:asynq:{q}:pending``) and wakes its fetch loop
on a push event, whoever pushed. Redis publishes these only when ``notify-keyspace-events``
holds ``K`` and ``l`` (or ``A``): at start the worker reads the setting and adds what is missing
with ``CONFIG SET``, keeping every flag already set. Where that cannot be done (ACL without
``CONFIG``, a managed Redis that refuses it) one WARNING says what to set by hand and that pickup
falls back to polling until it is; on Redis Cluster (events are per node, and a worker listens to
one node) one WARNING says the wake-up is off.

The subscription is on a connection of its own (a refused keyspace channel never touches the
``asynq:cancel`` subscription) and is held only while the worker is idle: a subscribed worker gets
a message for every list command on a served pending list, the pops of every busy worker included.
``bench/pickup.py`` measured it on a drain fed by single Go-layout enqueues: subscribed all the
time, worker CPU per task went from ~185 µs (no flag) to ~310 µs; subscribed only while idle, ~230
µs (medians of noisy runs; a worker fed continuously never subscribes). Each (re)subscription is confirmed before the
processor is woken, so a push made while unsubscribed is dequeued then (docs/asynq.md, "Go clients
and idle workers").
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Iterable, Optional

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from fastq import keys
from fastq.redis.cluster import is_cluster
from fastq.server.maintenance import sleep_until_set
from fastq.server.processor import Processor

log = logging.getLogger("fastq.worker")

SETTING = "notify-keyspace-events"
# The list commands that add to a list (LMOVE / RPOPLPUSH report the destination as lpush/rpush).
PUSH_EVENTS = frozenset({b"lpush", b"rpush", b"linsert"})
# Subscribe once the idle back-off sleep reaches this (the queues were empty for ~7 ms): a worker
# polling faster than that finds a task as soon anyway, and one fed continuously never subscribes.
SUBSCRIBE_AFTER = 0.008


def merged_flags(current: str) -> Optional[str]:
    """``current`` with ``K`` and ``l`` added, or ``None`` when it already delivers list keyspace
    events (``K`` and ``l`` or ``A``). Flags already set are kept, in their order."""
    missing = ""
    if "K" not in current:
        missing += "K"
    if "l" not in current and "A" not in current:
        missing += "l"
    return current + missing if missing else None


def _db_of(redis: Any) -> int:
    pool = getattr(redis, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None) or {}
    return int(kwargs.get("db") or 0)


class KeyspaceWakeup:
    """Sets up the keyspace events and listens to them for one worker (``listen`` is its loop).

    Subscribed only while the worker is idle: from when its back-off sleep reaches
    ``SUBSCRIBE_AFTER`` (its queues were found empty for a few milliseconds) until a dequeue finds
    tasks again (``Processor.on_idle``). A busy worker therefore gets no keyspace messages; each
    confirmed (re)subscription wakes the processor, so a push made while unsubscribed is not missed.
    """

    def __init__(self, redis: Any, processor: Processor, queues: Iterable[str], poll_interval: float) -> None:
        self.redis = redis
        self.processor = processor
        self.channels = [keys.keyspace_channel(_db_of(redis), q) for q in queues]
        self.poll_interval = poll_interval
        self.warned = False  # one WARNING per worker, whatever went wrong
        self.events = 0  # keyspace messages received (tests, bench)
        self.subscriptions = 0  # confirmed subscriptions (tests, bench)
        self._want = False  # the processor is idle: be subscribed
        self._reconfigure = False  # set notify-keyspace-events again (Redis restarted or failed over)
        self._changed = asyncio.Event()

    def idle(self, sleep: float) -> None:
        """``Processor.on_idle``: ``sleep`` is the coming idle wait, 0.0 when there is work again."""
        want = sleep >= SUBSCRIBE_AFTER
        if want != self._want:
            self._want = want
            self._changed.set()

    def redis_changed(self) -> None:
        """``Heartbeater.on_restart``: Redis restarted or failed over, and a ``CONFIG SET`` does not
        survive either (unless it is in redis.conf): set it again."""
        self._reconfigure = True
        self._changed.set()

    def _fallback(self, why: str) -> None:
        if self.warned:
            log.debug("keyspace wake-up: %s", why)
            return
        self.warned = True
        log.warning("keyspace wake-up: %s. Tasks pushed by clients other than fastq (Go's) are picked up by "
                    "polling, within poll_interval (%gs), unless %s holds K and l and this worker may subscribe "
                    "to %s: set it by hand (CONFIG SET %s with K and l added to the flags already set, e.g. "
                    "'Kl' when it is empty, or in redis.conf) and allow the channels in the worker's ACL.",
                    why, self.poll_interval, SETTING, ", ".join(self.channels), SETTING)

    async def configure(self, again: bool = False) -> bool:
        """Make Redis publish list keyspace events; ``False`` when this worker should not subscribe.
        ``again``: after a lost connection (a restarted Redis forgot a CONFIG SET); connection
        errors are then raised, for the caller's back-off."""
        if is_cluster(self.redis):
            log.warning("keyspace wake-up is off on Redis Cluster (keyspace events are published per node): "
                        "tasks pushed by clients other than fastq are picked up by polling, within "
                        "poll_interval (%gs)", self.poll_interval)
            return False
        try:
            value = (await self.redis.config_get(SETTING)).get(SETTING)
            if isinstance(value, bytes):
                value = value.decode()
            if value is None:
                raise ResponseError(f"CONFIG GET {SETTING} returned nothing")
            wanted = merged_flags(value)
            if wanted is not None:
                await self.redis.config_set(SETTING, wanted)
                log.info("keyspace wake-up: %s was %r, set to %r", SETTING, value, wanted)
        except (RedisError, OSError) as exc:
            if again and isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError)):
                raise
            # Denied or failed: the setting may still have been made by hand, so subscribe anyway.
            self._fallback(f"cannot read or set {SETTING} ({exc})")
        return True

    async def listen(self, stop: asyncio.Event) -> None:
        """Wake the processor on each push to a served pending list while it is idle, until ``stop``.
        Re-subscribes after connection errors; returns (polling only) when the channels are refused."""
        processor = self.processor
        processor.on_idle = self.idle  # from now: the processor may be idle already when CONFIG answers
        try:
            if self.channels and await self.configure():
                await self._listen(stop)
        finally:
            processor.on_idle = None

    async def _listen(self, stop: asyncio.Event) -> None:
        delay = 0.1
        processor = self.processor
        while not stop.is_set():
            pubsub = self.redis.pubsub()
            asked = False  # SUBSCRIBE sent (and no UNSUBSCRIBE since)
            try:
                while not stop.is_set():
                    self._changed.clear()
                    if self._reconfigure:
                        await self.configure(again=True)
                        self._reconfigure = False
                    if self._want != asked:
                        if self._want:
                            await pubsub.subscribe(*self.channels)
                        else:
                            await pubsub.unsubscribe(*self.channels)
                        asked = not asked
                    if not pubsub.subscribed:  # nothing to read until the processor goes idle
                        await _wait_either(self._changed, stop)
                        continue
                    message = await pubsub.get_message(timeout=0.05)
                    if not message:
                        continue
                    kind = message.get("type")
                    if kind == "message":
                        self.events += 1
                        if message["data"] in PUSH_EVENTS:
                            processor.wake()
                    elif kind == "subscribe":  # confirmed: whatever was pushed before is dequeued now
                        self.subscriptions += 1
                        processor.wake()
                        delay = 0.1
            except NoPermissionError as exc:
                self._fallback(f"subscribing is refused ({exc})")
                return
            except (RedisError, OSError) as exc:
                self._reconfigure = True  # Redis may have restarted without the setting
                processor.redis_error("keyspace", exc)
                await sleep_until_set(stop, delay)
                delay = min(delay * 2, 5.0)
            finally:
                try:
                    await pubsub.aclose()
                except (RedisError, OSError):
                    pass


async def _wait_either(a: asyncio.Event, b: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
